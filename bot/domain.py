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
    """What the fetch agent found for one turn, and which sources failed.

    ``failures`` says, for each source of ``unavailable``, which host failed and how (the
    DNS lookup, a refused connection, a timeout, an HTTP status): for the operator only.
    """

    articles: tuple[Article, ...]
    unavailable: tuple[str, ...] = ()
    failures: tuple[tuple[str, str], ...] = ()

    def failure(self, source: str) -> str:
        """How ``source`` (a label) failed, for the operator; ``""`` when it did not."""
        return dict(self.failures).get(source, "")


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


def human_time(moment: datetime) -> str:
    """A moment as people read it: ``2026-11-23 23:06 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
