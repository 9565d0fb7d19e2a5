"""Wikipedia through the MediaWiki Action API: the requests of a turn, reading the answers,
and the link to the revision that was read.

For one turn: a direct title lookup of the primary topic (``keywords[0]``, redirects
followed) and, per keyword, a full-text search that returns the pages' intro extracts and
canonical URLs in the same response. Disambiguation and missing pages are dropped; pages
are deduplicated by title (the direct title match first, rank 0).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bot.agents.fetch.fields import cap, int_or_none
from bot.agents.fetch.http import Params, Parsed, Request
from bot.config import WikipediaSettings
from bot.domain import SOURCE_LABELS, Article
from bot.errors import SourceUnavailable

LABEL = SOURCE_LABELS["wikipedia"]

# Boolean parameters are true whenever present, so false ones are left out, never sent as 0.
_PAGE_PARAMS: Params = (
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


def requests(settings: WikipediaSettings, terms: Sequence[str], max_chars: int) -> list[Request]:
    """The title lookup of ``terms[0]`` and one search per term; none when disabled."""
    if not settings.enabled:
        return []
    parse = functools.partial(parse_pages, max_chars=max_chars)
    title = Request(LABEL, settings.endpoint, (*_PAGE_PARAMS, ("titles", terms[0])), parse)
    searches = [
        Request(
            LABEL,
            settings.endpoint,
            (
                *_PAGE_PARAMS,
                ("generator", "search"),
                ("gsrsearch", term),
                ("gsrlimit", str(settings.results_per_keyword)),
                # Without it TextExtracts fills in only the first page's extract.
                ("exlimit", "max"),
            ),
            parse,
        )
        for term in terms
    ]
    return [title, *searches]


def parse_pages(body: object, *, max_chars: int) -> Parsed:
    """Pages of a ``prop=extracts|info|pageprops`` query, best search rank first."""
    if not isinstance(body, dict):
        raise SourceUnavailable(LABEL, "response is not a JSON object")
    if "error" in body:
        raise SourceUnavailable(LABEL, f"API error {_api_error(body['error'])}")
    query = body.get("query", {})  # absent when a search finds nothing
    if not isinstance(query, dict):
        raise SourceUnavailable(LABEL, "'query' is not an object")
    pages = query.get("pages", [])
    if isinstance(pages, dict):  # formatversion=1 keys pages by id
        pages = list(pages.values())
    if not isinstance(pages, list):
        raise SourceUnavailable(LABEL, "'query.pages' is neither a list nor an object")
    # Generator results come in page-id order; the search rank is each page's ``index``.
    ranked = sorted((page for page in pages if isinstance(page, dict)), key=_search_index)
    found: list[tuple[str, Article]] = []
    for page in ranked:
        article = _article(page, max_chars)
        if article is not None:
            found.append((article.title, article))
    return tuple(found)


def permalink(article: Article) -> str:
    """The ``oldid`` link to the revision that was read."""
    parts = urlsplit(article.url)
    title = parts.path.rsplit("/wiki/", 1)[-1]
    query = f"title={title}&oldid={article.revision}"
    return urlunsplit((parts.scheme, parts.netloc, "/w/index.php", query, ""))


def _api_error(error: object) -> str:
    if isinstance(error, dict):
        return f"{error.get('code', '?')}: {error.get('info', '')}"
    return repr(error)


def _search_index(page: dict[str, Any]) -> int:
    index = page.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else 0


def _article(page: dict[str, Any], max_chars: int) -> Article | None:
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
        text=cap(text or title, max_chars),
        rank=max(_search_index(page) - 1, 0),
        revision=str(revision) if int_or_none(revision) else None,
    )
