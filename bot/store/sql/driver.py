"""What the shared SQL needs of a backend: a transaction, and a connection inside it.

A :class:`Conn` runs one statement at a time inside the transaction it belongs to: ``?``
placeholders, :class:`~datetime.datetime` parameters (a driver stores them as its database
wants), rows readable by column name. Timestamps come back as whatever the database keeps
(ISO text in SQLite, ``timestamptz`` in PostgreSQL); :func:`moment` reads either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

Row = Any
"""A result row: ``row["column"]`` and ``row[0]`` both work (sqlite3.Row, asyncpg.Record)."""

# A bound for "no bound": later than any stamp, and still a valid timestamp in both.
NEVER = datetime(9999, 12, 31, tzinfo=UTC)


class Conn(Protocol):
    """One connection, inside one transaction."""

    async def fetchall(self, sql: str, *params: Any) -> list[Row]: ...

    async def fetchone(self, sql: str, *params: Any) -> Row | None: ...

    async def execute(self, sql: str, *params: Any) -> int:
        """Run a data-changing statement; the number of rows it changed."""

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


class Database(Protocol):
    """A backend's connections, as the shared SQL uses them."""

    @property
    def location(self) -> str:
        """Where the data lives, for operators (a path, or a URL without its password)."""

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``: for the few statements that differ."""

    @property
    def exclusive(self) -> bool:
        """True when this process is known to be the only one serving the data (then no
        other process's lease can be alive)."""

    def transaction(
        self, operation: str, key: str | None, *, write: bool
    ) -> AbstractAsyncContextManager[Conn]:
        """One transaction; the backend's errors leave it as :class:`~bot.errors.StoreError`
        (``operation`` and ``key`` name it in the log)."""

    async def take_ownership(self) -> None: ...

    async def close(self) -> None: ...


def now() -> datetime:
    return datetime.now(UTC)


def moment(value: object) -> datetime:
    """A stored timestamp as an aware datetime, from ISO text or a datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value))


def placeholders(count: int) -> str:
    return ", ".join("?" * count)
