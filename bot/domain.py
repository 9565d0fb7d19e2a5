"""Plain data that crosses the seams between the pipeline and the agents.

What crosses the adapter/pipeline seam lives in :mod:`bot.contract`.

Everything here is a frozen dataclass or a pure function with no behaviour that touches I/O,
so any module can import it without pulling in a platform SDK or an agent's dependencies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from bot.contract import ScoreParts

SOURCE_LABELS: Mapping[str, str] = {"wikipedia": "Wikipedia", "hackernews": "Hacker News"}
"""Each research source's kind (:attr:`Article.source`) and the name users read for it."""


def source_label(kind: str) -> str:
    """The name users read for a source kind: ``"hackernews"`` gives ``"Hacker News"``.

    An unknown kind is spelled out from its identifier (``"arxiv_papers"`` gives
    ``"Arxiv Papers"``), so the labels above also come back unchanged.
    """
    return SOURCE_LABELS.get(kind, kind.replace("_", " ").title())


@dataclass(frozen=True, slots=True)
class Article:
    """One document from a research source, as the fetch agent normalised it."""

    source: Literal["wikipedia", "hackernews"]
    title: str
    url: str
    text: str
    # Position in the source's own result list for its query (0 = the source's best match).
    rank: int = 0
    published: str | None = None
    points: int | None = None
    comments: int | None = None
    author: str | None = None
    # The version that was read: Wikipedia's revision id, or the Hacker News item id.
    revision: str | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What the fetch agent found for one turn, and which sources failed."""

    articles: tuple[Article, ...]
    unavailable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RankedArticle:
    """An article with its fused ranking score and the parts the score came from."""

    article: Article
    score: float
    parts: ScoreParts = field(default_factory=ScoreParts)


@dataclass(frozen=True, slots=True)
class AnalysisReport:
    """Statistics computed by the analysis subprocess over a turn's articles."""

    article_count: int
    per_source: Mapping[str, int]
    average_relevance: float
    keyword_frequencies: tuple[tuple[str, int], ...]
    top_articles: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """One question and (once generated) its answer, as the memory store keeps it."""

    id: int
    question: str
    answer: str | None
    # "pending": the question was saved but no answer was (yet) stored for it.
    # "expired" / "quarantined": still unanswered, and its inbox event was given up on
    # (too old to answer, or it crashed the bot too often); only transcripts show these.
    status: Literal["pending", "answered", "expired", "quarantined"]
    created_at: str
    # Readers' votes on the answer (a chat platform's feedback buttons); transcripts only.
    feedback_up: int = 0
    feedback_down: int = 0


@dataclass(frozen=True, slots=True)
class ConversationState:
    """A conversation as the pipeline needs it for the next prompt.

    ``summary`` covers every turn up to and including ``summary_upto`` (a turn id);
    ``turns`` are the answered turns after it, oldest first.
    """

    key: str
    summary: str = ""
    summary_upto: int = 0
    turns: tuple[StoredTurn, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One row of ``sessions list``."""

    key: str
    created_at: str
    updated_at: str
    turn_count: int
    has_summary: bool
    # Readers' votes on the answers of this conversation.
    feedback_up: int = 0
    feedback_down: int = 0


def human_time(timestamp: str) -> str:
    """``2026-11-23T23:06:48.507602+00:00`` -> ``2026-11-23 23:06 UTC``, for people."""
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
