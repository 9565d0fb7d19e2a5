"""Plain data that crosses the seams between adapters, pipeline and agents.

Everything here is a frozen dataclass or a pure function with no behaviour that touches I/O,
so any module can import it without pulling in a platform SDK or an agent's dependencies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Platform = Literal["terminal", "discord", "slack", "memory"]
Role = Literal["user", "assistant"]

SOURCE_LABELS: Mapping[str, str] = {"wikipedia": "Wikipedia", "hackernews": "Hacker News"}
"""Each research source's kind (:attr:`Article.source`) and the name users read for it."""


def source_label(kind: str) -> str:
    """The name users read for a source kind: ``"hackernews"`` gives ``"Hacker News"``.

    An unknown kind is spelled out from its identifier (``"arxiv_papers"`` gives
    ``"Arxiv Papers"``), so the labels above also come back unchanged.
    """
    return SOURCE_LABELS.get(kind, kind.replace("_", " ").title())


def conversation_key(platform: str, *parts: str) -> str:
    """Build the key that names one conversation, e.g. ``slack:T1:C2:1700000000.0001``.

    Each Discord channel or thread, each Slack thread and each terminal session gets its own
    key; the pipeline and the memory store treat it as an opaque string.
    """
    cleaned = [p.strip() for p in parts if p and p.strip()]
    if not cleaned:
        raise ValueError("a conversation key needs at least one non-empty part")
    return ":".join([platform, *cleaned])


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """The one message type adapters hand to the pipeline.

    ``raw`` keeps the platform's own object for the adapter that made it (to reply in
    the right thread, say); the pipeline never looks inside it.
    """

    text: str
    author: str
    conversation: str
    platform: Platform
    raw: object = field(default=None, compare=False, repr=False)


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


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What the fetch agent found for one turn, and which sources failed."""

    articles: tuple[Article, ...]
    unavailable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RankedArticle:
    """An article with its cosine similarity to the question."""

    article: Article
    score: float


@dataclass(frozen=True, slots=True)
class Source:
    """A numbered source given to the LLM; ``n`` is the number it cites as ``[n]``."""

    n: int
    title: str
    url: str
    source: str
    score: float


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
