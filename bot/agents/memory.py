"""The memory agent: conversations kept in one SQLite file.

Every conversation key (see :func:`bot.domain.conversation_key`) owns one ``sessions`` row
and its ``turns``. A turn is stored in two steps so a crash mid-answer still leaves the
question on record: :meth:`MemoryStore.begin_turn` saves the question as ``pending`` and
:meth:`MemoryStore.finish_turn` adds the answer. Older turns are folded into a rolling
``summary``; ``summary_upto`` is the id of the last turn it covers, and
:meth:`MemoryStore.load` returns only the answered turns after it.

Schema (version 1; ``PRAGMA user_version`` holds the version)::

    sessions                                 turns
    ┌────────────────────────────────┐       ┌──────────────────────────────────────────┐
    │ key           TEXT  PK         │◄──┐   │ id           INTEGER PK AUTOINCREMENT    │
    │ created_at    TEXT  ISO-8601   │   └───┤ session_key  TEXT FK ON DELETE CASCADE   │
    │ updated_at    TEXT  ISO-8601   │       │ question     TEXT                        │
    │ summary       TEXT  ('' = none)│       │ answer       TEXT NULL (NULL = pending)  │
    │ summary_upto  INTEGER turn id  │       │ status       'pending' | 'answered'      │
    └────────────────────────────────┘       │ created_at   TEXT ISO-8601               │
                                             │ answered_at  TEXT NULL                   │
                                             └──────────────────────────────────────────┘
    index turns_by_session (session_key, id)

Timestamps are ISO-8601 in UTC with microseconds (``2024-05-01T12:00:00.123456+00:00``),
so they sort as text. ``AUTOINCREMENT`` makes turn ids grow forever and never be reused,
even after a reset: a late :meth:`~MemoryStore.finish_turn` for a deleted turn can then
never land on somebody else's new turn, and ``summary_upto`` comparisons stay meaningful.

Errors: every method except :meth:`~MemoryStore.close` raises :class:`MemoryStoreError`
when SQLite fails (disk full, file locked past the busy timeout, corrupt file) or when the
store has been closed; :meth:`~MemoryStore.open` also raises it when the file's schema is
newer than this code. ``sqlite3`` errors never escape this module. Refusals that are part
of normal operation (a turn or session deleted meanwhile, a summary that would move
backwards) are reported by returning ``False``, not by raising.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from bot.domain import ConversationState, SessionInfo, StoredTurn
from bot.errors import MemoryStoreError

_log = logging.getLogger(__name__)

# How long a statement waits for another process's lock (the CLI reading or migrating, say)
# before SQLite gives up with "database is locked".
_BUSY_TIMEOUT_MS = 5_000

# Migration N (1-based) is _MIGRATIONS[N - 1]; a database at user_version V gets the steps
# after V, all in one transaction together with the new user_version, so a crash while
# migrating leaves the old version intact. Append new steps; never edit a released one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
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
        # Serves load()/transcript() and the ON DELETE CASCADE lookup of a session's turns.
        "CREATE INDEX turns_by_session ON turns (session_key, id)",
    ),
)

SCHEMA_VERSION = len(_MIGRATIONS)

_TURN_COLUMNS = "id, question, answer, status, created_at"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _turn(row: sqlite3.Row) -> StoredTurn:
    status: Literal["pending", "answered"] = (
        "answered" if row["status"] == "answered" else "pending"
    )
    return StoredTurn(
        id=int(row["id"]),
        question=str(row["question"]),
        answer=None if row["answer"] is None else str(row["answer"]),
        status=status,
        created_at=str(row["created_at"]),
    )


async def _fetchall(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(sql, params))


async def _fetchone(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> sqlite3.Row | None:
    rows = await _fetchall(conn, sql, params)
    return rows[0] if rows else None


async def _write(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> int:
    """Run one data-changing statement; return the number of rows it changed."""
    async with conn.execute(sql, params) as cursor:
        return cursor.rowcount


async def _migrate(conn: aiosqlite.Connection, migrations: Iterable[Sequence[str]]) -> None:
    """Bring the schema to ``len(migrations)``; a no-op when it is already there.

    Raises:
        MemoryStoreError: the file was written by a newer version of this code.
        sqlite3.Error: a step failed (the caller translates it).
    """
    steps = list(migrations)

    async def version() -> int:
        row = await _fetchone(conn, "PRAGMA user_version")
        current = int(row[0]) if row is not None else 0
        if current > len(steps):
            raise MemoryStoreError(
                f"the memory database has schema version {current}, but this version of "
                f"research-agent only knows versions up to {len(steps)}; upgrade "
                "research-agent or point [memory].database at another file"
            )
        return current

    # Most opens find the schema current: check without taking the write lock, so the CLI
    # opening the file while the bot writes does not queue behind it.
    if await version() == len(steps):
        return
    await conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the lock: another process may have migrated meanwhile.
        current = await version()
        for number, statements in enumerate(steps[current:], start=current + 1):
            for statement in statements:
                await conn.execute(statement)
            # PRAGMA does not take parameters; ``number`` is an int we computed.
            await conn.execute(f"PRAGMA user_version = {int(number)}")
            _log.info("memory schema migrated to version %d", number)
        await conn.execute("COMMIT")
    except BaseException:
        await _rollback(conn)
        raise


async def _rollback(conn: aiosqlite.Connection) -> None:
    try:
        await conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        # "no transaction is active": BEGIN itself failed, or COMMIT got through before a
        # cancellation reached us. Either way there is nothing left to undo.
        _log.debug("memory store rollback skipped: %s", exc)


class MemoryStore:
    """Conversation memory on one shared aiosqlite connection.

    Build it with :meth:`open` in ``main()``, pass it in, and :meth:`close` it at shutdown.
    All methods are coroutines and safe to call concurrently from many tasks.
    """

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        """Wrap an already configured connection; use :meth:`open` instead."""
        self._conn: aiosqlite.Connection | None = conn
        self._path = path
        # Every coroutine shares one connection, and SQLite transactions belong to the
        # connection, not to the coroutine: if two tasks interleaved their statements, one
        # task's COMMIT would commit the other's half-done writes, its ROLLBACK would undo
        # them, and a read could see rows another task has not committed yet. So each
        # operation, reads included, holds this lock from its BEGIN to its COMMIT.
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"<MemoryStore {self._path!r} {state}>"

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> MemoryStore:
        """Open (creating if needed) the database at ``path`` and migrate its schema.

        ``":memory:"`` gives a private in-memory database. The parent directory of a file
        path is created.

        Raises:
            MemoryStoreError: the directory or file cannot be created or opened, the file
                is not a database, or its schema is newer than this code knows.
        """
        location = os.fspath(path)
        if location != ":memory:":
            try:
                await asyncio.to_thread(Path(location).parent.mkdir, parents=True, exist_ok=True)
            except OSError as exc:
                _log.error("cannot create the directory for %s: %s", location, exc)
                raise MemoryStoreError(f"cannot create the directory for {location}") from exc
        try:
            # isolation_level=None: the sqlite3 module must not open transactions on its
            # own; every transaction here is an explicit BEGIN ... COMMIT.
            conn = await aiosqlite.connect(location, isolation_level=None)
        except sqlite3.Error as exc:
            _log.error("cannot open memory database %s: %s", location, exc)
            raise MemoryStoreError(f"cannot open memory database {location}: {exc}") from exc
        try:
            await cls._configure(conn, location)
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, sqlite3.Error):
                _log.error("cannot prepare memory database %s: %s", location, exc)
                raise MemoryStoreError(f"cannot prepare memory database {location}: {exc}") from exc
            raise
        return cls(conn, location)

    @staticmethod
    async def _configure(conn: aiosqlite.Connection, location: str) -> None:
        conn.row_factory = aiosqlite.Row
        # Set first, so the journal-mode switch and the migration already wait politely.
        await conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        # Per connection and off by default: without it ON DELETE CASCADE does nothing.
        await conn.execute("PRAGMA foreign_keys = ON")
        # WAL lets another process (the CLI's `sessions list`) read while the bot writes;
        # with WAL, NORMAL can lose the last commits on power loss, never corrupt the file.
        row = await _fetchone(conn, "PRAGMA journal_mode = WAL")
        mode = str(row[0]).lower() if row is not None else "?"
        if mode != "wal" and location != ":memory:":
            _log.warning("memory database %s stays in journal mode %s, not WAL", location, mode)
        await conn.execute("PRAGMA synchronous = NORMAL")
        await _migrate(conn, _MIGRATIONS)

    async def close(self) -> None:
        """Wait for the operation in progress, then close the connection. Safe to repeat."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                await conn.close()
            except sqlite3.Error as exc:
                # Closing is best effort at shutdown; committed data is already on disk.
                _log.warning("closing memory database %s failed: %s", self._path, exc)

    @contextlib.asynccontextmanager
    async def _transaction(
        self, operation: str, key: str | None, *, write: bool
    ) -> AsyncIterator[aiosqlite.Connection]:
        """Hold the lock and one transaction; translate SQLite errors at this boundary.

        Writes use BEGIN IMMEDIATE, taking SQLite's write lock up front: a deferred
        transaction that reads and then writes can fail with SQLITE_BUSY half-way when
        another process wrote in between, whereas IMMEDIATE waits (busy_timeout) at BEGIN.
        Reads use a plain BEGIN so their statements see one snapshot.
        """
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise MemoryStoreError(f"{operation} on a closed memory store")
            try:
                await conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                await conn.execute("COMMIT")
            except BaseException as exc:
                # Also on CancelledError: aiosqlite runs statements in order on its one
                # worker thread, so this ROLLBACK runs after any statement the cancelled
                # await had already queued, and before the next holder of the lock begins.
                await _rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    _log.warning("memory store %s failed (key=%r): %r", operation, key, exc)
                    raise MemoryStoreError(f"memory store {operation} failed: {exc}") from exc
                raise

    async def begin_turn(self, key: str, question: str) -> int:
        """Store ``question`` as a pending turn of ``key``, creating the session if new.

        Returns the new turn's id (ids only ever grow). Raises MemoryStoreError.
        """
        now = _now()
        async with self._transaction("begin_turn", key, write=True) as conn:
            await _write(
                conn,
                "INSERT INTO sessions (key, created_at, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at",
                (key, now, now),
            )
            async with conn.execute(
                "INSERT INTO turns (session_key, question, status, created_at) "
                "VALUES (?, ?, 'pending', ?)",
                (key, question, now),
            ) as cursor:
                turn_id = cursor.lastrowid
        if turn_id is None:  # pragma: no cover - sqlite3 always sets it after an INSERT
            raise MemoryStoreError("memory store begin_turn did not get a turn id")
        return turn_id

    async def finish_turn(self, turn_id: int, answer: str) -> bool:
        """Store the answer of turn ``turn_id`` and mark the turn answered.

        Also touches the session's ``updated_at``. Returns False when the turn no longer
        exists (its session was reset while the answer was being written). Finishing an
        answered turn again replaces its answer. Raises MemoryStoreError.
        """
        now = _now()
        async with self._transaction("finish_turn", None, write=True) as conn:
            changed = await _write(
                conn,
                "UPDATE turns SET answer = ?, status = 'answered', answered_at = ? WHERE id = ?",
                (answer, now, turn_id),
            )
            if changed:
                await _write(
                    conn,
                    "UPDATE sessions SET updated_at = ? "
                    "WHERE key = (SELECT session_key FROM turns WHERE id = ?)",
                    (now, turn_id),
                )
        return changed > 0

    async def load(self, key: str) -> ConversationState:
        """What the next prompt needs: the summary and the answered turns after it.

        Turns come oldest first; pending turns are left out. An unknown key gives an
        empty state. Raises MemoryStoreError.
        """
        async with self._transaction("load", key, write=False) as conn:
            session = await _fetchone(
                conn, "SELECT summary, summary_upto FROM sessions WHERE key = ?", (key,)
            )
            if session is None:
                return ConversationState(key=key)
            rows = await _fetchall(
                conn,
                f"SELECT {_TURN_COLUMNS} FROM turns "
                "WHERE session_key = ? AND id > ? AND status = 'answered' ORDER BY id",
                (key, session["summary_upto"]),
            )
        return ConversationState(
            key=key,
            summary=str(session["summary"]),
            summary_upto=int(session["summary_upto"]),
            turns=tuple(_turn(row) for row in rows),
        )

    async def transcript(self, key: str) -> ConversationState | None:
        """Every turn of ``key``, pending ones and summarised ones included, oldest first.

        Returns None when the session does not exist. Raises MemoryStoreError.
        """
        async with self._transaction("transcript", key, write=False) as conn:
            session = await _fetchone(
                conn, "SELECT summary, summary_upto FROM sessions WHERE key = ?", (key,)
            )
            if session is None:
                return None
            rows = await _fetchall(
                conn,
                f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_key = ? ORDER BY id",
                (key,),
            )
        return ConversationState(
            key=key,
            summary=str(session["summary"]),
            summary_upto=int(session["summary_upto"]),
            turns=tuple(_turn(row) for row in rows),
        )

    async def save_summary(self, key: str, summary: str, upto_turn_id: int) -> bool:
        """Replace the summary of ``key`` with one covering every turn up to ``upto_turn_id``.

        Returns False, changing nothing, when the session is gone, when ``upto_turn_id``
        is lower than the current ``summary_upto`` (a slower summariser finishing after a
        newer one), or when it is not an answered turn of this session (the session was
        reset, and perhaps re-created, while the summary was being written). The summary
        does not count as activity: ``updated_at`` is left alone. Raises MemoryStoreError.
        """
        async with self._transaction("save_summary", key, write=True) as conn:
            changed = await _write(
                conn,
                "UPDATE sessions SET summary = ?, summary_upto = ? "
                "WHERE key = ? AND summary_upto <= ? AND EXISTS ("
                "  SELECT 1 FROM turns"
                "  WHERE id = ? AND session_key = ? AND status = 'answered')",
                (summary, upto_turn_id, key, upto_turn_id, upto_turn_id, key),
            )
        return changed > 0

    async def list_sessions(self) -> list[SessionInfo]:
        """Every session, most recently updated first.

        ``turn_count`` counts all stored turns, pending and summarised ones included.
        Raises MemoryStoreError.
        """
        async with self._transaction("list_sessions", None, write=False) as conn:
            rows = await _fetchall(
                conn,
                "SELECT s.key, s.created_at, s.updated_at, s.summary != '' AS has_summary, "
                "       COUNT(t.id) AS turn_count, COALESCE(MAX(t.id), 0) AS last_turn "
                "FROM sessions AS s LEFT JOIN turns AS t ON t.session_key = s.key "
                "GROUP BY s.key "
                # The newest turn breaks ties between equal timestamps (a coarse clock).
                "ORDER BY s.updated_at DESC, last_turn DESC, s.key",
            )
        return [
            SessionInfo(
                key=str(row["key"]),
                created_at=str(row["created_at"]),
                updated_at=str(row["updated_at"]),
                turn_count=int(row["turn_count"]),
                has_summary=bool(row["has_summary"]),
            )
            for row in rows
        ]

    async def reset(self, key: str) -> bool:
        """Delete the session ``key`` and all its turns.

        Returns False when there was no such session. Raises MemoryStoreError.
        """
        async with self._transaction("reset", key, write=True) as conn:
            # The turns go with it: ON DELETE CASCADE, with foreign_keys on.
            deleted = await _write(conn, "DELETE FROM sessions WHERE key = ?", (key,))
        return deleted > 0
