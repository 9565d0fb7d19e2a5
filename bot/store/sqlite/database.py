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
import fcntl
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from bot.errors import StoreError

_log = logging.getLogger(__name__)

# How long a statement waits for another process's lock (the CLI reading or migrating, say)
# before SQLite gives up with "database is locked".
BUSY_TIMEOUT_MS = 5_000


def stamp(moment: datetime) -> str:
    """A moment as stored: ISO-8601 in UTC with microseconds, so stamps sort as text."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _param(value: Any) -> Any:
    # SQLite has no timestamp type: the shared SQL's datetimes are stored as sortable text.
    return stamp(value) if isinstance(value, datetime) else value


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


class SqliteConn:
    """The shared SQL's :class:`~bot.store.sql.driver.Conn` on one ``aiosqlite`` connection."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetchall(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        return await fetchall(self._conn, _dialect(sql), [_param(p) for p in params])

    async def fetchone(self, sql: str, *params: Any) -> sqlite3.Row | None:
        return await fetchone(self._conn, _dialect(sql), [_param(p) for p in params])

    async def execute(self, sql: str, *params: Any) -> int:
        return await write(self._conn, _dialect(sql), [_param(p) for p in params])

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(_dialect(sql), [[_param(p) for p in row] for row in rows])


def _dialect(sql: str) -> str:
    # A write transaction here already holds the whole file (BEGIN IMMEDIATE): the row
    # locks PostgreSQL needs are implied, and SQLite has no such clause.
    return sql.replace(" FOR UPDATE", "")


Migrate = Callable[[aiosqlite.Connection], Awaitable[None]]

# After a write found the file locked past the busy timeout, writes fail at once for this
# long instead of each waiting the whole timeout again in turn.
BUSY_COOLDOWN_S = 2.0
# How often the file's identity is checked (it was deleted or replaced under us?).
WATCH_EVERY_S = 1.0


