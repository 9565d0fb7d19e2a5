"""What the rest of the bot may ask of the store, grouped by who asks.

    ConversationStore  the pipeline (restore, save, summarise), the commands and the CLI
    Inbox              the intake: claim an event, record its reply, finish or release it,
                       recover what a crash left behind
    FeedbackStore      readers' votes on answers
    VectorStore        the embedding cache's vectors, across restarts
    Store              one backend holding all four, opened once and closed at shutdown

Every method raises :class:`~bot.errors.StoreError` when the backend fails (disk full, a
lock held past the busy timeout, a corrupt file, the store closed); no backend's own
exception escapes it. Refusals that are part of normal operation (a turn or conversation
deleted meanwhile, a summary that would move backwards, a duplicate event) are answered
with ``False`` or ``None``, not raised. ``ValueError`` and ``TypeError`` mean a programming
error in the caller, never a state of the database.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Protocol

from bot.contract import Rating, Source
from bot.store.values import (
    Backlog,
    Claim,
    ConversationInfo,
    ConversationState,
    EventOutcome,
    RecoveredEvent,
)


class ConversationStore(Protocol):
    """Conversations: their turns, answers, sources and running summary."""

    async def load(self, conversation: str) -> ConversationState:
        """What the next prompt needs: the summary and the answered turns after it, oldest
        first. Pending turns are left out; an unknown conversation gives an empty state."""

    async def finish_turn(
        self, turn_id: int, answer: str, *, sources: Sequence[Source] = ()
    ) -> bool:
        """Store the answer of a turn and its numbered sources; mark it answered.

        Also touches the conversation's ``updated_at``. False when the turn no longer
        exists (its conversation was reset meanwhile). Finishing a turn again replaces
        its answer and sources.
        """

    async def save_summary(self, conversation: str, summary: str, upto_turn_id: int) -> bool:
        """Replace the summary with one covering every turn up to ``upto_turn_id``.

        False, changing nothing, when the conversation is gone, when ``upto_turn_id`` is
        lower than the current one (a slower summariser finishing after a newer one), or
        when it is not an answered turn of this conversation (reset meanwhile). A summary
        is not activity: ``updated_at`` stays.
        """

    async def reset(self, conversation: str) -> bool:
        """Forget the conversation and its turns; False when there was none. Inbox rows
        stay, so a redelivered event is still known."""

    async def info(self, conversation: str) -> ConversationInfo | None:
        """The conversation as :meth:`list_all` describes it, or None."""

    async def list_all(self) -> list[ConversationInfo]:
        """Every conversation, most recently active first."""

    async def transcript(self, conversation: str) -> ConversationState | None:
        """Every turn, pending and summarised ones included, oldest first; a pending turn
        whose inbox event was given up shows ``expired`` or ``quarantined``. None when
        the conversation does not exist."""

    async def last_sources(self, conversation: str) -> tuple[Source, ...]:
        """The numbered sources of the most recently answered turn (the answer the user saw
        last, when two overlapped); empty when nothing was answered."""


class Inbox(Protocol):
    """Platform events, each answered once across redeliveries, crashes and restarts.

    An event moves on like this::

        claim ──► pending ──hold──► delivering ──finish──► answered | undelivered
                     │  ▲   (the answer exists; until it is delivered, recover hands
                     │  │    it back to be delivered, never to be answered again)
                     │  └── recover (after a crash: attempts + 1, handed back)
                     ├──── recover: older than max_age_s ──────────► expired
                     └──── recover: attempts >= max_attempts ──────► quarantined

    ``attempts`` counts the processes that started on the event: a claim is attempt 1,
    each recovery adds one, and :meth:`release` takes back an attempt that a graceful
    shutdown cancelled.

    Several processes may share one store. Each event is leased to the replica that
    claimed or took it over, which keeps the lease alive (:meth:`renew`) while it works;
    another replica takes it over (:meth:`recover`) only once the lease has run out, and
    bumps its fence. The writes that follow (:meth:`hold`, :meth:`record_reply`,
    :meth:`finish`, :meth:`release`) name the fence they were given and do nothing,
    returning False, when the event has moved on: a replica that comes back late cannot
    overwrite the new owner's work.
    """

    async def claim(
        self, platform: str, event_id: str, conversation: str, question: str, message: str
    ) -> Claim | None:
        """Record the event and begin its turn, in one transaction, unless it is known.

        ``message`` is the intake's opaque JSON, handed back by :meth:`recover`. None,
        writing nothing, when the event was claimed before (by any process, whatever
        became of it): that caller must not answer it.
        """

    async def hold(
        self,
        platform: str,
        event_id: str,
        reply: str,
        *,
        deliver_by: datetime,
        fence: int | None = None,
    ) -> bool:
        """Keep the answer to a pending event until it is delivered (the outbox).

        ``reply`` is the intake's encoding of the answer; ``deliver_by`` when to give up.
        A crash from now on makes ``recover`` hand the answer back for delivery instead of
        the question for a new answer. Does nothing unless the event is pending or
        already delivering (then the answer and time are replaced). False when it did
        nothing: the event is finished, or no longer this holder's (``fence``).
        """

    async def handled(self, platform: str, event_id: str) -> bool:
        """Record that an event answered outside the inbox (a command, a shortcut) was
        handled; False when it had been already: a replay that must not run again.
        Records are kept a day."""

    async def record_reply(
        self, platform: str, event_id: str, reply_id: str, *, fence: int | None = None
    ) -> bool:
        """Remember the platform's id of the reply posted for the event; False when the
        event is unknown or no longer this holder's."""

    async def finish(
        self, platform: str, event_id: str, outcome: EventOutcome, *, fence: int | None = None
    ) -> bool:
        """Close the event with its outcome, whatever its status was (an answer that
        arrives after :meth:`recover` expired the event still went out); an answer held
        for delivery is dropped. False when the event is unknown or no longer this
        holder's.

        Raises:
            ValueError: ``outcome`` is not an :data:`EventOutcome`.
        """

    async def release(self, platform: str, event_id: str, *, fence: int | None = None) -> bool:
        """Take back the attempt of a pending event whose turn a graceful shutdown
        cancelled (it did not crash anything, so it must not count towards quarantine),
        and let go of its lease, so another replica may take it at once."""

    async def renew(self) -> int:
        """Keep alive the lease of every unfinished event this replica holds; how many."""

    async def let_go(self) -> int:
        """Give up the lease of every unfinished event this replica holds (it is shutting
        down gracefully), so another replica, or the next start, takes them at once;
        how many."""

    async def ahead(self, platform: str, event_id: str, *, delivering: bool = False) -> int:
        """How many unanswered events of the event's conversation came before it (its
        place in the queue), whichever replica holds them (this one's included: one it
        has just claimed or taken over may not have reached its turn yet); with
        ``delivering``, also every answer still being delivered (its post must come
        first)."""

    async def backlog(self) -> Backlog:
        """Events taken but not finished (pending, or delivering), and the oldest's age."""

    async def recover(
        self,
        *,
        platforms: Collection[str],
        max_age_s: float,
        max_attempts: int = 2,
        now: datetime | None = None,
        received_before: datetime | None = None,
    ) -> list[RecoveredEvent]:
        """At start-up, take over the pending events no process is answering any more.

        In one transaction: pending events older than ``max_age_s`` (measured from
        ``now``) expire, whatever their platform. Of the events of ``platforms`` that no
        live replica holds (their lease ran out, or the store says this process is alone):
        pending ones with ``attempts >= max_attempts`` are quarantined and returned first,
        once, with no claim; the other pending ones get one more attempt and are returned
        oldest first (one whose turn a reset deleted gets a new pending turn); then those
        whose answer awaits delivery, with that answer (no attempt is counted: delivering
        crashed nothing). Each one taken is this replica's now, with a new fence. With
        ``received_before``, only events received before it are taken. Records of
        handled commands older than a day are dropped.

        Raises:
            ValueError: ``now`` or ``received_before`` is naive, or ``max_attempts`` < 1.
            TypeError: ``platforms`` is a single string.
        """


