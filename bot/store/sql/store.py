"""A store made of the shared SQL's parts, on one backend's database."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

from bot.errors import StoreError
from bot.store.sql.conversations import SqlConversations, SqlFeedback
from bot.store.sql.coordination import SqlRateLimits, SqlReplicas, SqlShards
from bot.store.sql.driver import Database
from bot.store.sql.inbox import SqlInbox
from bot.store.sql.vectors import SqlVectors


@dataclass(frozen=True, slots=True)
class Schema:
    """A backend's schema version, and how to read the version a database is at."""

    version: int
    version_sql: str


# How long a replica's claim on an event (or a shard) lasts unless it renews it: the
# longest another replica waits before taking over the work of one that died.
DEFAULT_LEASE_S = 30.0


def replica_name() -> str:
    """A name for this process among the replicas: host, pid and a random tag (a pid is
    reused after a restart; the tag is not)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class SqlStore:
    """:class:`~bot.store.protocols.Store` on a :class:`~bot.store.sql.driver.Database`.

    ``shared`` says whether other processes may serve the same data at once (PostgreSQL);
    an SQLite file is served by one process.
    """

    def __init__(
        self,
        db: Database,
        *,
        shared: bool,
        schema: Schema,
        replica: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        if lease_s <= 0:
            raise ValueError("a lease lasts a positive number of seconds")
        self._db = db
        self._schema = schema
        self._shared = shared
        self._replica = replica or replica_name()
        self._lease_s = lease_s
        self._conversations = SqlConversations(db)
        self._inbox = SqlInbox(db, replica=self._replica, lease_s=lease_s)
        self._feedback = SqlFeedback(db)
        self._vectors = SqlVectors(db)
        self._rate_limits = SqlRateLimits(db)
        self._replicas = SqlReplicas(db, replica=self._replica, stale_s=lease_s)
        self._shards = SqlShards(db, replica=self._replica, lease_s=lease_s)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._db.location!r} replica={self._replica!r}>"

    @property
    def location(self) -> str:
        return self._db.location

    @property
    def database(self) -> Database:
        """The backend's database, for whole-store work (``store migrate``)."""
        return self._db

    @property
    def replica(self) -> str:
        return self._replica

    @property
    def shared(self) -> bool:
        return self._shared

    @property
    def lease_s(self) -> float:
        """How long this replica's leases last unless renewed."""
        return self._lease_s

    @property
    def conversations(self) -> SqlConversations:
        return self._conversations

    @property
    def inbox(self) -> SqlInbox:
        return self._inbox

    @property
    def feedback(self) -> SqlFeedback:
        return self._feedback

    @property
    def vectors(self) -> SqlVectors:
        return self._vectors

    @property
    def rate_limits(self) -> SqlRateLimits:
        return self._rate_limits

    @property
    def replicas(self) -> SqlReplicas:
        return self._replicas

    @property
    def shards(self) -> SqlShards:
        return self._shards

    async def health(self) -> str | None:
        try:
            async with self._db.transaction("health", None, write=False) as conn:
                row = await conn.fetchone(self._schema.version_sql)
        except StoreError as exc:
            return f"the database does not answer ({exc})"
        version = int(row[0]) if row is not None else 0
        if version != self._schema.version:
            return f"the schema is at version {version}, not {self._schema.version}"
        return None

    async def take_ownership(self) -> None:
        await self._db.take_ownership()

    async def close(self) -> None:
        await self._db.close()
