"""The values the store hands out and takes in: plain frozen data, the same for every backend.

Timestamps are timezone-aware :class:`~datetime.datetime` objects in UTC; how a backend
writes them down (ISO-8601 text in SQLite) is the backend's business.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

TurnStatus = Literal["pending", "answered", "expired", "quarantined"]
"""``pending``: the question is stored, no answer (yet). ``expired`` / ``quarantined``: still
unanswered, and its inbox event was given up on (too old to answer, or it crashed the bot
too often); only transcripts show these two."""

EventOutcome = Literal["answered", "undelivered"]
"""How an inbox event ends: its reply went out, or could not be posted and is not retried."""


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """One question and (once generated) its answer, as the store keeps it."""

    id: int
    question: str
    answer: str | None
    status: TurnStatus
    created_at: datetime
    # Readers' votes on the answer (a chat platform's feedback buttons); transcripts only.
    feedback_up: int = 0
    feedback_down: int = 0


@dataclass(frozen=True, slots=True)
class ConversationState:
    """A conversation as the pipeline needs it for the next prompt.

    ``summary`` covers every turn up to and including ``summary_upto`` (a turn id);
    ``turns`` are the answered turns after it, oldest first.
    """

    conversation: str
    summary: str = ""
    summary_upto: int = 0
    turns: tuple[StoredTurn, ...] = ()


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """One conversation as ``conversations list`` and the ``session`` command describe it.

    ``turn_count`` counts every stored turn, pending and summarised ones included.
    """

    conversation: str
    created_at: datetime
    updated_at: datetime
    turn_count: int
    has_summary: bool
    # Readers' votes on the answers of this conversation.
    feedback_up: int = 0
    feedback_down: int = 0


@dataclass(frozen=True, slots=True)
class Claim:
    """The right to answer one event: its pending turn, in the conversation as it is now.

    ``conversation_started`` is when the conversation was created. It changes when the
    conversation is reset and created again, so the pipeline can tell that what it holds
    in memory for the conversation belongs to one that no longer exists.
    """

    turn_id: int
    conversation_started: datetime
    # The event's fence as claimed: every write about the event checks it, so a replica
    # whose event was taken over (its lease ran out) cannot overwrite the new owner's work.
    fence: int = 1
    # When the event was first received: its place in its conversation's queue.
    received_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RecoveredEvent:
    """An event that no live process is answering, handed back by ``recover``.

    ``message`` is the intake's own JSON, as given to ``claim``. ``reply_id`` is set when a
    reply was already posted (the crash came after it), so the intake edits that message
    instead of posting a second one. ``attempts`` includes this one.

    Three kinds: an event to answer (``claim`` set); an event whose answer exists and
    only awaits delivery (``reply`` set: the encoded answer given to ``hold``, to deliver
    by ``deliver_by``); and an event this very call quarantined (neither): it is handed
    back once, so the intake can tell its author it was given up, and is never answered.
    """

    platform: str
    event_id: str
    conversation: str
    message: str
    reply_id: str | None
    attempts: int
    received_at: datetime
    claim: Claim | None
    reply: str | None = None
    deliver_by: datetime | None = None
    # The fence this take-over was given (see Claim.fence).
    fence: int = 0

    @property
    def quarantined(self) -> bool:
        return self.claim is None and self.reply is None


@dataclass(frozen=True, slots=True)
class Backlog:
    """Events taken but not finished: how many, and since when the oldest waits."""

    events: int
    oldest: datetime | None


@dataclass(frozen=True, slots=True)
class RecoveryScope:
    """What one ``recover`` call may touch, checked once for every backend.

    Pending events received before ``expire_before`` expire (whatever their platform);
    of the others, those of ``platforms`` received before ``taken_before`` (no bound when
    None) are quarantined at ``max_attempts`` attempts or taken over.
    """

    platforms: tuple[str, ...]
    # The moment ages are measured from.
    now: datetime
    expire_before: datetime
    taken_before: datetime | None
    max_attempts: int

    @classmethod
    def of(
        cls,
        platforms: Collection[str],
        *,
        max_age_s: float,
        max_attempts: int,
        now: datetime | None,
        received_before: datetime | None,
    ) -> RecoveryScope:
        """The scope of ``Inbox.recover``'s arguments.

        Raises:
            ValueError: ``now`` or ``received_before`` is naive, or ``max_attempts`` < 1.
            TypeError: ``platforms`` is a single string.
        """
        if isinstance(platforms, str):
            raise TypeError("platforms is a collection of platform names, not one string")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        measured_from = datetime.now(UTC) if now is None else now
        if measured_from.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if received_before is not None and received_before.tzinfo is None:
            raise ValueError("received_before must be timezone-aware")
        return cls(
            platforms=tuple(sorted(set(platforms))),
            now=measured_from,
            expire_before=measured_from - timedelta(seconds=max_age_s),
            taken_before=received_before,
            max_attempts=max_attempts,
        )
