"""The bot's durable state, behind protocols grouped by who uses them.

:mod:`bot.store.protocols` says what may be asked (conversations, the inbox, feedback,
vectors) and :mod:`bot.store.values` what comes back; a backend implements them all. The
intake, the pipeline, the commands, the runtime and the CLI are typed to the protocols
and never see SQL. :func:`open_store` picks the backend for ``[memory].database``: a path
is an SQLite file, the embedded default (:mod:`bot.store.sqlite`); a ``postgresql://`` URL
is a PostgreSQL database that several replicas share (:mod:`bot.store.postgres`). Both run
the same statements (:mod:`bot.store.sql`).
"""

from __future__ import annotations

from collections.abc import Callable

from bot.store.protocols import ConversationStore, FeedbackStore, Inbox, Store, VectorStore
from bot.store.values import (
    Claim,
    ConversationInfo,
    ConversationState,
    EventOutcome,
    RecoveredEvent,
    StoredTurn,
    TurnStatus,
)

__all__ = [
    "Claim",
    "ConversationInfo",
    "ConversationState",
    "ConversationStore",
    "EventOutcome",
    "FeedbackStore",
    "Inbox",
    "RecoveredEvent",
    "Store",
    "StoredTurn",
    "TurnStatus",
    "VectorStore",
    "is_url",
    "migrate_store",
    "open_store",
]


def is_url(database: str) -> bool:
    """Whether ``database`` names a PostgreSQL server rather than an SQLite file."""
    return database.startswith(URL_SCHEMES)


URL_SCHEMES = ("postgresql://", "postgres://")


async def open_store(
    database: str,
    *,
    replica: str | None = None,
    lease_s: float | None = None,
    pool_size: int | None = None,
) -> Store:
    """Open the store ``database`` names and bring its schema up to date.

    ``replica`` names this process among those sharing the store (default: host, pid and
    a random tag); ``lease_s`` is how long its claims last unless renewed; ``pool_size``
    bounds a server's connections.

    Raises:
        StoreError: it cannot be opened (the message says why).
    """
    # Imported here: only the backend in use is loaded (and with it its driver).
    from bot.store.sql.store import DEFAULT_LEASE_S  # noqa: PLC0415

    lease = DEFAULT_LEASE_S if lease_s is None else lease_s
    if is_url(database):
        from bot.store.postgres import DEFAULT_POOL_SIZE, PostgresStore  # noqa: PLC0415

        return await PostgresStore.open(
            database, replica=replica, lease_s=lease, pool_size=pool_size or DEFAULT_POOL_SIZE
        )
    from bot.store.sqlite import SqliteStore  # noqa: PLC0415

    return await SqliteStore.open(database, replica=replica, lease_s=lease)


async def migrate_store(
    source: str, target: str, *, progress: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Copy the conversations, the inbox and the caches of the store ``source`` names into
    the empty store ``target`` names (an SQLite file into PostgreSQL, typically); both are
    brought to the current schema first. Rows copied, by table.

    Raises:
        StoreError: either cannot be opened, the target holds conversations already, or
            the copy failed (then nothing was written).
    """
    from bot.store.sql.store import SqlStore  # noqa: PLC0415
    from bot.store.sql.transfer import copy_store  # noqa: PLC0415

    stores: list[Store] = []
    try:
        for database in (source, target):
            stores.append(await open_store(database))
        origin, destination = stores
        assert isinstance(origin, SqlStore) and isinstance(destination, SqlStore)
        return await copy_store(origin.database, destination.database, progress=progress)
    finally:
        for store in reversed(stores):
            await store.close()
