"""The values the store hands out and takes in: plain frozen data, the same for every backend.

Timestamps are timezone-aware :class:`~datetime.datetime` objects in UTC; how a backend
writes them down (ISO-8601 text in SQLite) is the backend's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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


@dataclass(frozen=True, slots=True)
class RecoveredEvent:
    """A pending event that no live process is answering, handed back by ``recover``.

    ``message`` is the intake's own JSON, as given to ``claim``. ``reply_id`` is set when a
    reply was already posted (the crash came after it), so the intake edits that message
    instead of posting a second one. ``attempts`` includes this one. ``claim`` is None for
    an event this very call quarantined: it is handed back once, so the intake can tell its
    author it was given up, and is never answered.
    """

    platform: str
    event_id: str
    conversation: str
    message: str
    reply_id: str | None
    attempts: int
    received_at: datetime
    claim: Claim | None

    @property
    def quarantined(self) -> bool:
        return self.claim is None
