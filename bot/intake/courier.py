"""The outbox's courier: an answer the platform did not take at once is delivered until it
lands, or until ``[intake].delivery_deadline_s`` is up, across restarts.

The answer is already in the store (``Inbox.hold``) when the courier gets it, so a crash
or a shutdown loses nothing: the next start hands it back (``Inbox.recover``) and the
courier goes on. Between attempts it backs off, doubling, and waits at least as long as
the platform asked (:class:`~bot.errors.DeliveryFailed`'s ``retry_after_s``). When the
time is up it logs one line for the operator, tells the asker in one short line if the
platform takes anything at all, and closes the event as undelivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.adapters.base import Adapter
from bot.contract import InboundMessage, Reply
from bot.core import metrics
from bot.core.tasks import TaskTracker
from bot.errors import DeliveryFailed, StoreError
from bot.pipeline.wording import UNDELIVERED
from bot.store import EventOutcome, Inbox

_log = logging.getLogger(__name__)

# The longest pause between two attempts (a platform's own hint may ask for more).
MAX_PAUSE_S = 60.0


class Courier:
    """Delivers held answers in the background; one instance serves every platform."""

    def __init__(
        self,
        inbox: Inbox,
        *,
        first_pause_s: float,
        deadline_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._inbox = inbox
        self._first_pause_s = max(first_pause_s, 0.05)
        self.deadline_s = deadline_s
        self._clock = clock
        self._tasks = TaskTracker()
        # Deliveries pausing between attempts: shutdown cancels these at once, and lets an
        # attempt under way finish (a post half-recorded would be posted twice).
        self._pausing: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        """Answers waiting for delivery in this process."""
        return len(self._tasks)

    def deliver_by(self) -> datetime:
        """When an answer held now is given up."""
        return self._clock() + timedelta(seconds=self.deadline_s)

    def send(
        self,
        message: InboundMessage[Any],
        adapter: Adapter[Any],
        reply: Reply,
        *,
        reply_id: str | None,
        deliver_by: datetime,
        fence: int | None = None,
        at_once: bool = False,
    ) -> None:
        """Deliver ``reply`` by ``deliver_by``; ``at_once`` skips the first pause (an
        answer handed back after a restart has waited already). ``fence`` is the event's,
        as this replica holds it."""
        work = self._deliver(
            message, adapter, reply, _Held(reply_id, deliver_by, fence), at_once=at_once
        )
        name = f"deliver:{message.platform}:{message.event_id}"
        try:
            self._tasks.spawn(work, name=name)
        except RuntimeError:
            _log.info("%s left for the next start: shutting down", name)

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop delivering: what is still waiting stays held, for the next start.

        Deliveries pausing between attempts stop at once; an attempt under way gets
        ``grace_s`` to finish.
        """
        for task in self._pausing:
            task.cancel()
        await self._tasks.drain(grace_s=grace_s, final=True)

    async def _deliver(
        self,
        message: InboundMessage[Any],
        adapter: Adapter[Any],
        reply: Reply,
        held: _Held,
        *,
        at_once: bool,
    ) -> None:
        reply_id, deliver_by = held.reply_id, held.deliver_by
        label = f"{message.platform} event {message.event_id} in {message.conversation}"
        pause = 0.0 if at_once else self._first_pause_s
        attempts = 0
        while True:
            left = (deliver_by - self._clock()).total_seconds()
            if left <= 0:
                await self._give_up(message, adapter, label, attempts, held.fence)
                return
            await self._pause(min(pause, left))
            attempts += 1
            stream = adapter.open_reply(message, reply_id=reply_id)
            try:
                await stream.on_reply(reply)
            except Exception as exc:
                hint = exc.retry_after_s if isinstance(exc, DeliveryFailed) else None
                _log.warning(
                    "delivering the answer to %s failed again (attempt %d): %s",
                    label,
                    attempts,
                    _reason(exc),
                    exc_info=not isinstance(exc, DeliveryFailed),
                )
                pause = max(hint or 0.0, min(max(pause, self._first_pause_s) * 2, MAX_PAUSE_S))
            else:
                _log.info("delivered the answer to %s (attempt %d)", label, attempts)
                await self._close(message, "answered", (stream.reply_id, reply_id), held.fence)
                return
            # A part may have gone out before the failure: the next attempt edits it.
            reply_id = stream.reply_id or reply_id

    async def _pause(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pausing.add(task)
        try:
            await asyncio.sleep(seconds)
        finally:
            self._pausing.discard(task)

    async def _give_up(
        self,
        message: InboundMessage[Any],
        adapter: Adapter[Any],
        label: str,
        attempts: int,
        fence: int | None,
    ) -> None:
        _log.error(
            "gave up delivering the answer to %s after %d attempt(s) and %g s "
            "([intake].delivery_deadline_s); the answer is saved in the conversation",
            label,
            attempts,
            self.deadline_s,
        )
        metrics.UNDELIVERED.labels(message.platform).inc()
        try:
            await adapter.notify(message, UNDELIVERED, private=False)
        except Exception as exc:
            _log.warning("could not tell the asker either: %s", _reason(exc))
        await self._close(message, "undelivered", (None, None), fence)

    async def _close(
        self,
        message: InboundMessage[Any],
        outcome: EventOutcome,
        reply_ids: tuple[str | None, str | None],
        fence: int | None,
    ) -> None:
        new_reply_id, old_reply_id = reply_ids
        platform, event_id = message.platform, message.event_id
        try:
            if new_reply_id is not None and new_reply_id != old_reply_id:
                await self._inbox.record_reply(platform, event_id, new_reply_id, fence=fence)
            await self._inbox.finish(platform, event_id, outcome, fence=fence)
        except StoreError:
            _log.exception("could not close %s event %s", message.platform, message.event_id)


@dataclass(frozen=True, slots=True)
class _Held:
    """What the outbox keeps of one answer besides its text."""

    reply_id: str | None
    deliver_by: datetime
    fence: int | None


def _reason(exc: BaseException) -> str:
    # Bounded: an exception can carry a whole response body.
    return f"{type(exc).__name__}: {str(exc)[:300]}"
