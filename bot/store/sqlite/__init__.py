"""The SQLite backend of the store: one file, served by one process, the embedded default.

:mod:`.database` owns the file's connections and transactions and adapts the shared SQL
(:mod:`bot.store.sql`) to SQLite; :mod:`.migrations` builds the schema. This package is the
only place in the bot that imports ``aiosqlite``.
"""

from __future__ import annotations

import os

from bot.store.sql.store import DEFAULT_LEASE_S, Schema, SqlStore
from bot.store.sqlite.database import Database
from bot.store.sqlite.migrations import MIGRATIONS, SCHEMA_VERSION, migrate

__all__ = ["SCHEMA_VERSION", "SqliteStore"]


class SqliteStore(SqlStore):
    """:class:`~bot.store.protocols.Store` on one SQLite file (or ``":memory:"``).

    Build it with :meth:`open` in ``main()``, pass its parts in, and :meth:`close` it at
    shutdown. Every operation is a coroutine, safe to call from many tasks at once.
    """

    def __init__(
        self, db: Database, *, replica: str | None = None, lease_s: float = DEFAULT_LEASE_S
    ) -> None:
        """Wrap an open database; use :meth:`open` instead."""
        super().__init__(
            db,
            shared=False,
            schema=Schema(SCHEMA_VERSION, "PRAGMA user_version"),
            replica=replica,
            lease_s=lease_s,
        )
        self._file = db

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        replica: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> SqliteStore:
        """Open (creating if needed) the database at ``path`` and migrate its schema.

        Raises:
            StoreError: the file cannot be created or opened, is not a database, or its
                schema is newer than this code knows.
        """
        db = await Database.open(path, lambda conn: migrate(conn, MIGRATIONS))
        return cls(db, replica=replica, lease_s=lease_s)

    def __repr__(self) -> str:
        state = "closed" if self._file.closed else "open"
        return f"<SqliteStore {self._file.path!r} {state}>"