class Database:
    """The connections to one SQLite file and the locks that serialise their transactions.

    Writes go through one connection, reads through another (WAL lets them run side by
    side), so a read never waits behind a write that waits for another process's lock.
    A ``":memory:"`` database is private to its connection, so there both are one.

    Three things are watched, so that a fault is noticed instead of silently felt:

    * another process holding the write lock: a write that waited the whole busy timeout
      in vain makes the next ones, for :data:`BUSY_COOLDOWN_S`, fail at once rather than
      queue behind each other five seconds apart (their callers answer without a record);
    * the file itself: deleted or replaced while open, it is logged once and a fresh
      database is opened at the path, so later work is not written to a ghost;
    * its owner (:meth:`take_ownership`): one serving process per file, by an advisory
      lock that dies with its process.
    """

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        path: str,
        migrate: Migrate,
    ) -> None:
        self._writer: aiosqlite.Connection | None = writer
        self._reader: aiosqlite.Connection | None = reader
        self.path = path
        self._migrate = migrate
        self._write_lock = asyncio.Lock()
        # One lock when there is one connection: its transactions must not interleave.
        self._read_lock = self._write_lock if reader is writer else asyncio.Lock()
        self._busy_until = 0.0
        self._probing = False
        self._identity = _identity(path)
        self._next_watch = 0.0
        self._owner_fd: int | None = None

    @property
    def closed(self) -> bool:
        return self._writer is None

    @property
    def location(self) -> str:
        return self.path

    @property
    def dialect(self) -> str:
        return "sqlite"

    @property
    def exclusive(self) -> bool:
        """Whether this process is the one serving the file (:meth:`take_ownership`), or
        the database is private to it (``":memory:"``)."""
        return self.path == ":memory:" or self._owner_fd is not None

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
        writer, reader = await _connections(location, migrate)
        return cls(writer, reader, location, migrate)

    async def close(self) -> None:
        """Wait for the operations in progress, then close. Safe to repeat."""
        async with self._write_lock:
            if self._read_lock is not self._write_lock:
                await self._read_lock.acquire()
            try:
                await self._close_connections()
            finally:
                if self._read_lock is not self._write_lock:
                    self._read_lock.release()
        if self._owner_fd is not None:
            os.close(self._owner_fd)  # the advisory lock goes with it
            self._owner_fd = None

    async def take_ownership(self) -> None:
        """Make this process the one that serves the file, for as long as it runs.

        An advisory lock on ``<file>.lock`` (``flock``): the kernel drops it when the
        process ends, however it ends, so a crash never leaves it stale. A private
        ``":memory:"`` database needs none.

        Raises:
            StoreError: another live process serves the file (its pid in the message).
        """
        if self.path == ":memory:" or self._owner_fd is not None:
            return
        self._owner_fd = await asyncio.to_thread(_lock_owner, self.path)

    @contextlib.asynccontextmanager
    async def transaction(
        self, operation: str, key: str | None, *, write: bool
    ) -> AsyncIterator[SqliteConn]:
        """Hold one connection's lock and one transaction; translate SQLite errors here.

        Writes use BEGIN IMMEDIATE, taking SQLite's write lock up front: a deferred
        transaction that reads and then writes can fail with SQLITE_BUSY half-way when
        another process wrote in between, whereas IMMEDIATE waits (busy_timeout) at BEGIN.
        Reads use a plain BEGIN so their statements see one snapshot.
        """
        await self._watch()
        probe = False
        lock = self._write_lock if write else self._read_lock
        try:
            async with lock:
                # Admitted after the lock: writes that queued behind one waiting in vain
                # learn of it here, and fail at once instead of waiting in turn.
                probe = self._admit(operation) if write else False
                conn = self._writer if write else self._reader
                if conn is None:
                    raise StoreError(f"{operation} on a closed store")
                try:
                    await conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    yield SqliteConn(conn)
                    await conn.execute("COMMIT")
                    if probe:
                        self._busy_until = 0.0
                        _log.warning("the database %s takes writes again", self.path)
                except BaseException as exc:
                    # Also on CancelledError: aiosqlite runs statements in order on its one
                    # worker thread, so this ROLLBACK runs after any statement the
                    # cancelled await had already queued, and before the next holder of
                    # the lock begins.
                    await rollback(conn)
                    if isinstance(exc, sqlite3.Error):
                        if write and _is_busy(exc):
                            self._cool_down(operation)
                        _log.warning("store %s failed (conversation=%r): %r", operation, key, exc)
                        raise StoreError(f"store {operation} failed: {exc}") from exc
                    raise
        finally:
            if probe:
                self._probing = False

    def _admit(self, operation: str) -> bool:
        """Whether a write may wait for the file's lock; True when it is the probe.

        While the file is known to be locked by another process, writes fail at once;
        once the cool-down is over one write (the probe) waits again, and the others
        keep failing at once until it knows.
        """
        loop = asyncio.get_running_loop()
        if self._probing or loop.time() < self._busy_until:
            raise StoreError(f"store {operation} skipped: the database is locked by another writer")
        if self._busy_until:
            self._probing = True
            return True
        return False

    def _cool_down(self, operation: str) -> None:
        if not self._busy_until:
            _log.error(
                "the database %s is locked by another process past the busy timeout "
                "(%d ms); writes fail at once for %g s at a time until it is free",
                self.path,
                BUSY_TIMEOUT_MS,
                BUSY_COOLDOWN_S,
            )
        self._busy_until = asyncio.get_running_loop().time() + BUSY_COOLDOWN_S

    async def _watch(self) -> None:
        """Reopen a fresh database if the file was deleted or replaced (logged once)."""
        loop = asyncio.get_running_loop()
        if self._identity is None or loop.time() < self._next_watch or self._writer is None:
            return
        self._next_watch = loop.time() + WATCH_EVERY_S
        now = await asyncio.to_thread(_identity, self.path)
        if now == self._identity:
            return
        async with self._write_lock:
            if self._read_lock is not self._write_lock:
                await self._read_lock.acquire()
            try:
                if await asyncio.to_thread(_identity, self.path) == self._identity:
                    return  # another task reopened it meanwhile
                _log.error(
                    "the database file %s was %s while the bot ran: the conversations, the "
                    "inbox and its dedupe before now are lost; going on with a fresh "
                    "database there (restore the file from a backup to get them back)",
                    self.path,
                    "deleted" if now is None else "replaced",
                )
                await self._close_connections()
                self._writer, self._reader = await _connections(self.path, self._migrate)
                self._identity = await asyncio.to_thread(_identity, self.path)
                self._busy_until, self._probing = 0.0, False
            finally:
                if self._read_lock is not self._write_lock:
                    self._read_lock.release()

    async def _close_connections(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        for conn in {id(c): c for c in (reader, writer) if c is not None}.values():
            try:
                await conn.close()
            except sqlite3.Error as exc:
                # Closing is best effort at shutdown; committed data is already on disk.
                _log.warning("closing the database %s failed: %s", self.path, exc)


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _identity(path: str) -> tuple[int, int] | None:
    """The file's (device, inode), or None when it does not exist (or is not a file)."""
    if path == ":memory:":
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _lock_owner(path: str) -> int:
    """Take ``<path>.lock`` for this process; its open descriptor holds the lock.

    Raises:
        StoreError: another process holds it.
    """
    lock_path = f"{path}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreError(
            f"another research-agent process (pid {holder}) is serving the database {path}; "
            "one process serves an SQLite database: stop that one first, or give this one "
            "its own [memory].database (several replicas need a shared PostgreSQL store)"
        ) from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


async def _connections(
    location: str, migrate: Migrate
) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
    """The writer (migrated) and the reader of ``location``; one connection for ``:memory:``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            writer = await _connect(location, migrate)
            break
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
    if location == ":memory:":
        return writer, writer
    try:
        reader = await _connect(location, None)
    except BaseException as exc:
        await writer.close()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"cannot open the database {location}: {exc}") from exc
        raise
    return writer, reader


async def _connect(location: str, migrate: Migrate | None) -> aiosqlite.Connection:
    """One connection, configured (and migrated, given ``migrate``); closed again if that
    fails."""
    # isolation_level=None: the sqlite3 module must not open transactions on its own;
    # every transaction here is an explicit BEGIN ... COMMIT.
    conn = await aiosqlite.connect(location, isolation_level=None)
    try:
        await _configure(conn, location)
        if migrate is not None:
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
