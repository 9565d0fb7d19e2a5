"""The contract every platform adapter keeps.

An adapter is a small lifecycle object and a translator: platform events in, rendered
replies out. :meth:`Adapter.check` is a cheap look at its settings before anything slow
starts (is the token accepted?); the runtime runs every adapter's check together with its
own and reports all problems at once. :meth:`Adapter.start` takes the intake, the sink
its inbound messages go to, connects, and returns once it is ready; :meth:`Adapter.close`
is safe to call twice; :attr:`Adapter.is_alive` reports health. Inbound messages become
:class:`~bot.contract.InboundMessage` and go to :meth:`IntakePort.submit`; the intake then
asks the adapter for a :class:`ReplyStream` to post the answer through.

Dedupe, rate limits, commands and queueing are not the adapter's business: they live
once, in :mod:`bot.intake`. Like :mod:`bot.contract`, this module imports nothing of the
pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from bot.contract import InboundMessage, Platform, Rating, Reply, TurnListener

TargetT = TypeVar("TargetT")

Outcome = Literal[
    "turn",  # a turn was started, or queued behind the conversation's running one
    "command",  # a command was answered
    "empty",  # nothing to answer; the author got a hint
    # the bot's own or another bot's message, or a follow-up where the bot has no part
    "ignored",
    "duplicate",  # an event already taken (a redelivery)
    "rate_limited",  # refused, with a reply saying when to try again
    "closed",  # the bot is shutting down; the event was not taken
]


@dataclass(frozen=True, slots=True)
class Submission:
    """What the intake did with one inbound message.

    ``done`` is set for a ``"turn"``: it finishes once the answer was delivered (or its
    delivery given up), with the reply; an adapter need not wait for it.
    """

    outcome: Outcome
    done: asyncio.Task[Reply] | None = None


class Cluster(Protocol):
    """The replicas sharing the store, as an adapter may need them: to divide a platform's
    connections (Discord's shards) or a request budget that is per token, not per process.
    Alone (the embedded store), this process is the whole cluster."""

    @property
    def shared(self) -> bool:
        """Whether other replicas may serve the same store (and platforms) at once."""

    @property
    def replicas(self) -> int:
        """Live replicas, this one included (1 when alone)."""

    @property
    def lease_s(self) -> float:
        """How long this replica's leases (its shards among them) last unless renewed: a
        holder renews about three times per lease, and a dead replica's share is taken
        over about this long after it stopped."""

    async def pace(self, key: str, *, per_minute: float, burst: int = 1) -> float:
        """Take a slot of a rate every replica shares (Discord's IDENTIFY, say): 0.0 when
        taken, else the seconds to wait before asking again. Raises StoreError."""

    async def shards(self, platform: Platform, count: int) -> frozenset[int]:
        """Which of ``platform``'s ``count`` shards this replica runs now: its fair share,
        each shard run by one live replica (all of them when alone). Call it again every
        few seconds: it renews what this replica holds, takes over the shards of a
        replica that died, and gives back extras when another joined (every
        ``lease_s / 3`` keeps what it holds). Raises StoreError."""

    async def release_shards(self, platform: Platform) -> None:
        """Give back every shard of ``platform`` (at shutdown)."""


class IntakePort(Protocol):
    """What an adapter may ask of the intake: the one door, two questions beside it, and
    the cluster it is part of."""

    @property
    def cluster(self) -> Cluster:
        """The replicas this process shares its store with."""

    async def submit(self, message: InboundMessage[Any]) -> Submission:
        """Take one inbound message; returns what was done with it (the turn, if one
        started, runs in the background)."""

    async def feedback(
        self, platform: Platform, event_id: str, user_id: str, rating: Rating
    ) -> bool:
        """A reader's verdict on the answer to an event, stored with its turn; False
        when that turn is unknown or gone (reset)."""

    async def has_answered(self, conversation: str) -> bool:
        """Whether the bot has a conversation there (so a follow-up with no mention is
        for it)."""


class ReplyStream(TurnListener, Protocol):
    """One reply to one inbound message, as the adapter posts it.

    :meth:`~bot.contract.TurnListener.on_reply` must deliver the complete reply on its
    own, whatever happened to earlier progress or text updates (they may have failed):
    it edits the message already posted, or posts one. It may raise; the intake retries
    it with backoff.
    """

    @property
    def reply_id(self) -> str | None:
        """The platform's id of the reply message, once one was posted."""


class Adapter(Protocol[TargetT]):
    """A chat platform (or the terminal) as the intake sees it."""

    platform: Platform
    # Who may reset a conversation here, for the polite refusal ("server admins").
    admins: str
    # How a user types a command here ("/" for "/reset"; "" when it is a plain word).
    command_prefix: str
    # Commands the adapter answers itself (the terminal's /quit), a help line each: the
    # intake lists them with its own.
    own_commands: tuple[str, ...]
    # Questions per minute per user; None means the intake's default, 0 no limit.
    rate_limit_per_minute: float | None
    # Whether questions that a crash left unanswered can still be answered here.
    recovers: bool

    async def check(self) -> str | None:
        """A cheap look at the settings (is the token accepted?): the problem as one line
        with its fix, or None. Opens nothing that outlives the call."""

    async def start(self, intake: IntakePort) -> None:
        """Connect, handing inbound messages to ``intake``; return when messages can flow.

        Raises:
            PlatformSetupError: bad credentials, a missing scope or intent.
        """

    async def close(self) -> None:
        """Disconnect. Safe to call more than once."""

    @property
    def is_alive(self) -> bool:
        """True while connected and accepting messages."""

    async def wait_stopped(self) -> None:
        """Return once the adapter has stopped: closed, or its connection lost for good."""

    def open_reply(
        self, message: InboundMessage[TargetT], *, reply_id: str | None = None
    ) -> ReplyStream:
        """A stream for the answer to ``message``.

        ``reply_id`` names a reply posted before a crash: the stream edits it instead of
        posting a second one.
        """

    async def notify(self, message: InboundMessage[TargetT], text: str, *, private: bool) -> None:
        """Post a short line in answer to ``message`` (a command's output, a refusal, a
        queue notice); ``private`` where the platform can show it to the author alone."""

    def encode_target(self, target: TargetT) -> Mapping[str, Any]:
        """The reply target as JSON-able data, kept in the inbox for crash recovery."""

    def decode_target(self, data: Mapping[str, Any]) -> TargetT:
        """The reply target back from :meth:`encode_target`'s data.

        Raises:
            ValueError: the data is not a target of this adapter.
        """
