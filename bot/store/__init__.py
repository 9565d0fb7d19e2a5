"""The bot's durable state, behind protocols grouped by who uses them.

:mod:`bot.store.protocols` says what may be asked (conversations, the inbox, feedback,
vectors) and :mod:`bot.store.values` what comes back; a backend implements them all. The
intake, the pipeline, the commands, the runtime and the CLI are typed to the protocols
and never see SQL. :func:`open_store` picks the backend for ``[memory].database``: a path
is an SQLite file, the embedded default (:mod:`bot.store.sqlite`).
"""

from __future__ import annotations

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
    "open_store",
]


async def open_store(database: str) -> Store:
    """Open the store ``database`` names and bring its schema up to date.

    Raises:
        StoreError: it cannot be opened (the message says why).
    """
    # Imported here: only the backend in use is loaded (and with it its driver).
    from bot.store.sqlite import SqliteStore  # noqa: PLC0415

    return await SqliteStore.open(database)
