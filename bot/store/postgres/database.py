"""A PostgreSQL database through one ``asyncpg`` pool: opening, transactions, closing.

Every operation borrows a connection from the pool for one short transaction and gives it
back; nothing holds a transaction open across an LLM call. ``asyncpg`` errors (and the
socket errors of a server that went away) become :class:`~bot.errors.StoreError` here and
nowhere else. When the server restarts, every pooled connection is dead: the first one to
fail expires the others, and a transaction that fails before its first statement (at
BEGIN, where nothing can have been written) is tried once more on a fresh connection, so
the bot goes on by itself once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import asyncpg

from bot.core.urls import redact
from bot.errors import StoreError

_log = logging.getLogger(__name__)

# How long connecting may take, and one statement: a server that hangs must not hang turns.
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0

# Errors that mean "the connection is gone", not "the statement is wrong".
_GONE: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    # A connection that got the server's "terminating connection" while idle is left in
    # a state asyncpg cannot use ("another operation is in progress"): it is gone too.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)
_FAILURES: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *_GONE)
# A malformed URL fails in the driver's parser, with ValueError.
_OPEN_FAILURES: tuple[type[BaseException], ...] = (*_FAILURES, ValueError)
_CLOSE_FAILURES: tuple[type[BaseException], ...] = (*_FAILURES, TimeoutError)

_PLACEHOLDER = re.compile(r"\?")

Migrate = Callable[[asyncpg.Connection], Awaitable[None]]


def dialect(sql: str) -> str:
    """The shared SQL's ``?`` placeholders as PostgreSQL's ``$1, $2, ...``.

    The shared statements never hold a literal question mark, so every ``?`` is one.
    """
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag: "UPDATE 3", "DELETE 0", "INSERT 0 1".
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _param(value: Any) -> Any:
    # PostgreSQL's text cannot hold NUL, which SQLite stores; inbound text has none (the
    # intake drops them), but an LLM's answer or a source's title could: drop them too.
    return value.replace("\x00", "") if isinstance(value, str) and "\x00" in value else value


class PostgresConn:
    """The shared SQL's :class:`~bot.store.sql.driver.Conn` on one pooled connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetchall(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        return list(await self._conn.fetch(dialect(sql), *map(_param, params)))

    async def fetchone(self, sql: str, *params: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._conn.fetchrow(dialect(sql), *map(_param, params))
        return row

    async def execute(self, sql: str, *params: Any) -> int:
        return _rowcount(await self._conn.execute(dialect(sql), *map(_param, params)))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(dialect(sql), [[_param(p) for p in row] for row in rows])


class Database:
    """One pool of connections to a PostgreSQL database shared by every replica."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool: asyncpg.Pool | None = pool
        self._location = redact(url)
        self._healthy = True

    @classmethod
    async def open(cls, url: str, migrate: Migrate, *, pool_size: int) -> Database:
        """Connect a pool of up to ``pool_size`` connections and migrate the schema.

        Raises:
            StoreError: the server cannot be reached, refuses the login, or its schema is
                newer than this code knows.
        """
        where = redact(url)
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=pool_size,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
            )
        except _OPEN_FAILURES as exc:
            _log.error("cannot connect to the database %s: %r", where, exc)
            raise StoreError(f"cannot connect to the database {where}: {_reason(exc)}") from exc
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, _FAILURES):
                _log.error("cannot prepare the database %s: %r", where, exc)
                raise StoreError(f"cannot prepare the database {where}: {_reason(exc)}") from exc
            raise
        return cls(pool, url)

    @property
    def location(self) -> str:
        return self._location

    @property
    def dialect(self) -> str:
        return "postgresql"

    @property
    def exclusive(self) -> bool:
        # Any number of replicas may share the database: only leases say who is alive.
        return False

    @property
    def closed(self) -> bool:
        return self._pool is None

    async def take_ownership(self) -> None:
        """Nothing to take: replicas share the database, by design."""

    async def close(self) -> None:
        """Wait for the connections in use to come back, then close them. Safe to repeat."""
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=COMMAND_TIMEOUT_S)
            except _CLOSE_FAILURES as exc:
                _log.warning("closing the database pool failed (%r); terminating it", exc)
                pool.terminate()

    async def ping(self) -> None:
        """One round trip to the server.

        Raises:
            StoreError: it did not answer.
        """
        async with self.transaction("ping", None, write=False) as conn:
            await conn.fetchone("SELECT 1")

    @contextlib.asynccontextmanager
    async def transaction(
        self, operation: str, key: str | None, *, write: bool
    ) -> AsyncIterator[PostgresConn]:
        """One transaction on a pooled connection; translate the driver's errors here."""
        pool = self._pool
        if pool is None:
            raise StoreError(f"{operation} on a closed store")
        conn, transaction = await self._begin(pool, operation, write=write)
        try:
            try:
                yield PostgresConn(conn)
                await transaction.commit()
            except BaseException as exc:
                with contextlib.suppress(*_FAILURES):
                    if not conn.is_closed():
                        await transaction.rollback()
                if isinstance(exc, _FAILURES):
                    await self._failed(pool, operation, key, exc)
                    raise StoreError(f"store {operation} failed: {_reason(exc)}") from exc
                raise
            self._recovered()
        finally:
            await _give_back(pool, conn)

    async def _begin(
        self, pool: asyncpg.Pool, operation: str, *, write: bool
    ) -> tuple[asyncpg.Connection, Any]:
        """A connection with a transaction begun; once more on a fresh one if the first
        turns out dead at BEGIN (nothing was done on it yet)."""
        for attempt in (1, 2):
            try:
                conn = await pool.acquire(timeout=CONNECT_TIMEOUT_S)
            except _FAILURES as exc:
                await self._failed(pool, operation, None, exc)
                raise StoreError(f"store {operation} failed: {_reason(exc)}") from exc
            transaction = conn.transaction(readonly=not write)
            try:
                await transaction.start()
            except BaseException as exc:
                await _give_back(pool, conn)
                if not isinstance(exc, _FAILURES):
                    raise
                await self._failed(pool, operation, None, exc)
                if attempt == 2 or not isinstance(exc, _GONE):
                    raise StoreError(f"store {operation} failed: {_reason(exc)}") from exc
                continue
            return conn, transaction
        raise AssertionError("unreachable")  # pragma: no cover

    async def _failed(
        self, pool: asyncpg.Pool, operation: str, key: str | None, exc: BaseException
    ) -> None:
        if isinstance(exc, _GONE):
            # One dead connection after a server restart means they all are: replace them.
            await pool.expire_connections()
            if self._healthy:
                _log.error(
                    "the database %s does not answer (%r); operations fail until it does",
                    self._location,
                    exc,
                )
            self._healthy = False
        else:
            _log.warning("store %s failed (conversation=%r): %r", operation, key, exc)

    def _recovered(self) -> None:
        if not self._healthy:
            self._healthy = True
            _log.warning("the database %s answers again", self._location)


async def _give_back(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    try:
        await pool.release(conn)
    except _FAILURES as exc:
        _log.debug("a broken connection was dropped: %r", exc)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
