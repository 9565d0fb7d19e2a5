"""The one door every inbound message goes through, as a chain of small steps.

    submit(message)
      │    SeenRecently    an event this process already handled (a platform's retry)
      │ 1. IgnoreBots      the bot's own messages, and other bots' unless configured
      │    FollowUps       a message not addressed to the bot, in a conversation it has
      │                    no part in: ignored
      │    SkipEmpty       nothing left to answer: a hint, no turn
      │ 2. HandleCommands  reset / sources / session / help, answered here; a message
      │                    written like a command that is none (/foo) gets the list
      │ 3. RateLimit       per-user token bucket; over it, a reply saying when to retry
      │ 4. Inbox           claim (platform, event id) with the pending question, in one
      │                    transaction; a duplicate stops here
      │ 5. Queue           a busy conversation: "yours is next" (and behind how many)
      ▼ 6. StartTurn       the conversation's turn, in arrival order across replicas;
                           the pipeline, then delivery, in a tracked in-flight task

What is answered without a turn (a command, a hint, a refusal) is recorded as handled in
the store, so a redelivery of the event, on any replica sharing it, is a duplicate; a
question is recorded by its claim.

Each step is a callable ``step(context, next)`` that either answers and returns, or calls
``next``: the shape of bolt-python's middleware, so each can be tested alone with a
stand-in ``next``. Events recovered from the inbox after a crash skip steps 1-4: they were
already accepted once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.adapters.base import Adapter, Submission
from bot.config import IntakeSettings
from bot.contract import InboundMessage, Reply
from bot.core import metrics
from bot.core.tasks import TaskTracker
from bot.errors import StoreError
from bot.intake.codec import encode_message, encode_reply
from bot.intake.commands import Commands, NotACommand, parse_command
from bot.intake.courier import Courier
from bot.intake.delivery import GuardedReply
from bot.intake.order import ConversationOrder
from bot.intake.ratelimit import Buckets, describe_wait
from bot.pipeline.orchestrator import Pipeline
from bot.pipeline.wording import EMPTY_HINT
from bot.store import Claim, ConversationStore, Inbox

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class Context:
    """One inbound message on its way through the chain."""

    message: InboundMessage[Any]
    adapter: Adapter[Any]
    claim: Claim | None = None
    # The reply a crashed earlier attempt had posted; the new attempt edits it.
    reply_id: str | None = None


Next = Callable[[Context], Awaitable[Submission]]
Step = Callable[[Context, Next], Awaitable[Submission]]


def compose(steps: Sequence[Step], last: Next) -> Next:
    """``steps[0]`` runs first and hands on to ``steps[1]`` ... and finally to ``last``."""
    handler = last
    for step in reversed(steps):
        handler = _link(step, handler)
    return handler


def _link(step: Step, after: Next) -> Next:
    async def run(context: Context) -> Submission:
        return await step(context, after)

    return run


# ----------------------------------------------------------------------------- steps


class SeenRecently:
    """Stops a redelivery of an event this process has already handled.

    Commands, refusals and hints never reach the inbox, so without this a platform's retry
    (Slack resends what it did not see acknowledged in 3 s) would answer them twice. It is
    a bounded in-process memory; the durable guarantee for questions is :class:`Inbox`.
    """

    def __init__(self, *, size: int = 4096) -> None:
        self._size = size
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def __call__(self, context: Context, after: Next) -> Submission:
        key = (context.message.platform, context.message.event_id)
        if key in self._seen:
            self._seen.move_to_end(key)
            return Submission("duplicate")
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return await after(context)


class IgnoreBots:
    """Step 1: never answer ourselves; answer other bots only when configured to."""

    def __init__(self, *, respond_to_bots: bool) -> None:
        self._respond_to_bots = respond_to_bots

    async def __call__(self, context: Context, after: Next) -> Submission:
        author = context.message.author
        if author.is_self or (author.is_bot and not self._respond_to_bots):
            return Submission("ignored")
        return await after(context)


class FollowUps:
    """A follow-up (``InboundMessage.follow_up``) is answered only where the bot has spoken.

    "Has spoken" is read from the store, so it survives restarts: the conversation has at
    least one turn. When the store fails the follow-up is ignored (it was not addressed
    to the bot, so staying quiet is the safe side).
    """

    def __init__(self, conversations: ConversationStore) -> None:
        self._conversations = conversations

    async def __call__(self, context: Context, after: Next) -> Submission:
        message = context.message
        if message.follow_up and not await has_spoken(self._conversations, message.conversation):
            return Submission("ignored")
        return await after(context)


async def has_spoken(conversations: ConversationStore, conversation: str) -> bool:
    """Whether the bot has turns in ``conversation``; False when the store fails (logged)."""
    try:
        info = await conversations.info(conversation)
    except StoreError:
        _log.exception("could not tell whether %s is a conversation of mine", conversation)
        return False
    return info is not None and info.turn_count > 0


class SkipEmpty:
    """A message with nothing left to answer (a bare mention) gets a hint, not a turn."""

    def __init__(self, inbox: Inbox | None = None) -> None:
        self._inbox = inbox

    async def __call__(self, context: Context, after: Next) -> Submission:
        if context.message.text.strip():
            return await after(context)
        if not await first_time(self._inbox, context.message):
            return Submission("duplicate")
        await _notify(context, EMPTY_HINT, private=True)
        return Submission("empty")


class HandleCommands:
    """Step 2: commands are answered here and never reach the pipeline.

    Neither does a message written like a command that is none (``/foo``): researching
    it would be a slow answer to a typo, so its author gets the list of commands.
    A command is answered once: a replay of its event (a platform's retry after a restart,
    a replayed signed request) is recognised durably, as the inbox recognises questions.
    """

    def __init__(self, commands: Commands, inbox: Inbox) -> None:
        self._commands = commands
        self._inbox = inbox

    async def __call__(self, context: Context, after: Next) -> Submission:
        message = context.message
        command = parse_command(message.text, context.adapter.command_prefix)
        if command is None:
            return await after(context)
        if not await first_time(self._inbox, message):
            return Submission("duplicate")
        if isinstance(command, NotACommand):
            reply = self._commands.not_a_command(command, context.adapter)
        else:
            reply = await self._commands.run(command, message, context.adapter)
        await _notify(context, reply.text, private=reply.private)
        return Submission("command")


class RateLimit:
    """Step 3: a token bucket per user; over it, a friendly refusal with a time.

    It limits how fast people ask, so questions sent before this process started (read
    back from a channel's history after downtime, or redelivered late) do not count:
    whoever asked several while the bot was down is not asking too fast now. The buckets
    live in the store when replicas share it (a user's questions may land on any of
    them); if that store fails, the question is let through.
    """

    def __init__(
        self,
        *,
        per_minute: float,
        burst: int,
        buckets: Buckets,
        started: datetime | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        self._default = per_minute
        self._burst = burst
        self._buckets = buckets
        self._started = started
        self._inbox = inbox

    async def __call__(self, context: Context, after: Next) -> Submission:
        rate = context.adapter.rate_limit_per_minute
        rate = self._default if rate is None else rate
        message = context.message
        if rate <= 0 or (self._started is not None and message.sent_at < self._started):
            return await after(context)
        key = f"{message.platform}:{message.author.id}"
        try:
            wait = await self._buckets.take(key, per_minute=rate, burst=self._burst)
        except StoreError:
            _log.exception("could not read the rate limit of %s; letting it through", key)
            wait = 0.0
        if wait <= 0:
            return await after(context)
        if not await first_time(self._inbox, message):
            return Submission("duplicate")
        _log.info("rate limit: %s by %s refused for %.1f s", message.event_id, key, wait)
        await _notify(
            context,
            "You are asking faster than I can research. I did not take that question; "
            f"please ask it again {describe_wait(wait)}.",
            private=True,
        )
        return Submission("rate_limited")


class InboxClaim:
    """Step 4: claim the event with its pending question; a duplicate stops here.

    When the store itself fails, the question is still answered (without the guarantee,
    and the answer says it will not be remembered): refusing would lose it for sure.
    """

    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox

    async def __call__(self, context: Context, after: Next) -> Submission:
        message = context.message
        try:
            claim = await self._inbox.claim(
                message.platform,
                message.event_id,
                message.conversation,
                message.text,
                encode_message(message, context.adapter),
            )
        except StoreError:
            _log.exception("could not record event %s; answering it anyway", message.event_id)
            return await after(context)
        if claim is None:
            _log.info("duplicate event %s:%s ignored", message.platform, message.event_id)
            return Submission("duplicate")
        context.claim = claim
        return await after(context)


class Queue:
    """Step 5: tell the author when their question waits behind others.

    Counted here, in process, when one process serves the store; counted in the store
    (every replica's unanswered questions of the conversation) when replicas share it.
    The order itself is kept by :class:`StartTurn`; different conversations never wait
    for each other.
    """

    def __init__(
        self, busy: Counter[str], inbox: Inbox | None = None, *, tell: bool = True
    ) -> None:
        self._busy = busy
        self._inbox = inbox
        # Recovered events were told once, when first taken: not again by a take-over.
        self._tell = tell

    async def __call__(self, context: Context, after: Next) -> Submission:
        key = context.message.conversation
        ahead = self._busy[key]
        self._busy[key] += 1
        try:
            if self._tell and self._inbox is not None and context.claim is not None:
                ahead = await self._ahead(context)
            if self._tell and ahead:
                others = "yours is next" if ahead == 1 else f"yours is queued behind {ahead}"
                await _notify(
                    context,
                    f"I am still working on an earlier question here; {others}.",
                    private=False,
                )
            return await after(context)
        except BaseException:
            _release(self._busy, key)
            raise

    async def _ahead(self, context: Context) -> int:
        assert self._inbox is not None
        message = context.message
        try:
            return await self._inbox.ahead(message.platform, message.event_id)
        except StoreError:
            _log.exception("could not count the questions ahead of %s", message.event_id)
            return self._busy[message.conversation] - 1


class StartTurn:
    """Step 6: run the pipeline and deliver its reply, in a tracked in-flight task.

    A turn waits for its conversation (:class:`~bot.intake.order.ConversationOrder`):
    one at a time, in arrival order, whichever replica took the earlier questions. The
    answer is saved with the conversation, then held in the inbox before it is posted
    (the outbox), so the next turn, wherever it runs, sees it: one the platform does not
    take within a few quick attempts goes to the :class:`Courier`, which keeps trying; a
    crash from then on re-delivers it rather than answering again. Every write about the
    event carries the claim's fence: when another replica has taken the event over (this
    one stopped renewing its lease), the answer is not posted and nothing is overwritten.
    """

    def __init__(
        self,
        *,
        pipeline: Pipeline,
        inbox: Inbox,
        courier: Courier,
        order: ConversationOrder,
        tasks: TaskTracker,
        busy: Counter[str],
        settings: IntakeSettings,
    ) -> None:
        self._pipeline = pipeline
        self._inbox = inbox
        self._courier = courier
        self._order = order
        self._tasks = tasks
        self._busy = busy
        self._settings = settings

    async def __call__(self, context: Context) -> Submission:
        message = context.message
        name = f"turn:{message.platform}:{message.event_id}"
        return Submission("turn", done=self._tasks.spawn(self._run(context), name=name))

    async def _run(self, context: Context) -> Reply:
        message, claim = context.message, context.claim
        try:
            async with self._order.turn(message, claim):
                return await self._answer(context)
        except asyncio.CancelledError:
            # Shutdown ran out of grace: this attempt did not crash anything, so it must
            # not count towards quarantine; the next start (or another replica) answers
            # the event, or, when its answer is held, delivers it.
            if claim is not None:
                await self._quietly(
                    "release",
                    message,
                    self._inbox.release(message.platform, message.event_id, fence=claim.fence),
                )
            raise
        finally:
            _release(self._busy, message.conversation)

    async def _answer(self, context: Context) -> Reply:
        message, claim = context.message, context.claim
        label = f"{message.platform} event {message.event_id} in {message.conversation}"
        fence = claim.fence if claim is not None else None
        stream = context.adapter.open_reply(message, reply_id=context.reply_id)

        async def remember(reply_id: str) -> None:
            await self._quietly(
                "record the reply of",
                message,
                self._inbox.record_reply(message.platform, message.event_id, reply_id, fence=fence),
            )

        guarded = GuardedReply(
            stream,
            label=label,
            retries=self._settings.delivery_retries,
            backoff_s=self._settings.delivery_backoff_s,
            on_reply_id=remember if claim is not None else None,
        )
        started = time.perf_counter()
        reply = await self._pipeline.answer(message, guarded, claim=claim)
        observe_turn(message.platform, reply, time.perf_counter() - started)
        if claim is None:
            await guarded.deliver(reply)  # nothing on record to retry from
            return reply
        # The next turn of the conversation may start elsewhere as soon as this event
        # stops being pending: the answer must be in the conversation by then.
        await self._pipeline.memory.saved(message.conversation)
        deliver_by = self._courier.deliver_by()
        held = await self._quietly(
            "hold the answer of",
            message,
            self._inbox.hold(
                message.platform,
                message.event_id,
                encode_reply(reply),
                deliver_by=deliver_by,
                fence=fence,
            ),
        )
        if held is False:
            _log.warning(
                "not delivering the answer to %s: another replica took the event over "
                "(this one's lease ran out), or it was closed meanwhile",
                label,
            )
            return reply
        if await guarded.deliver(reply):
            await self._quietly(
                "close",
                message,
                self._inbox.finish(message.platform, message.event_id, "answered", fence=fence),
            )
        else:
            self._courier.send(
                message,
                context.adapter,
                reply,
                reply_id=guarded.reply_id,
                deliver_by=deliver_by,
                fence=fence,
            )
        return reply

    @staticmethod
    async def _quietly(
        what: str, message: InboundMessage[Any], call: Awaitable[bool]
    ) -> bool | None:
        """The store's answer, or None when the store failed (logged): the turn goes on."""
        try:
            return await call
        except StoreError:
            _log.exception("could not %s event %s", what, message.event_id)
            return None


def observe_turn(platform: str, reply: Reply, seconds: float) -> None:
    """Count a finished turn: its steps' times, and what failed in it."""
    metrics.TURNS.labels(platform, reply.status).inc()
    metrics.TURN_STEP_SECONDS.labels("total").observe(seconds)
    for name, took in reply.timings.items():
        step = name.removesuffix("_s")  # "fetch_s" in ask --json; "fetch" as a label
        if step != "total":  # measured here, around the whole pipeline
            metrics.TURN_STEP_SECONDS.labels(step).observe(took)
    for kind in dict.fromkeys(notice.kind for notice in reply.notices):
        metrics.TURN_NOTICES.labels(kind).inc()
    if any(notice.kind == "llm_unavailable" for notice in reply.notices):
        metrics.LLM_ERRORS.inc()
    for source in reply.unavailable:
        metrics.SOURCE_ERRORS.labels(source).inc()


async def first_time(inbox: Inbox | None, message: InboundMessage[Any]) -> bool:
    """Record that ``message``'s event is answered without a turn; False when it had been
    already (a redelivery: stay quiet). True when the store fails: better a second reply
    than none."""
    if inbox is None:
        return True
    try:
        first = await inbox.handled(message.platform, message.event_id)
    except StoreError:
        _log.exception("could not record event %s; answering it", message.event_id)
        return True
    if not first:
        _log.info("duplicate event %s:%s ignored", message.platform, message.event_id)
    return first


async def _notify(context: Context, text: str, *, private: bool) -> None:
    """Post a short line; a platform failing to take it must not stop the chain."""
    try:
        await context.adapter.notify(context.message, text, private=private)
    except Exception:
        _log.warning(
            "could not post a notice for %s event %s",
            context.message.platform,
            context.message.event_id,
            exc_info=True,
        )


def _release(busy: Counter[str], key: str) -> None:
    busy[key] -= 1
    if busy[key] <= 0:
        del busy[key]
