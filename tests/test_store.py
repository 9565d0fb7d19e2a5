"""Tests of the memory agent against real SQLite files (and ``:memory:``)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.errors import StoreError
from bot.store.sqlite import SCHEMA_VERSION, SqliteStore
from tests.store_helpers import begin_turn


@pytest.fixture
async def store() -> AsyncIterator[SqliteStore]:
    memory = await SqliteStore.open(":memory:")
    try:
        yield memory
    finally:
        await memory.close()


@pytest.fixture
async def file_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    memory = await SqliteStore.open(str(tmp_path / "memory.db"))
    try:
        yield memory
    finally:
        await memory.close()


def _raw(path: Path) -> sqlite3.Connection:
    """A plain second connection, as another process (the CLI) would have."""
    return sqlite3.connect(path, isolation_level=None)


async def _answered(store: SqliteStore, key: str, question: str, answer: str) -> int:
    turn = await begin_turn(store, key, question)
    assert await store.conversations.finish_turn(turn, answer)
    return turn


async def test_begin_finish_load_round_trip(store: SqliteStore) -> None:
    first = await _answered(store, "discord:1:2", "What is SQLite?", "A database [1].")
    second = await _answered(store, "discord:1:2", "Is it fast?", "Yes.")

    state = await store.conversations.load("discord:1:2")

    assert second > first
    assert state.conversation == "discord:1:2"
    assert (state.summary, state.summary_upto) == ("", 0)
    assert [(t.id, t.question, t.answer, t.status) for t in state.turns] == [
        (first, "What is SQLite?", "A database [1].", "answered"),
        (second, "Is it fast?", "Yes.", "answered"),
    ]
    created = state.turns[0].created_at
    assert created.utcoffset() == timedelta(0)


async def test_unknown_key_loads_empty_and_has_no_transcript(store: SqliteStore) -> None:
    state = await store.conversations.load("nobody")

    assert (state.conversation, state.summary, state.summary_upto, state.turns) == (
        "nobody",
        "",
        0,
        (),
    )
    assert await store.conversations.transcript("nobody") is None


async def test_pending_turn_is_in_transcript_but_not_in_load(store: SqliteStore) -> None:
    done = await _answered(store, "k", "first", "one")
    pending = await begin_turn(store, "k", "second, never answered")

    loaded = await store.conversations.load("k")
    transcript = await store.conversations.transcript("k")

    assert [t.id for t in loaded.turns] == [done]
    assert transcript is not None
    assert [(t.id, t.status, t.answer) for t in transcript.turns] == [
        (done, "answered", "one"),
        (pending, "pending", None),
    ]


async def test_inputs_are_stored_exactly_as_given(store: SqliteStore) -> None:
    key = "slack:T1:C2:1700000000.0001 '; DROP TABLE turns; -- ünïcødé 🦆"
    question = "q" * 39_999 + "?"
    answer = "line one\nline two\x00after a NUL\n" + "é" * 10_000

    await _answered(store, key, question, answer)
    (turn,) = (await store.conversations.load(key)).turns

    assert turn.question == question
    assert len(turn.question) == 40_000
    assert turn.answer == answer
    assert [s.conversation for s in await store.conversations.list_all()] == [key]


async def test_summary_moves_the_window_forward_only(store: SqliteStore) -> None:
    ids = [await _answered(store, "k", f"q{n}", f"a{n}") for n in range(5)]

    assert await store.conversations.save_summary("k", "turns 0-2", ids[2])
    state = await store.conversations.load("k")
    assert (state.summary, state.summary_upto) == ("turns 0-2", ids[2])
    assert [t.question for t in state.turns] == ["q3", "q4"]

    # A slower summariser finishing late must not drag the window back.
    assert not await store.conversations.save_summary("k", "turns 0-1", ids[1])
    assert (await store.conversations.load("k")).summary == "turns 0-2"

    # Re-summarising the same window is allowed; the transcript keeps every turn.
    assert await store.conversations.save_summary("k", "turns 0-2, shorter", ids[2])
    transcript = await store.conversations.transcript("k")
    assert transcript is not None
    assert transcript.summary == "turns 0-2, shorter"
    assert [t.question for t in transcript.turns] == [f"q{n}" for n in range(5)]


async def test_summary_refused_for_missing_session_or_foreign_turn(store: SqliteStore) -> None:
    other = await _answered(store, "other", "q", "a")
    mine = await _answered(store, "mine", "q", "a")
    pending = await begin_turn(store, "mine", "still thinking")

    assert not await store.conversations.save_summary("gone", "summary", other)
    assert not await store.conversations.save_summary("mine", "summary", other)
    assert not await store.conversations.save_summary("mine", "summary", pending)
    assert not await store.conversations.save_summary("mine", "summary", pending + 1000)
    assert (await store.conversations.load("mine")).summary_upto == 0
    assert await store.conversations.save_summary("mine", "summary", mine)


async def test_summary_of_a_reset_conversation_is_refused(store: SqliteStore) -> None:
    old = await _answered(store, "k", "old question", "old answer")
    await store.conversations.reset("k")
    await _answered(store, "k", "new question", "new answer")

    # The summariser had loaded the old conversation before the reset.
    assert not await store.conversations.save_summary("k", "about the old question", old)
    assert (await store.conversations.load("k")).summary == ""


async def test_reset_deletes_session_and_turns(file_store: SqliteStore, tmp_path: Path) -> None:
    await _answered(file_store, "k", "q", "a")
    await begin_turn(file_store, "k", "pending")
    await _answered(file_store, "keep", "q", "a")

    assert await file_store.conversations.reset("k")
    assert not await file_store.conversations.reset("k")

    assert await file_store.conversations.transcript("k") is None
    assert (await file_store.conversations.load("k")).turns == ()
    assert [s.conversation for s in await file_store.conversations.list_all()] == ["keep"]
    raw = _raw(tmp_path / "memory.db")
    try:
        assert raw.execute("SELECT COUNT(*) FROM turns WHERE conversation = 'k'").fetchone() == (0,)
    finally:
        raw.close()


async def test_finish_turn_after_reset_returns_false(store: SqliteStore) -> None:
    turn = await begin_turn(store, "k", "slow question")
    await store.conversations.reset("k")

    assert not await store.conversations.finish_turn(turn, "late answer")
    assert not await store.conversations.finish_turn(123_456, "no such turn")
    assert await store.conversations.list_all() == []

    # Ids are never reused, so the late answer cannot land on a new conversation's turn.
    new_turn = await begin_turn(store, "k", "new question")
    assert new_turn > turn


async def test_list_sessions_order_and_counts(store: SqliteStore) -> None:
    await _answered(store, "a", "q1", "x")
    await _answered(store, "b", "q1", "x")
    await begin_turn(store, "b", "pending")
    await _answered(store, "c", "q1", "x")
    last_of_a = await _answered(store, "a", "q2", "x")
    await store.conversations.save_summary("a", "summary", last_of_a)

    sessions = await store.conversations.list_all()

    assert [(s.conversation, s.turn_count, s.has_summary) for s in sessions] == [
        ("a", 2, True),
        ("c", 1, False),
        ("b", 2, False),
    ]
    for info in sessions:
        assert info.created_at <= info.updated_at
        assert info.updated_at.utcoffset() == timedelta(0)


async def test_concurrent_turns_across_keys_and_on_one_key_all_survive(
    file_store: SqliteStore,
) -> None:
    async def turn(key: str, n: int) -> int:
        turn_id = await begin_turn(file_store, key, f"question {n}")
        await asyncio.sleep(0)
        assert await file_store.conversations.finish_turn(turn_id, f"answer {n}")
        return turn_id

    jobs = [turn("shared", n) for n in range(25)] + [turn(f"key{n}", n) for n in range(25)]
    ids = await asyncio.gather(*jobs)

    assert len(set(ids)) == 50
    shared = await file_store.conversations.load("shared")
    assert sorted((t.question, t.answer) for t in shared.turns) == sorted(
        (f"question {n}", f"answer {n}") for n in range(25)
    )
    assert [t.id for t in shared.turns] == sorted(t.id for t in shared.turns)
    sessions = await file_store.conversations.list_all()
    assert len(sessions) == 26
    assert sum(s.turn_count for s in sessions) == 50


async def test_concurrent_reads_and_writes_mix_cleanly(store: SqliteStore) -> None:
    await _answered(store, "k", "seed", "seed")

    results = await asyncio.gather(
        *(_answered(store, "k", f"q{n}", f"a{n}") for n in range(20)),
        *(store.conversations.load("k") for _ in range(20)),
        *(store.conversations.list_all() for _ in range(10)),
    )

    assert len(results) == 50
    assert len((await store.conversations.load("k")).turns) == 21


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


async def test_failed_write_rolls_back_the_whole_transaction(store: SqliteStore) -> None:
    # begin_turn upserts the session row, then inserts the turn. Bytes are not text, so
    # the turn INSERT fails on the table's CHECK constraint after the session row was
    # already written inside the same transaction; none of it may survive.
    with pytest.raises(StoreError) as caught:
        await begin_turn(store, "new-session", b"not text")  # type: ignore[arg-type]

    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert await store.conversations.list_all() == []
    assert await store.conversations.transcript("new-session") is None

    # The lock was released and no transaction is left open: the store keeps working.
    turn = await _answered(store, "new-session", "real question", "real answer")
    assert [t.id for t in (await store.conversations.load("new-session")).turns] == [turn]


async def test_failed_finish_keeps_the_turn_pending(store: SqliteStore) -> None:
    turn = await begin_turn(store, "k", "q")
    before = await store.conversations.list_all()

    with pytest.raises(StoreError):
        await store.conversations.finish_turn(turn, b"not text")  # type: ignore[arg-type]

    transcript = await store.conversations.transcript("k")
    assert transcript is not None
    assert [(t.status, t.answer) for t in transcript.turns] == [("pending", None)]
    assert await store.conversations.list_all() == before


async def test_cancelled_write_leaves_no_partial_rows(store: SqliteStore) -> None:
    task = asyncio.create_task(begin_turn(store, "k", "cancelled question"))
    await asyncio.sleep(0)  # let it take the lock and queue its first statement
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    transcript = await store.conversations.transcript("k")
    # Either the whole turn was written before the cancellation arrived, or none of it.
    assert transcript is None or [t.question for t in transcript.turns] == ["cancelled question"]
    await _answered(store, "k", "next", "works")


async def test_close_is_idempotent_and_later_calls_raise(tmp_path: Path) -> None:
    memory = await SqliteStore.open(str(tmp_path / "memory.db"))
    await memory.close()
    await memory.close()

    with pytest.raises(StoreError, match="closed"):
        await begin_turn(memory, "k", "q")
    with pytest.raises(StoreError, match="closed"):
        await memory.conversations.load("k")


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
