"""What only the SQLite backend does: one file on disk, WAL, its own schema history."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from bot.errors import StoreError
from bot.store.sqlite import SCHEMA_VERSION, SqliteStore
from tests.store_helpers import begin_turn


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "memory.db"


@pytest.fixture
async def store() -> AsyncIterator[SqliteStore]:
    memory = await SqliteStore.open(":memory:")
    try:
        yield memory
    finally:
        await memory.close()


@pytest.fixture
async def file_store(path: Path) -> AsyncIterator[SqliteStore]:
    memory = await SqliteStore.open(str(path))
    try:
        yield memory
    finally:
        await memory.close()


def _raw(path: Path) -> sqlite3.Connection:
    """A plain second connection, as another process (the CLI) would have."""
    return sqlite3.connect(path, isolation_level=None)


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    conn = _raw(path)
    try:
        yield conn
    finally:
        conn.close()


async def _answered(store: SqliteStore, key: str, question: str, answer: str) -> int:
    turn = await begin_turn(store, key, question)
    assert await store.conversations.finish_turn(turn, answer)
    return turn


# Migration 1 exactly as released, frozen here: the upgrade must work on files it wrote.
_V1_SCHEMA = (
    """
    CREATE TABLE sessions (
        key          TEXT    NOT NULL PRIMARY KEY CHECK (typeof(key) = 'text'),
        created_at   TEXT    NOT NULL,
        updated_at   TEXT    NOT NULL,
        summary      TEXT    NOT NULL DEFAULT '' CHECK (typeof(summary) = 'text'),
        summary_upto INTEGER NOT NULL DEFAULT 0 CHECK (summary_upto >= 0)
    )
    """,
    """
    CREATE TABLE turns (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        session_key TEXT    NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
        question    TEXT    NOT NULL CHECK (typeof(question) = 'text'),
        answer      TEXT    CHECK (answer IS NULL OR typeof(answer) = 'text'),
        status      TEXT    NOT NULL CHECK (status IN ('pending', 'answered')),
        created_at  TEXT    NOT NULL,
        answered_at TEXT,
        CHECK ((status = 'answered') = (answer IS NOT NULL))
    )
    """,
    "CREATE INDEX turns_by_session ON turns (session_key, id)",
)


async def test_a_version_1_file_is_migrated_and_keeps_its_data(path: Path) -> None:
    with raw(path) as conn:
        for statement in _V1_SCHEMA:
            conn.execute(statement)
        stamp = "2024-05-01T12:00:00.000000+00:00"
        conn.execute("INSERT INTO sessions VALUES ('k', ?, ?, '', 0)", (stamp, stamp))
        conn.execute(
            "INSERT INTO turns (session_key, question, answer, status, created_at, answered_at) "
            "VALUES ('k', 'old question', 'old answer', 'answered', ?, ?)",
            (stamp, stamp),
        )
        conn.execute("PRAGMA user_version = 1")

    memory = await SqliteStore.open(path)
    try:
        state = await memory.conversations.load("k")
        assert [(t.question, t.answer) for t in state.turns] == [("old question", "old answer")]
        assert await memory.conversations.last_sources("k") == ()
        got = await memory.inbox.claim("slack", "E1", "k", "new question", "{}")
        assert got is not None
        assert got.conversation_started == datetime.fromisoformat(stamp)
        assert got.turn_id > state.turns[0].id
    finally:
        await memory.close()

    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (7,)
        assert conn.execute("SELECT sources FROM turns ORDER BY id").fetchall() == [
            ("[]",),
            ("[]",),
        ]


async def test_persists_across_reopen_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "memory.db"
    first = await SqliteStore.open(str(path))
    try:
        turn = await _answered(first, "k", "remember me", "I will")
        await first.conversations.save_summary("k", "a summary", turn)
        await begin_turn(first, "k", "pending at shutdown")
    finally:
        await first.close()

    second = await SqliteStore.open(path)
    try:
        transcript = await second.conversations.transcript("k")
        assert transcript is not None
        assert transcript.summary == "a summary"
        assert [(t.question, t.status) for t in transcript.turns] == [
            ("remember me", "answered"),
            ("pending at shutdown", "pending"),
        ]
    finally:
        await second.close()

    raw = _raw(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        raw.close()


async def test_another_connection_reads_while_the_store_writes(
    file_store: SqliteStore, tmp_path: Path
) -> None:
    await _answered(file_store, "k", "before", "x")
    reader = _raw(tmp_path / "memory.db")
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM turns").fetchone() == (1,)

        # With WAL the open read transaction does not block the writer, and the reader
        # keeps its snapshot until it ends its transaction.
        await asyncio.wait_for(_answered(file_store, "k", "during", "y"), timeout=2)
        assert reader.execute("SELECT COUNT(*) FROM turns").fetchone() == (1,)
        reader.execute("COMMIT")
        assert reader.execute("SELECT COUNT(*) FROM turns").fetchone() == (2,)
    finally:
        reader.close()


async def test_empty_database_is_migrated_and_migration_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()

    for _ in range(2):
        memory = await SqliteStore.open(str(path))
        try:
            await _answered(memory, "k", "q", "a")
        finally:
            await memory.close()

    raw = _raw(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"conversations", "turns"} <= tables
        assert raw.execute("SELECT COUNT(*) FROM turns").fetchone() == (2,)
    finally:
        raw.close()


async def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    raw = _raw(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()

    with pytest.raises(
        StoreError, match=rf"schema version {SCHEMA_VERSION + 1}\b.*up to {SCHEMA_VERSION}\b"
    ):
        await SqliteStore.open(str(path))

    raw = _raw(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)
        assert raw.execute("SELECT COUNT(*) FROM sqlite_master").fetchone() == (0,)
    finally:
        raw.close()


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not an SQLite file, just some text. " * 100)

    with pytest.raises(StoreError):
        await SqliteStore.open(str(path))


async def test_event_loop_stays_responsive_during_a_large_write(store: SqliteStore) -> None:
    big = "x" * 8_000_000
    write = asyncio.create_task(begin_turn(store, "k", big))
    await asyncio.sleep(0)  # the write starts; a blocking one would also finish here
    ticks = 0
    while not write.done():
        ticks += 1
        await asyncio.sleep(0)
    turn = await write

    # A blocking sqlite3 call would have finished the write before the loop ticked.
    assert ticks > 0
    transcript = await store.conversations.transcript("k")
    assert transcript is not None
    assert [(t.id, len(t.question)) for t in transcript.turns] == [(turn, len(big))]


async def test_opening_a_new_file_waits_for_another_process_creating_it(tmp_path: Path) -> None:
    # Two `ask`s started together both create the database: one is still in its first
    # transaction (rollback journal) when the other switches to WAL, which SQLite refuses
    # at once with "database is locked" instead of waiting on busy_timeout.
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("CREATE TABLE scratch (x)")
        other.execute("BEGIN IMMEDIATE")
        asyncio.get_running_loop().call_later(0.2, other.execute, "COMMIT")
        store = await SqliteStore.open(path)
        await store.close()
    finally:
        other.close()
