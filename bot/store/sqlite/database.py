"""One SQLite file on one shared ``aiosqlite`` connection: opening, transactions, closing.

``aiosqlite`` runs every statement on its own worker thread, so the event loop never
blocks on disk. Every coroutine shares the one connection, and SQLite transactions belong
to the connection, not to the coroutine: if two tasks interleaved their statements, one
task's COMMIT would commit the other's half-done writes. So each operation, reads
included, holds :attr:`Database.lock` from its BEGIN to its COMMIT
(:meth:`Database.transaction`), which is also the one place ``sqlite3`` errors become
:class:`~bot.errors.StoreError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from bot.errors import StoreError

_log = logging.getLogger(__name__)

# How long a statement waits for another process's lock (the CLI reading or migrating, say)
# before SQLite gives up with "database is locked".
BUSY_TIMEOUT_MS = 5_000


def now_text() -> str:
    return stamp(datetime.now(UTC))


def stamp(moment: datetime) -> str:
    """A moment as stored: ISO-8601 in UTC with microseconds, so stamps sort as text."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def moment(text: object) -> datetime:
    """A stored stamp back as an aware datetime."""
    return datetime.fromisoformat(str(text))


def placeholders(count: int) -> str:
    return ", ".join("?" * count)


async def fetchall(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(sql, params))


async def fetchone(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> sqlite3.Row | None:
    rows = await fetchall(conn, sql, params)
    return rows[0] if rows else None


async def write(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> int:
    """Run one data-changing statement; return the number of rows it changed."""
    async with conn.execute(sql, params) as cursor:
        return cursor.rowcount


async def rollback(conn: aiosqlite.Connection) -> None:
    try:
        await conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        # "no transaction is active": BEGIN itself failed, or COMMIT got through before a
        # cancellation reached us. Either way there is nothing left to undo.
        _log.debug("store rollback skipped: %s", exc)


Migrate = Callable[[aiosqlite.Connection], Awaitable[None]]


class Database:
    """The connection and the lock that serialises transactions on it."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn: aiosqlite.Connection | None = conn
        self.path = path
        self._lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self._conn is None

    @classmethod
    async def open(cls, path: str | os.PathLike[str], migrate: Migrate) -> Database:
        """Open (creating if needed) the file at ``path`` and bring its schema up to date.

        ``":memory:"`` gives a private in-memory database. The parent directory of a file
        path is created.

        Raises:
            StoreError: the directory or file cannot be created or opened, the file is
                not a database, or ``migrate`` refuses it.
        """
        location = os.fspath(path)
        if location != ":memory:":
            try:
                await asyncio.to_thread(Path(location).parent.mkdir, parents=True, exist_ok=True)
            except OSError as exc:
                _log.error("cannot create the directory for %s: %s", location, exc)
                raise StoreError(f"cannot create the directory for {location}") from exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_TIMEOUT_MS / 1000
        delay = 0.01
        while True:
            try:
                return cls(await _connect(location, migrate), location)
            except sqlite3.OperationalError as exc:
                # Two processes creating the same new file (two `ask`s at once): the switch
                # to WAL can report "locked" without waiting on busy_timeout. A moment
                # later the other one is done.
                if "locked" not in str(exc) or loop.time() + delay > deadline:
                    _log.error("cannot prepare the database %s: %s", location, exc)
                    raise StoreError(f"cannot prepare the database {location}: {exc}") from exc
                _log.debug("database %s busy while opening; retrying", location)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            except sqlite3.Error as exc:
                _log.error("cannot open the database %s: %s", location, exc)
                raise StoreError(f"cannot open the database {location}: {exc}") from exc

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
                _log.warning("closing the database %s failed: %s", self.path, exc)

    @contextlib.asynccontextmanager
    async def transaction(
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
                raise StoreError(f"{operation} on a closed store")
            try:
                await conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                await conn.execute("COMMIT")
            except BaseException as exc:
                # Also on CancelledError: aiosqlite runs statements in order on its one
                # worker thread, so this ROLLBACK runs after any statement the cancelled
                # await had already queued, and before the next holder of the lock begins.
                await rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    _log.warning("store %s failed (conversation=%r): %r", operation, key, exc)
                    raise StoreError(f"store {operation} failed: {exc}") from exc
                raise


async def _connect(location: str, migrate: Migrate) -> aiosqlite.Connection:
    """One connection, configured and migrated; closed again if that fails."""
    # isolation_level=None: the sqlite3 module must not open transactions on its own;
    # every transaction here is an explicit BEGIN ... COMMIT.
    conn = await aiosqlite.connect(location, isolation_level=None)
    try:
        await _configure(conn, location)
        await migrate(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


async def _configure(conn: aiosqlite.Connection, location: str) -> None:
    conn.row_factory = aiosqlite.Row
    # Set first, so the journal-mode switch and the migration already wait politely.
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # Per connection and off by default: without it ON DELETE CASCADE does nothing.
    await conn.execute("PRAGMA foreign_keys = ON")
    # WAL lets another process (the CLI's `conversations list`) read while the bot writes;
    # with WAL, NORMAL can lose the last commits on power loss, never corrupt the file.
    row = await fetchone(conn, "PRAGMA journal_mode = WAL")
    mode = str(row[0]).lower() if row is not None else "?"
    if mode != "wal" and location != ":memory:":
        _log.warning("the database %s stays in journal mode %s, not WAL", location, mode)
    await conn.execute("PRAGMA synchronous = NORMAL")
