"""The PostgreSQL backend of the store: one database shared by any number of replicas.

:mod:`.database` owns the ``asyncpg`` pool and adapts the shared SQL (:mod:`bot.store.sql`)
to PostgreSQL; :mod:`.migrations` builds the same schema as SQLite's, version for version.
This package is the only place in the bot that imports ``asyncpg``.
"""

from __future__ import annotations

from bot.core.urls import redact
from bot.store.postgres.database import Database
from bot.store.postgres.migrations import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from bot.store.sql.store import DEFAULT_LEASE_S, Schema, SqlStore

__all__ = ["SCHEMA_VERSION", "PostgresStore", "redact", "schema_version"]

DEFAULT_POOL_SIZE = 10


class PostgresStore(SqlStore):
    """:class:`~bot.store.protocols.Store` on a PostgreSQL database (``postgresql://`` URL)."""

    def __init__(
        self, db: Database, *, replica: str | None = None, lease_s: float = DEFAULT_LEASE_S
    ) -> None:
        """Wrap an open database; use :meth:`open` instead."""
        super().__init__(
            db,
            shared=True,
            schema=Schema(SCHEMA_VERSION, "SELECT version FROM schema_version"),
            replica=replica,
            lease_s=lease_s,
        )
        self._server = db

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        replica: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> PostgresStore:
        """Connect to the database at ``url`` and migrate its schema.

        Raises:
            StoreError: the server cannot be reached or refuses the login, or the schema
                is newer than this code knows.
        """
        db = await Database.open(url, lambda conn: migrate(conn, MIGRATIONS), pool_size=pool_size)
        return cls(db, replica=replica, lease_s=lease_s)

    def __repr__(self) -> str:
        state = "closed" if self._server.closed else "open"
        return f"<PostgresStore {self._server.location!r} {state}>"