class FeedbackStore(Protocol):
    """Readers' votes on answers, kept with the answer's turn."""

    async def record(self, platform: str, event_id: str, user_id: str, rating: Rating) -> bool:
        """Store ``user_id``'s vote on the answer to the event; a later vote replaces an
        earlier one. False when the event is unknown or its turn is gone (reset).

        Raises:
            ValueError: ``rating`` is not ``"up"`` or ``"down"``.
        """


class VectorStore(Protocol):
    """Embedding vectors by (model, text hash), so a restart does not embed again."""

    async def vectors(self, model: str, hashes: Sequence[str]) -> dict[str, bytes]:
        """The stored vectors of ``model`` for those of ``hashes`` that have one."""

    async def save_vectors(
        self, model: str, vectors: Sequence[tuple[str, bytes]], *, max_entries: int
    ) -> None:
        """Store ``(text hash, vector)`` pairs, then evict the oldest beyond ``max_entries``."""


class RateLimits(Protocol):
    """Per-user token buckets, shared by every process on the store."""

    async def take(self, key: str, *, per_minute: float, burst: int) -> float:
        """Take a token from ``key``'s bucket: 0.0 when there was one, else the seconds
        until there is (nothing is taken then)."""


class Replicas(Protocol):
    """Who is alive, for what is divided among the replicas (a request budget, shards)."""

    async def beat(self) -> int:
        """Record this replica as alive; how many are (itself included)."""

    async def leave(self) -> None:
        """This replica stops (its share goes to the others at once)."""


