"""One turn at a time per conversation, in arrival order, across every replica.

A conversation's turns run one at a time, earliest received first. In one process that is
a queue per conversation ordered by when each event was received. When replicas share
the store, a conversation's questions may be claimed by different replicas; then a turn,
once first in the queue here, also waits until no earlier question of its conversation is
unanswered in the store, whichever replica holds it, and no earlier answer is still being
delivered by any (:meth:`~bot.store.protocols.Inbox.ahead` with ``delivering``). This
replica's own count too: an event it has just claimed is on its way through the intake,
not in the queue yet, and a later question taken meanwhile must not overtake it. An
earlier one may also come here after all: its replica died, and this one took it over
when the lease ran out. It then goes first, though it joined the queue last. Nothing
holds a database transaction or lock while a turn waits or runs; the wait polls the
store, with a backoff, and wakes at once when the local queue changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.contract import InboundMessage
from bot.errors import StoreError
from bot.store import Claim, Inbox

_log = logging.getLogger(__name__)

# Between two looks at the other replicas' questions: short at first (the earlier turn
# may be about to finish), then at most this often.
FIRST_POLL_S = 0.05
MAX_POLL_S = 1.0
# A wait this long is logged once: an earlier question is stuck somewhere.
LONG_WAIT_S = 60.0

# A place in a conversation's queue: as the store orders events, then arrival here.
Place = tuple[datetime, str, str, int]


@dataclass
class _Queue:
    """One conversation's turns here: the one running, and those waiting."""

    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    waiting: set[Place] = field(default_factory=set)
    running: bool = False


class ConversationOrder:
    """Turns of one conversation wait for each other; other conversations never do."""

    def __init__(self, inbox: Inbox, *, shared: bool) -> None:
        self._inbox = inbox
        self._shared = shared
        self._queues: dict[str, _Queue] = {}
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, message: InboundMessage[Any], claim: Claim | None) -> AsyncIterator[None]:
        """Hold the conversation for the turn of ``message``."""
        key = message.conversation
        queue = self._queues.setdefault(key, _Queue())
        received = claim.received_at if claim is not None and claim.received_at else None
        place: Place = (
            received or datetime.now(UTC),
            message.platform,
            message.event_id,
            next(self._arrivals),
        )
        running = False
        try:
            async with queue.changed:
                queue.waiting.add(place)
                queue.changed.notify_all()  # an earlier place may now stop a later one
                await self._until_first(queue, place, message, stored=claim is not None)
                queue.waiting.discard(place)
                queue.running = running = True
            yield
        finally:
            async with queue.changed:
                queue.waiting.discard(place)
                if running:
                    queue.running = False
                queue.changed.notify_all()
                if not queue.waiting and not queue.running:
                    self._queues.pop(key, None)

    async def _until_first(
        self, queue: _Queue, place: Place, message: InboundMessage[Any], *, stored: bool
    ) -> None:
        """Return (holding ``queue.changed``) once ``place`` is first here and, when the
        store is shared and the event is ``stored`` in it, nothing earlier of the
        conversation is unanswered there."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        pause = FIRST_POLL_S
        waited = told = False
        while True:
            if queue.running or place != min(queue.waiting):
                await queue.changed.wait()
                continue
            if not (self._shared and stored):
                return
            # Nothing earlier waits or runs here: whatever earlier the store still has is
            # another replica's, or this one's on its way to the queue.
            ahead = await self._ahead_in_store(message)
            if not ahead:
                return
            if not waited:
                waited = True
                _log.debug(
                    "%s event %s waits for %d earlier question(s) of %s not answered yet",
                    message.platform,
                    message.event_id,
                    ahead,
                    message.conversation,
                )
            if not told and loop.time() - started > LONG_WAIT_S:
                told = True
                _log.warning(
                    "%s event %s has waited %.0f s for %d earlier question(s) of %s not "
                    "answered yet",
                    message.platform,
                    message.event_id,
                    loop.time() - started,
                    ahead,
                    message.conversation,
                )
            # Woken early when the queue here changes (the earlier question joins it).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.changed.wait(), pause)
            pause = min(pause * 2, MAX_POLL_S)

    async def _ahead_in_store(self, message: InboundMessage[Any]) -> int:
        try:
            return await self._inbox.ahead(message.platform, message.event_id, delivering=True)
        except StoreError:
            # Waiting blind could be forever; answering now only risks the order.
            _log.exception(
                "could not read the queue of %s; answering %s without waiting",
                message.conversation,
                message.event_id,
            )
            return 0
