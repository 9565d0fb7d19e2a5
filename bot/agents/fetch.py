"""The fetch agent: a turn's keywords in, articles from Wikipedia and Hacker News out.

For one turn the agent sends, all at once (so a turn costs about one round trip):

* to Wikipedia's MediaWiki Action API (``[sources.wikipedia].api_url``): a direct title lookup
  of the primary topic (``keywords[0]``, redirects followed) and, per keyword, a full-text
  search that returns the pages' intro extracts and canonical URLs in the same response;
* to Hacker News' Algolia API (``[sources.hackernews].api_url``): one story search per
  keyword (Algolia requires every word of a query to match, so keywords are never joined).

Disambiguation and missing pages are dropped, Wikipedia pages are deduplicated by title (the
direct title match first, rank 0) and Hacker News stories by ``objectID``. ``Article.rank`` is
the position in the source's own ranking for that query.

Every request has its own timeout, a body-size cap and a bounded number of retries with
exponential backoff on 429, 5xx and connection errors (``Retry-After`` honoured, capped).
Successful parsed answers are kept in a small TTL cache, and identical requests in flight at
the same time share one round trip.

Errors: inside the agent every library, HTTP or payload error becomes
:class:`~bot.errors.SourceUnavailable` and is logged. :meth:`FetchAgent.fetch` does not raise
it: a source whose requests *all* failed this turn is named in
:attr:`~bot.domain.FetchResult.unavailable`, and the articles that did arrive are kept.
Only cancellation (and bugs) propagate.
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bot.config import SourcesSettings
from bot.domain import SOURCE_LABELS, Article, FetchResult
from bot.errors import SourceUnavailable

_log = logging.getLogger(__name__)

WIKIPEDIA = SOURCE_LABELS["wikipedia"]
HACKER_NEWS = SOURCE_LABELS["hackernews"]

HN_ITEM_URL = "https://news.ycombinator.com/item?id={}"
# A server asking for a long pause would stall the whole turn; past this we retry sooner.
_MAX_RETRY_AFTER_S = 5.0
_CHUNK_BYTES = 64 * 1024
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")

Params = tuple[tuple[str, str], ...]
CacheKey = tuple[str, Params]
# (dedupe key, article): the key is the Wikipedia title or the Hacker News objectID.
Parsed = tuple[tuple[str, Article], ...]
Parser = Callable[[object], Parsed]

# Boolean parameters are true whenever present, so false ones are left out, never sent as 0.
_WIKI_PAGE_PARAMS: Params = (
    ("action", "query"),
    ("format", "json"),
    ("formatversion", "2"),
    ("prop", "extracts|info|pageprops"),
    ("exintro", "1"),
    ("explaintext", "1"),
    ("inprop", "url"),
    ("ppprop", "disambiguation"),
    ("redirects", "1"),
)


@dataclass(frozen=True, slots=True)
class _Request:
    source: str
    url: str
    params: Params
    parse: Parser = field(compare=False, repr=False)

    @property
    def key(self) -> CacheKey:
        return (self.url, tuple(sorted(self.params)))


@dataclass(slots=True)
class _InFlight:
    task: asyncio.Task[Parsed]
    waiters: int = 0


class _Retryable(Exception):
    """A failure worth another attempt (429, 5xx, a dropped connection)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _TTLCache:
    """Parsed answers by request, each kept ``ttl_s`` seconds; least recently used go first."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[CacheKey, tuple[float, Parsed]] = OrderedDict()

    def get(self, key: CacheKey) -> Parsed | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if self._clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: CacheKey, value: Parsed) -> None:
        if self._ttl_s <= 0 or self._max_entries <= 0:
            return
        self._entries[key] = (self._clock() + self._ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


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
        self._session = session
        self._settings = settings
        self._cache = _TTLCache(settings.cache_ttl_s, settings.cache_entries, clock)
        self._in_flight: dict[CacheKey, _InFlight] = {}
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._headers = {"User-Agent": settings.user_agent, "Accept": "application/json"}

    async def fetch(self, keywords: Sequence[str]) -> FetchResult:
        """Search every enabled source for ``keywords`` (the primary topic first).

        Returns the articles found, Wikipedia's first, and the display names of the sources
        whose every request failed. Never raises :class:`SourceUnavailable`; an empty keyword
        list returns an empty result without any request.
        """
        terms = _unique_terms(keywords)
        if not terms:
            return FetchResult(articles=())
        requests = [*self._wikipedia_requests(terms), *self._hackernews_requests(terms)]
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._attempt(request)) for request in requests]
        outcomes = [(r.source, t.result()) for r, t in zip(requests, tasks, strict=True)]
        return _assemble(outcomes)

    def _wikipedia_requests(self, terms: Sequence[str]) -> list[_Request]:
        wiki = self._settings.wikipedia
        if not wiki.enabled:
            return []
        parse = functools.partial(_parse_wikipedia, max_chars=self._settings.max_article_chars)
        title = _Request(
            WIKIPEDIA, wiki.endpoint, (*_WIKI_PAGE_PARAMS, ("titles", terms[0])), parse
        )
        searches = [
            _Request(
                WIKIPEDIA,
                wiki.endpoint,
                (
                    *_WIKI_PAGE_PARAMS,
                    ("generator", "search"),
                    ("gsrsearch", term),
                    ("gsrlimit", str(wiki.results_per_keyword)),
                    # Without it TextExtracts fills in only the first page's extract.
                    ("exlimit", "max"),
                ),
                parse,
            )
            for term in terms
        ]
        return [title, *searches]

    def _hackernews_requests(self, terms: Sequence[str]) -> list[_Request]:
        hn = self._settings.hackernews
        if not hn.enabled:
            return []
        url = hn.api_url.rstrip("/") + "/search"
        parse = functools.partial(_parse_hackernews, max_chars=self._settings.max_article_chars)
        limit = str(hn.results_per_keyword)
        return [
            _Request(
                HACKER_NEWS,
                url,
                (("query", term), ("tags", "story"), ("hitsPerPage", limit)),
                parse,
            )
            for term in terms
        ]

    async def _attempt(self, request: _Request) -> Parsed | None:
        """One request's articles, or ``None`` (logged) if it failed."""
        try:
            return await self._cached(request)
        except SourceUnavailable as exc:
            _log.warning(
                "%s request failed: %s (params %s)", request.source, exc.reason, request.params
            )
            return None

    async def _cached(self, request: _Request) -> Parsed:
        key = request.key
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        return await self._shared(key, lambda: self._load(request))

    async def _shared(
        self, key: CacheKey, load: Callable[[], Coroutine[Any, Any, Parsed]]
    ) -> Parsed:
        """Join an identical request already under way, or start one.

        The request runs in its own task so one waiter's cancellation does not cancel it for
        the others; when the last waiter leaves, it is cancelled.
        """
        entry = self._in_flight.get(key)
        if entry is None:
            entry = _InFlight(asyncio.get_running_loop().create_task(load()))
            self._in_flight[key] = entry
            entry.task.add_done_callback(functools.partial(self._forget, key))
        entry.waiters += 1
        try:
            return await asyncio.shield(entry.task)
        finally:
            entry.waiters -= 1
            if entry.waiters == 0 and not entry.task.done():
                entry.task.cancel()

    def _forget(self, key: CacheKey, task: asyncio.Task[Parsed]) -> None:
        entry = self._in_flight.get(key)
        if entry is not None and entry.task is task:
            del self._in_flight[key]
        if not task.cancelled():
            # Marks the exception as retrieved when every waiter had already gone.
            task.exception()

    async def _load(self, request: _Request) -> Parsed:
        parsed = request.parse(await self._get_json(request))
        self._cache.put(request.key, parsed)
        return parsed

    async def _get_json(self, request: _Request) -> object:
        retries = 0
        while True:
            try:
                return await self._get_once(request)
            except _Retryable as exc:
                if retries >= self._settings.retries:
                    raise SourceUnavailable(
                        request.source, f"{exc.reason} (after {retries + 1} attempts)"
                    ) from (exc.__cause__ or exc)
                delay = self._delay(retries, exc.retry_after)
                retries += 1
                _log.info("%s: %s; retry %d in %.2f s", request.source, exc.reason, retries, delay)
                await asyncio.sleep(delay)

    def _delay(self, retries: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return float(self._settings.backoff_s * 2**retries)

    async def _get_once(self, request: _Request) -> object:
        source = request.source
        try:
            async with self._session.get(
                request.url,
                params=request.params,
                headers=self._headers,
                timeout=self._timeout,
                # The shared session may raise on errors by default; statuses are judged here.
                raise_for_status=False,
            ) as response:
                _check_status(source, response)
                body = await _read_capped(source, response, self._settings.max_body_bytes)
        except TimeoutError as exc:
            # Not retried: a hanging server would hold the turn for (retries + 1) timeouts.
            raise SourceUnavailable(source, f"no answer within {self._timeout.total} s") from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise _Retryable(f"connection failed: {exc!r}") from exc
        except aiohttp.ClientError as exc:
            raise SourceUnavailable(source, f"request failed: {exc!r}") from exc
        return _decode_json(source, body)


def _unique_terms(keywords: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    terms: list[str] = []
    for keyword in keywords:
        term = " ".join(keyword.split())
        if term and term.casefold() not in seen:
            seen.add(term.casefold())
            terms.append(term)
    return terms


def _assemble(outcomes: Sequence[tuple[str, Parsed | None]]) -> FetchResult:
    articles: list[Article] = []
    unavailable: list[str] = []
    for source in (WIKIPEDIA, HACKER_NEWS):
        batches = [parsed for name, parsed in outcomes if name == source]
        if not batches:
            continue  # disabled
        arrived = [parsed for parsed in batches if parsed is not None]
        if not arrived:
            _log.warning("%s unavailable this turn: all %d requests failed", source, len(batches))
            unavailable.append(source)
            continue
        if len(arrived) < len(batches):
            _log.warning(
                "%s: %d of %d requests failed; keeping the rest",
                source,
                len(batches) - len(arrived),
                len(batches),
            )
        articles.extend(_dedupe(arrived))
    return FetchResult(articles=tuple(articles), unavailable=tuple(unavailable))


def _dedupe(batches: Sequence[Parsed]) -> list[Article]:
    seen: set[str] = set()
    kept: list[Article] = []
    for batch in batches:
        for key, article in batch:
            if key not in seen:
                seen.add(key)
                kept.append(article)
    return kept


def _check_status(source: str, response: aiohttp.ClientResponse) -> None:
    status = response.status
    if status == 429 or status >= 500:
        raise _Retryable(f"HTTP {status}", _retry_after(response.headers.get("Retry-After")))
    if status != 200:
        raise SourceUnavailable(source, f"HTTP {status}")


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, capped; ``None`` when absent or not a number (an HTTP date)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, _MAX_RETRY_AFTER_S)


async def _read_capped(source: str, response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, read in chunks: a chunked or lying response never makes us buffer past ``limit``.

    ``Content-Length`` only lets us refuse early; it is not trusted to bound the read.
    """
    declared = response.content_length
    if declared is not None and declared > limit:
        raise SourceUnavailable(source, f"body of {declared} bytes exceeds the {limit}-byte cap")
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise SourceUnavailable(source, f"body exceeds the {limit}-byte cap")
    return bytes(body)


def _decode_json(source: str, body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise SourceUnavailable(source, f"response is not JSON: {exc}") from exc


def _parse_wikipedia(body: object, *, max_chars: int) -> Parsed:
    """Pages of a ``prop=extracts|info|pageprops`` query, best search rank first."""
    if not isinstance(body, dict):
        raise SourceUnavailable(WIKIPEDIA, "response is not a JSON object")
    if "error" in body:
        raise SourceUnavailable(WIKIPEDIA, f"API error {_api_error(body['error'])}")
    query = body.get("query", {})  # absent when a search finds nothing
    if not isinstance(query, dict):
        raise SourceUnavailable(WIKIPEDIA, "'query' is not an object")
    pages = query.get("pages", [])
    if isinstance(pages, dict):  # formatversion=1 keys pages by id
        pages = list(pages.values())
    if not isinstance(pages, list):
        raise SourceUnavailable(WIKIPEDIA, "'query.pages' is neither a list nor an object")
    # Generator results come in page-id order; the search rank is each page's ``index``.
    ranked = sorted((page for page in pages if isinstance(page, dict)), key=_search_index)
    found: list[tuple[str, Article]] = []
    for page in ranked:
        article = _wikipedia_article(page, max_chars)
        if article is not None:
            found.append((article.title, article))
    return tuple(found)


def _api_error(error: object) -> str:
    if isinstance(error, dict):
        return f"{error.get('code', '?')}: {error.get('info', '')}"
    return repr(error)


def _search_index(page: dict[str, Any]) -> int:
    index = page.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else 0


def _wikipedia_article(page: dict[str, Any], max_chars: int) -> Article | None:
    title = page.get("title")
    if not isinstance(title, str) or "missing" in page or "invalid" in page:
        return None
    props = page.get("pageprops")
    if isinstance(props, dict) and "disambiguation" in props:
        return None
    url = page.get("canonicalurl") or page.get("fullurl")
    if not isinstance(url, str) or not url:
        return None
    extract = page.get("extract")
    text = extract.strip() if isinstance(extract, str) else ""
    revision = page.get("lastrevid")
    return Article(
        source="wikipedia",
        title=title,
        url=url,
        text=_cap(text or title, max_chars),
        rank=max(_search_index(page) - 1, 0),
        revision=str(revision) if _int_or_none(revision) else None,
    )


def _parse_hackernews(body: object, *, max_chars: int) -> Parsed:
    """Stories of an Algolia search, in its relevance order; malformed hits are skipped."""
    if not isinstance(body, dict):
        raise SourceUnavailable(HACKER_NEWS, "response is not a JSON object")
    hits = body.get("hits")
    if not isinstance(hits, list):
        raise SourceUnavailable(HACKER_NEWS, "response has no 'hits' list")
    found: list[tuple[str, Article]] = []
    for rank, hit in enumerate(hits):
        parsed = _hackernews_article(hit, rank, max_chars)
        if parsed is None:
            _log.debug("skipping a malformed Hacker News hit at rank %d: %.200r", rank, hit)
        else:
            found.append(parsed)
    return tuple(found)


def _hackernews_article(hit: object, rank: int, max_chars: int) -> tuple[str, Article] | None:
    if not isinstance(hit, dict):
        return None
    object_id = hit.get("objectID")
    if isinstance(object_id, int) and not isinstance(object_id, bool):
        object_id = str(object_id)
    title = hit.get("title")
    if not isinstance(object_id, str) or not object_id or not isinstance(title, str):
        return None
    title = " ".join(title.split())
    if not title:
        return None
    url = hit.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        url = HN_ITEM_URL.format(object_id)
    story = _plain_text(hit.get("story_text"))
    article = Article(
        source="hackernews",
        title=title,
        url=url,
        text=_cap(f"{title}\n\n{story}" if story else title, max_chars),
        rank=rank,
        published=_str_or_none(hit.get("created_at")),
        points=_int_or_none(hit.get("points")),
        comments=_int_or_none(hit.get("num_comments")),
        author=_str_or_none(hit.get("author")),
        revision=object_id,
    )
    return object_id, article


def _plain_text(value: object) -> str:
    """HN's HTML-escaped ``story_text`` as plain text."""
    if not isinstance(value, str):
        return ""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", value))).strip()


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cap(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1].rstrip() + "…"


def provenance(article: Article) -> tuple[str, str]:
    """``(revision, permalink)``: exactly what was read, and a link to that version.

    A Wikipedia revision id gives an ``oldid`` link; a Hacker News story is its item (its
    text does not change) with the points it had when read. Both are empty when the
    source did not say.
    """
    if article.revision is None:
        return "", ""
    if article.source == "wikipedia":
        parts = urlsplit(article.url)
        title = parts.path.rsplit("/wiki/", 1)[-1]
        query = f"title={title}&oldid={article.revision}"
        return article.revision, urlunsplit((parts.scheme, parts.netloc, "/w/index.php", query, ""))
    points = f" ({article.points} points)" if article.points is not None else ""
    return f"item {article.revision}{points}", HN_ITEM_URL.format(article.revision)