class Shards(Protocol):
    """Which replica runs which shard of a platform's connection, by lease."""

    async def hold(self, platform: str, count: int, *, want: int) -> frozenset[int]:
        """Renew the shards of ``platform`` (of ``count``) this replica holds, take free or
        expired ones until it holds ``want``, give back any beyond ``want`` (so a replica
        that joins gets its share); the shards it holds now."""

    async def release(self, platform: str) -> None:
        """Give back every shard this replica holds."""


class Store(Protocol):
    """One backend: each group of operations, and its lifecycle."""

    @property
    def conversations(self) -> ConversationStore: ...

    @property
    def inbox(self) -> Inbox: ...

    @property
    def feedback(self) -> FeedbackStore: ...

    @property
    def vectors(self) -> VectorStore: ...

    @property
    def rate_limits(self) -> RateLimits: ...

    @property
    def replicas(self) -> Replicas: ...

    @property
    def shards(self) -> Shards: ...

    @property
    def replica(self) -> str:
        """This process's name among the replicas (the owner of its leases)."""

    @property
    def shared(self) -> bool:
        """Whether other processes may serve the same store at once (then what is kept in
        process elsewhere must come from here: rate limits, the queue, shards)."""

    @property
    def lease_s(self) -> float:
        """How long this replica's leases (events, shards) last unless renewed."""

    @property
    def location(self) -> str:
        """Where the data lives, for operators' messages (a path, a URL without password)."""

    async def health(self) -> str | None:
        """None when the store answers and its schema is at this code's version; else
        what is wrong, in a line for operators (readiness)."""

    async def take_ownership(self) -> None:
        """Take the store for a process that serves chat platforms (and recovers their
        events), for as long as it runs.

        The embedded backend allows one such process per database; a shared backend
        coordinates several otherwise and returns at once.

        Raises:
            StoreError: another live process serves the store (the message names it).
        """

    async def close(self) -> None:
        """Wait for the operation in progress, then close. Safe to call twice."""
