"""The fetch agent itself: one turn's requests to every enabled source, sent at once, and
their articles assembled per source."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from urllib.parse import urlsplit

import aiohttp

from bot.agents.fetch import hackernews, wikipedia
from bot.agents.fetch.http import JsonClient, Parsed, Request
from bot.config import SourcesSettings
from bot.domain import Article, FetchResult
from bot.errors import SourceUnavailable

_log = logging.getLogger(__name__)

# In the order their articles are listed.
_SOURCES = (wikipedia, hackernews)


class FetchAgent:
    """Fetches a turn's articles from the enabled sources, concurrently.

    The aiohttp session is shared and owned by the caller: the agent never creates or closes
    it. ``clock`` (seconds, monotonic) drives the cache's expiry and is injectable for tests.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: SourcesSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._client = JsonClient(session, settings, clock=clock)

    async def fetch(self, keywords: Sequence[str]) -> FetchResult:
        """Search every enabled source for ``keywords`` (the primary topic first).

        Returns the articles found, Wikipedia's first, and the display names of the sources
        whose every request failed. Never raises :class:`SourceUnavailable`; an empty keyword
        list returns an empty result without any request.
        """
        terms = _unique_terms(keywords)
        if not terms:
            return FetchResult(articles=())
        settings, cap = self._settings, self._settings.max_article_chars
        requests = [
            *wikipedia.requests(settings.wikipedia, terms, cap),
            *hackernews.requests(settings.hackernews, terms, cap),
        ]
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._attempt(request)) for request in requests]
        outcomes = [(r.source, t.result()) for r, t in zip(requests, tasks, strict=True)]
        return _assemble(outcomes)

    async def _attempt(self, request: Request) -> Parsed | str:
        """One request's articles, or (logged) how it failed: ``host: reason``."""
        try:
            return await self._client.get(request)
        except SourceUnavailable as exc:
            _log.warning(
                "%s request failed: %s (params %s)", request.source, exc.reason, request.params
            )
            return f"{urlsplit(request.url).netloc}: {exc.reason}"


def provenance(article: Article) -> tuple[str, str]:
    """``(revision, permalink)``: exactly what was read, and a link to that version.

    A Wikipedia revision id gives an ``oldid`` link; a Hacker News story is its item (its
    text does not change) with the points it had when read. Both are empty when the
    source did not say.
    """
    if article.revision is None:
        return "", ""
    if article.source == "wikipedia":
        return article.revision, wikipedia.permalink(article)
    points = f" ({article.points} points)" if article.points is not None else ""
    return f"item {article.revision}{points}", hackernews.permalink(article)


def _unique_terms(keywords: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    terms: list[str] = []
    for keyword in keywords:
        term = " ".join(keyword.split())
        if term and term.casefold() not in seen:
            seen.add(term.casefold())
            terms.append(term)
    return terms


def _assemble(outcomes: Sequence[tuple[str, Parsed | str]]) -> FetchResult:
    articles: list[Article] = []
    unavailable: list[str] = []
    failures: list[tuple[str, str]] = []
    for module in _SOURCES:
        source = module.LABEL
        batches = [parsed for name, parsed in outcomes if name == source]
        if not batches:
            continue  # disabled
        arrived = [parsed for parsed in batches if not isinstance(parsed, str)]
        if not arrived:
            _log.warning("%s unavailable this turn: all %d requests failed", source, len(batches))
            unavailable.append(source)
            reasons = dict.fromkeys(reason for reason in batches if isinstance(reason, str))
            failures.append((source, _operator_line(module, list(reasons))))
            continue
        if len(arrived) < len(batches):
            _log.warning(
                "%s: %d of %d requests failed; keeping the rest",
                source,
                len(batches) - len(arrived),
                len(batches),
            )
        articles.extend(_dedupe(arrived))
    return FetchResult(
        articles=tuple(articles), unavailable=tuple(unavailable), failures=tuple(failures)
    )


def _operator_line(module: ModuleType, reasons: Sequence[str]) -> str:
    """Which host failed and how, and where to look: the operator's half of the notice."""
    section = f"[sources.{module.__name__.rsplit('.', 1)[-1]}]"
    return f"{'; '.join(reasons)}; check the network, or {section}.api_url"


def _dedupe(batches: Sequence[Parsed]) -> list[Article]:
    seen: set[str] = set()
    kept: list[Article] = []
    for batch in batches:
        for key, article in batch:
            if key not in seen:
                seen.add(key)
                kept.append(article)
    return kept
