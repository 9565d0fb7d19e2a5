"""The intake: one instance serves every adapter of the process.

It owns the chain of :mod:`bot.intake.chain`, the in-flight turns (tracked, not only the
pipeline's background tasks) and the recovery of events a crash left unanswered.

Lifecycle: :meth:`Intake.start` (this replica joins the others and keeps its leases),
:meth:`Intake.register` each adapter, :meth:`Intake.recover` once they are started, then
adapters call :meth:`Intake.submit`. When replicas share the store, the intake also takes
over, every few seconds, the events of replicas that died (:mod:`bot.intake.cluster`).
At shutdown :meth:`Intake.close_door` stops taking events (a platform redelivers them, or
they were never claimed), and :meth:`Intake.drain` lets in-flight turns finish within a
grace period; the rest are cancelled and released, for another replica or the next start.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bot.adapters.base import Adapter, Submission
from bot.config import IntakeSettings
from bot.contract import InboundMessage, Platform, Rating, Reply
from bot.core import metrics
from bot.core.tasks import TaskTracker
from bot.core.text import valid_text
from bot.errors import StoreError
from bot.intake.chain import (
    Context,
    FollowUps,
    HandleCommands,
    IgnoreBots,
    InboxClaim,
    Queue,
    RateLimit,
    SeenRecently,
    SkipEmpty,
    StartTurn,
    compose,
    has_spoken,
)
from bot.intake.cluster import Cluster, LeaseKeeper
from bot.intake.codec import decode_message, decode_reply
from bot.intake.commands import Commands
from bot.intake.courier import Courier
from bot.intake.delivery import GuardedReply
from bot.intake.order import ConversationOrder
from bot.intake.ratelimit import Buckets, LocalBuckets
from bot.pipeline.orchestrator import Pipeline
from bot.pipeline.wording import GIVEN_UP
from bot.store import Store

_log = logging.getLogger(__name__)

# A turn that crashed the process this many times is quarantined, not tried again.
MAX_ATTEMPTS = 2


class Intake:
    """Takes inbound messages from every adapter; answers each platform event once."""

    def __init__(
        self,
        *,
        pipeline: Pipeline,
        store: Store,
        settings: IntakeSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        inbox = store.inbox
        self._inbox = inbox
        self._conversations = store.conversations
        self._feedback = store.feedback
        self._settings = settings
        self._adapters: dict[str, Adapter[Any]] = {}
        self._turns = TaskTracker()
        self._open = True
        # The first recovery takes only events received before this process could take
        # any; later ones (replicas sharing the store) go by leases alone.
        self._started: datetime | None = datetime.now(UTC)
        self._cluster = Cluster(store)
        self._leases = LeaseKeeper(store, self._reap)
        busy: Counter[str] = Counter()
        # Shared: counted, limited and ordered in the store, across the replicas.
        shared = store.shared
        queue_inbox = inbox if shared else None
        buckets: Buckets = store.rate_limits if shared else LocalBuckets(clock)
        self._courier = Courier(
            inbox,
            first_pause_s=settings.delivery_backoff_s,
            deadline_s=settings.delivery_deadline_s,
        )
        start = StartTurn(
            pipeline=pipeline,
            inbox=inbox,
            courier=self._courier,
            order=ConversationOrder(inbox, shared=shared),
            tasks=self._turns,
            busy=busy,
            settings=settings,
        )
        self._recovered = compose([Queue(busy, queue_inbox, tell=False)], start)
        self._fresh = compose(
            [
                SeenRecently(),
                IgnoreBots(respond_to_bots=settings.respond_to_bots),
                FollowUps(store.conversations),
                SkipEmpty(inbox),
                HandleCommands(
                    Commands(conversations=store.conversations, reset=pipeline.reset), inbox
                ),
                RateLimit(
                    per_minute=settings.rate_limit_per_minute,
                    burst=settings.rate_limit_burst,
                    buckets=buckets,
                    started=self._started,
                    inbox=inbox,
                ),
                InboxClaim(inbox),
                Queue(busy, queue_inbox),
            ],
            start,
        )

    @property
    def cluster(self) -> Cluster:
        """The replicas sharing the store (for adapters that divide work among them)."""
        return self._cluster

    async def start(self) -> None:
        """Join the other replicas and keep this one's leases alive from now on."""
        await self._cluster.start()
        self._leases.start()

    @property
    def in_flight(self) -> int:
        """Turns running or waiting for their conversation."""
        return len(self._turns)

    def register(self, adapter: Adapter[Any]) -> None:
        """Make ``adapter`` the one that answers events of its platform."""
        self._adapters[adapter.platform] = adapter

    async def submit(self, message: InboundMessage[Any]) -> Submission:
        """Take one inbound message through the chain.

        Returns once the message was ignored, refused, answered (a command) or its turn
        started; the turn itself runs in the background (``Submission.done``).
        Raises ``KeyError`` for a platform with no registered adapter (a wiring bug).
        """
        adapter = self._adapters[message.platform]
        if not self._open:
            return Submission("closed")
        text = valid_text(message.text)
        if text != message.text:
            _log.info("%s event %s held bytes that are not text; replaced", *_event(message))
            message = dataclasses.replace(message, text=text)
        submission = await self._fresh(Context(message, adapter))
        metrics.count_event(message.platform, submission.outcome)
        return submission

    async def feedback(
        self, platform: Platform, event_id: str, user_id: str, rating: Rating
    ) -> bool:
        """Store a reader's vote on the answer to ``(platform, event_id)`` with its turn.

        A :data:`~bot.adapters.base.FeedbackSink`. Returns False when the turn is unknown
        or was reset, or when the store failed (logged); never raises except
        ``CancelledError``.
        """
        try:
            stored = await self._feedback.record(platform, event_id, user_id, rating)
        except StoreError:
            _log.exception("could not store feedback on %s event %s", platform, event_id)
            return False
        if not stored:
            _log.info("feedback on %s event %s has no turn to go with", platform, event_id)
        return stored

    async def has_answered(self, conversation: str) -> bool:
        """Whether the bot has a conversation in ``conversation`` (and has not forgotten it).

        For adapters whose triggers depend on it, such as Discord's follow-ups in a thread
        the bot answered in, with no mention. A store that fails answers False: the
        message then needs a mention, which is the safe side.
        """
        return await has_spoken(self._conversations, conversation)

    async def recover(self) -> int:
        """Answer, once, the events a crash left unanswered; returns how many were started.

        Runs at start-up, after the adapters started. Events older than
        ``[intake].inbox_max_age_s`` are marked expired, and events whose turn already
        crashed the process twice are quarantined (the store logs each) and their authors
        told, once, in the reply the crash left half-done.
        """
        platforms = [name for name, adapter in self._adapters.items() if adapter.recovers]
        since, self._started = self._started, None
        try:
            events = await self._inbox.recover(
                platforms=platforms,
                max_age_s=self._settings.inbox_max_age_s,
                max_attempts=MAX_ATTEMPTS,
                received_before=since,
            )
        except StoreError:
            _log.exception("could not read the inbox; unanswered events wait for a restart")
            return 0
        started = 0
        for event in events:
            adapter = self._adapters[event.platform]
            try:
                message = decode_message(event.message, adapter)
                reply = None if event.reply is None else decode_reply(event.reply)
            except ValueError:
                _log.exception("inbox event %s:%s is unreadable", event.platform, event.event_id)
                continue
            if reply is not None and event.deliver_by is not None:
                _log.info(
                    "delivering the answer to %s event %s held before the restart",
                    event.platform,
                    event.event_id,
                )
                self._courier.send(
                    message,
                    adapter,
                    reply,
                    reply_id=event.reply_id,
                    deliver_by=event.deliver_by,
                    fence=event.fence,
                    at_once=True,
                )
                metrics.TAKEN_OVER.inc()
                started += 1
                continue
            if event.claim is None:
                metrics.QUARANTINED.inc()
                await self._give_up(message, adapter, event.reply_id)
                continue
            _log.info(
                "answering %s event %s left unanswered (attempt %d, reply %s)",
                event.platform,
                event.event_id,
                event.attempts,
                event.reply_id or "not posted",
            )
            context = Context(message, adapter, claim=event.claim, reply_id=event.reply_id)
            metrics.TAKEN_OVER.inc()
            await self._recovered(context)
            started += 1
        return started

    async def _reap(self) -> None:
        """Take over what replicas that died left (shared stores, every few seconds)."""
        if not self._open:
            return
        started = await self.recover()
        if started:
            _log.info("took over %d event(s) whose replica stopped renewing its lease", started)

    async def _give_up(
        self,
        message: InboundMessage[Any],
        adapter: Adapter[Any],
        reply_id: str | None,
    ) -> None:
        """Tell the author of a quarantined question, in the reply a crash left half-done."""
        reply = Reply(
            question=message.text, body=GIVEN_UP, conversation=message.conversation, status="failed"
        )
        stream = adapter.open_reply(message, reply_id=reply_id)
        label = f"quarantined {message.platform} event {message.event_id}"
        await GuardedReply(
            stream,
            label=label,
            retries=self._settings.delivery_retries,
            backoff_s=self._settings.delivery_backoff_s,
        ).deliver(reply)

    def close_door(self) -> None:
        """Take no new events (shutdown); turns already taken go on."""
        self._open = False

    async def drain(self, grace_s: float) -> bool:
        """Wait up to ``grace_s`` for in-flight turns; cancel the rest. True if all finished.

        A cancelled turn's event stays pending in the inbox, without counting as a crash,
        and is answered at the next start.
        """
        self.close_door()
        await self._leases.stop_reaping()
        if self._turns:
            _log.info("waiting up to %.1f s for %d turn(s) in flight", grace_s, len(self._turns))
        finished = await self._turns.drain(grace_s=grace_s, final=True)
        if self._courier:
            _log.info("%d answer(s) wait for delivery at the next start", len(self._courier))
        # Held answers lose nothing by waiting: they stay in the outbox for the next start.
        await self._courier.close()
        await self.stop()
        return finished

    async def stop(self) -> None:
        """Stop keeping leases and beating, letting go of what is held. Safe to repeat."""
        await self._leases.stop()
        await self._cluster.leave()


def _event(message: InboundMessage[Any]) -> tuple[str, str]:
    return message.platform, message.event_id
