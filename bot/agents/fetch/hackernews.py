"""Hacker News through Algolia's search API: the requests of a turn, reading the answers,
and the link to the story's item.

One story search per keyword: Algolia requires every word of a query to match, so
keywords are never joined. Stories are deduplicated by ``objectID``; ``Article.rank`` is
the position in Algolia's relevance order.
"""

from __future__ import annotations

import functools
import html
import logging
import re
from collections.abc import Sequence

from bot.agents.fetch.fields import cap, int_or_none, str_or_none
from bot.agents.fetch.http import Parsed, Request
from bot.config import HackerNewsSettings
from bot.domain import SOURCE_LABELS, Article
from bot.errors import SourceUnavailable

_log = logging.getLogger(__name__)

LABEL = SOURCE_LABELS["hackernews"]
ITEM_URL = "https://news.ycombinator.com/item?id={}"
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def requests(settings: HackerNewsSettings, terms: Sequence[str], max_chars: int) -> list[Request]:
    """One story search per term; none when disabled."""
    if not settings.enabled:
        return []
    url = settings.api_url.rstrip("/") + "/search"
    parse = functools.partial(parse_hits, max_chars=max_chars)
    limit = str(settings.results_per_keyword)
    return [
        Request(LABEL, url, (("query", term), ("tags", "story"), ("hitsPerPage", limit)), parse)
        for term in terms
    ]


def parse_hits(body: object, *, max_chars: int) -> Parsed:
    """Stories of an Algolia search, in its relevance order; malformed hits are skipped."""
    if not isinstance(body, dict):
        raise SourceUnavailable(LABEL, "response is not a JSON object")
    hits = body.get("hits")
    if not isinstance(hits, list):
        raise SourceUnavailable(LABEL, "response has no 'hits' list")
    found: list[tuple[str, Article]] = []
    for rank, hit in enumerate(hits):
        parsed = _article(hit, rank, max_chars)
        if parsed is None:
            _log.debug("skipping a malformed Hacker News hit at rank %d: %.200r", rank, hit)
        else:
            found.append(parsed)
    return tuple(found)


def permalink(article: Article) -> str:
    """The story's item page (its text does not change)."""
    return ITEM_URL.format(article.revision)


def _article(hit: object, rank: int, max_chars: int) -> tuple[str, Article] | None:
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
        url = ITEM_URL.format(object_id)
    story = _plain_text(hit.get("story_text"))
    article = Article(
        source="hackernews",
        title=title,
        url=url,
        text=cap(f"{title}\n\n{story}" if story else title, max_chars),
        rank=rank,
        published=str_or_none(hit.get("created_at")),
        points=int_or_none(hit.get("points")),
        comments=int_or_none(hit.get("num_comments")),
        author=str_or_none(hit.get("author")),
        revision=object_id,
    )
    return object_id, article


def _plain_text(value: object) -> str:
    """HN's HTML-escaped ``story_text`` as plain text."""
    if not isinstance(value, str):
        return ""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", value))).strip()
