"""One turn at a time per conversation, in arrival order, across every replica.

In one process a FIFO lock per conversation is the whole story: turns take it in the order
they were claimed. When replicas share the store, a conversation's questions may be
claimed by different replicas; then a turn also waits until no earlier unanswered question
of its conversation is held by another replica (:meth:`~bot.store.protocols.Inbox.ahead`
with ``elsewhere``). It polls, with a backoff, and holds no database transaction or lock
while it waits or while the turn runs: an earlier question whose replica died is taken
over when its lease runs out and answered first, then this one goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from bot.contract import InboundMessage
from bot.errors import StoreError
from bot.store import Claim, Inbox

_log = logging.getLogger(__name__)

# Between two looks at the conversation's queue: short at first (the earlier turn may be
# about to finish), then at most this often.
FIRST_POLL_S = 0.05
MAX_POLL_S = 1.0
# A wait this long is logged once: an earlier question is stuck somewhere.
LONG_WAIT_S = 60.0


class ConversationOrder:
    """Turns of one conversation wait for each other; other conversations never do."""

    def __init__(self, inbox: Inbox, *, shared: bool) -> None:
        self._inbox = inbox
        self._shared = shared
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @contextlib.asynccontextmanager
    async def turn(self, message: InboundMessage[Any], claim: Claim | None) -> AsyncIterator[None]:
        """Hold the conversation for the turn of ``message``."""
        lock = self._locks.get(message.conversation)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[message.conversation] = lock
        async with lock:
            if self._shared and claim is not None:
                await self._wait_elsewhere(message)
            yield

    async def _wait_elsewhere(self, message: InboundMessage[Any]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        pause = FIRST_POLL_S
        told = False
        while True:
            try:
                ahead = await self._inbox.ahead(message.platform, message.event_id, elsewhere=True)
            except StoreError:
                # Waiting blind could be forever; answering now only risks the order.
                _log.exception(
                    "could not read the queue of %s; answering %s without waiting",
                    message.conversation,
                    message.event_id,
                )
                return
            if not ahead:
                return
            if not told and loop.time() - started > LONG_WAIT_S:
                told = True
                _log.warning(
                    "%s event %s has waited %.0f s for %d earlier question(s) of %s held by "
                    "other replicas",
                    message.platform,
                    message.event_id,
                    loop.time() - started,
                    ahead,
                    message.conversation,
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_POLL_S)
