"""A fake Hacker News search: Algolia's ``/api/v1/search`` and ``/api/v1/search_by_date``.

Point a client at ``fake.url + "/api/v1"``. Served as the real API does it:

* ``query``: every word must match (case-insensitive) in the title, the story text or the
  URL; the last word may match as a prefix (Algolia's ``prefixLast``). An empty query
  matches everything;
* ``search`` ranks by relevance (query words found in the title, then points and comments);
  ``search_by_date`` by ``created_at_i``, newest first;
* ``tags``: comma-separated tags all required, ``(a,b)`` meaning either; each story carries
  ``story``, ``author_<name>``, ``story_<id>`` and ``ask_hn`` / ``show_hn`` from its title;
* ``numericFilters`` on ``points``, ``num_comments`` and ``created_at_i``;
* ``hitsPerPage`` (default 20, at most 1000) and ``page``; a non-integer is a 400 with
  ``{"message", "status"}``;
* answers carry ``hits``, ``nbHits``, ``page``, ``nbPages``, ``hitsPerPage``, ``query``,
  ``params`` and ``processingTimeMS``; hits carry ``objectID`` (a string), ``_tags`` and
  ``_highlightResult``. Newer records omit absent keys; "old records" (``old_record=True``)
  carry explicit nulls. Ask HN stories have no ``url``; ``story_text`` is HTML-escaped.

Test switches beyond the base class's (latency, faults, in-flight counts): ``extra_hits``
(raw hits served verbatim at the top of every first page, e.g. malformed records).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from tests.fakes.base import FakeServer

API_PREFIX = "/api/v1"
_MAX_HITS_PER_PAGE = 1000
_NUMERIC_FILTER = re.compile(r"(\w+)\s*(<=|>=|!=|<|>|=)\s*(-?\d+(?:\.\d+)?)")
_NUMERIC_FIELDS = ("points", "num_comments", "created_at_i")
_TAG_GROUPS = re.compile(r"\([^)]*\)|[^,]+")


@dataclass(frozen=True, slots=True)
class HNStory:
    """One story. ``story_text`` is HTML-escaped, as Hacker News stores it."""

    objectID: str
    title: str
    author: str
    created_at_i: int
    url: str | None = None
    points: int | None = None
    num_comments: int | None = None
    story_text: str | None = None
    # Pre-2020 records: absent fields are explicit nulls instead of missing keys.
    old_record: bool = False

    @property
    def created_at(self) -> str:
        moment = datetime.fromtimestamp(self.created_at_i, UTC)
        suffix = "Z" if self.old_record else ".000Z"
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + suffix

    @property
    def tags(self) -> list[str]:
        tags = ["story", f"author_{self.author}", f"story_{self.objectID}"]
        if self.title.startswith("Ask HN:"):
            tags.append("ask_hn")
        if self.title.startswith("Show HN:"):
            tags.append("show_hn")
        return tags


class _BadRequest(Exception):
    pass


class FakeHackerNews(FakeServer):
    """Algolia's Hacker News search over ``stories`` (default :data:`DEFAULT_STORIES`)."""

    def __init__(self, stories: Sequence[HNStory] | None = None) -> None:
        super().__init__()
        self.stories: tuple[HNStory, ...] = tuple(DEFAULT_STORIES if stories is None else stories)
        self.extra_hits: list[Any] = []

    def routes(self, app: web.Application) -> None:
        # Outermost, so the base class's latency counts as time in flight.
        app.router.add_get(f"{API_PREFIX}/search", self._search)
        app.router.add_get(f"{API_PREFIX}/search_by_date", self._search_by_date)

    def matching(self, query: str) -> list[HNStory]:
        """Stories matching every word of ``query``, in relevance order."""
        words = _words(query)
        found = [story for story in self.stories if _matches(story, words)]
        return sorted(found, key=lambda story: _relevance(story, words))

    async def _search(self, request: web.Request) -> web.Response:
        return self._answer(request, by_date=False)

    async def _search_by_date(self, request: web.Request) -> web.Response:
        return self._answer(request, by_date=True)

    def _answer(self, request: web.Request, *, by_date: bool) -> web.Response:
        params = request.query
        try:
            per_page = _integer(params.get("hitsPerPage"), "hitsPerPage", 20)
            page = _integer(params.get("page"), "page", 0)
            stories = self._filtered(params)
        except _BadRequest as exc:
            return web.json_response({"message": str(exc), "status": 400}, status=400)
        query = params.get("query", "")
        if by_date:
            stories.sort(key=lambda story: -story.created_at_i)
        words = _words(query)
        hits: list[Any] = [_hit(story, words) for story in stories]
        hits = [*self.extra_hits, *hits]
        start = page * per_page
        return web.json_response(
            {
                "exhaustive": {"nbHits": True, "typo": True},
                "exhaustiveNbHits": True,
                "exhaustiveTypo": True,
                "hits": hits[start : start + per_page],
                "hitsPerPage": per_page,
                "nbHits": len(hits),
                "nbPages": math.ceil(len(hits) / per_page) if per_page else 0,
                "page": page,
                "params": request.query_string,
                "processingTimeMS": 1,
                "processingTimingsMS": {"_request": {"roundTrip": 1}},
                "query": query,
                "serverTimeMS": 2,
            }
        )

    def _filtered(self, params: MultiMapping[str]) -> list[HNStory]:
        stories = self.matching(params.get("query", ""))
        tags = params.get("tags")
        if tags:
            stories = [story for story in stories if _has_tags(story, tags)]
        numeric = params.get("numericFilters")
        if numeric:
            stories = [story for story in stories if _passes(story, numeric)]
        return stories


def _integer(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f'Invalid value for "{name}" parameter, expected integer') from None
    if value < 0 or (name == "hitsPerPage" and value > _MAX_HITS_PER_PAGE):
        raise _BadRequest(f'Invalid value for "{name}" parameter, out of range')
    return value


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def _plain(story_text: str | None) -> str:
    return html.unescape(re.sub(r"<[^>]*>", " ", story_text or ""))


def _tokens(story: HNStory) -> list[str]:
    return _words(f"{story.title} {_plain(story.story_text)} {story.url or ''}")


def _matches(story: HNStory, words: Sequence[str]) -> bool:
    tokens = _tokens(story)
    for position, word in enumerate(words):
        last = position == len(words) - 1
        if not any(token == word or (last and token.startswith(word)) for token in tokens):
            return False
    return True


def _relevance(story: HNStory, words: Sequence[str]) -> tuple[int, int, int, int]:
    title = _words(story.title)
    in_title = sum(1 for word in words if any(token.startswith(word) for token in title))
    return (-in_title, -(story.points or 0), -(story.num_comments or 0), -story.created_at_i)


def _has_tags(story: HNStory, tags: str) -> bool:
    own = set(story.tags)
    for group in _TAG_GROUPS.findall(tags):
        options = {tag.strip() for tag in group.strip("()").split(",") if tag.strip()}
        if options and not options & own:
            return False
    return True


def _passes(story: HNStory, filters: str) -> bool:
    for item in filters.split(","):
        match = _NUMERIC_FILTER.fullmatch(item.strip())
        if match is None or match[1] not in _NUMERIC_FIELDS:
            raise _BadRequest(f"Invalid syntax for numeric condition: {item}")
        value = getattr(story, match[1])
        if value is None or not _compare(value, match[2], float(match[3])):
            return False
    return True


def _compare(value: float, op: str, bound: float) -> bool:
    return {
        "<": value < bound,
        "<=": value <= bound,
        ">": value > bound,
        ">=": value >= bound,
        "=": value == bound,
        "!=": value != bound,
    }[op]


def _highlight(text: str, words: Sequence[str], *, escaped: bool = False) -> dict[str, Any]:
    value = text if escaped else html.escape(text)
    if not words:
        return {"matchLevel": "none", "matchedWords": [], "value": value}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")", re.IGNORECASE)
    matched = sorted({w for w in words if re.search(r"\b" + re.escape(w), text, re.I)})
    level = "full" if len(matched) == len(set(words)) else "partial" if matched else "none"
    value = pattern.sub(r"<em>\1</em>", value)
    return {"matchLevel": level, "matchedWords": matched, "value": value}


def _hit(story: HNStory, words: Sequence[str]) -> dict[str, Any]:
    highlights = {
        "author": _highlight(story.author, words),
        "title": _highlight(story.title, words),
    }
    if story.url is not None:
        highlights["url"] = _highlight(story.url, words)
    if story.story_text is not None:
        highlights["story_text"] = _highlight(story.story_text, words, escaped=True)
    record: dict[str, Any] = {
        "_highlightResult": highlights,
        "_tags": story.tags,
        "author": story.author,
        "children": [],
        "created_at": story.created_at,
        "created_at_i": story.created_at_i,
        "num_comments": story.num_comments,
        "objectID": story.objectID,
        "points": story.points,
        "story_id": int(story.objectID),
        "story_text": story.story_text,
        "title": story.title,
        "updated_at": story.created_at,
        "url": story.url,
    }
    if story.old_record:
        record.update(comment_text=None, parent_id=None, story_title=None, story_url=None)
        return record
    return {key: value for key, value in record.items() if value is not None}


DEFAULT_STORIES: tuple[HNStory, ...] = (
    HNStory(
        objectID="14542121",
        title="Attention Is All You Need",
        url="https://arxiv.org/abs/1706.03762",
        author="lamby_ml",
        points=263,
        num_comments=41,
        created_at_i=1497300000,
        old_record=True,
    ),
    HNStory(
        objectID="17411592",
        title="The Illustrated Transformer",
        url="https://jalammar.github.io/illustrated-transformer/",
        author="pmcgrath",
        points=482,
        num_comments=39,
        created_at_i=1530180000,
    ),
    HNStory(
        objectID="37012845",
        title="Ask HN: How do transformers handle context longer than their training window?",
        author="quietgradient",
        points=57,
        num_comments=23,
        created_at_i=1691400000,
        story_text=(
            "I understand that self-attention is quadratic in the sequence length, but new "
            "models claim windows of 100k tokens and more.<p>What makes that work in "
            "practice &ndash; rotary position scaling, sparse attention, something else? "
            "I&#x27;d love pointers to papers &amp; blog posts."
        ),
    ),
    HNStory(
        objectID="18179393",
        title="BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
        url="https://arxiv.org/abs/1810.04805",
        author="asparagui",
        points=154,
        num_comments=18,
        created_at_i=1539300000,
        old_record=True,
    ),
    HNStory(
        objectID="23345379",
        title="GPT-3: Language Models Are Few-Shot Learners",
        url="https://arxiv.org/abs/2005.14165",
        author="gwern_fan",
        points=318,
        num_comments=197,
        created_at_i=1590700000,
    ),
    HNStory(
        objectID="36892314",
        title="Show HN: A GPT in 300 lines of plain Python and NumPy",
        url="https://github.com/example/tinygpt",
        author="byteweaver",
        points=205,
        num_comments=44,
        created_at_i=1690500000,
        story_text=(
            "I wrote this to understand how a decoder-only transformer generates text. "
            "It trains on Shakespeare in about ten minutes on a laptop CPU.<p>Feedback on "
            "the attention code is very welcome."
        ),
    ),
    HNStory(
        objectID="9584325",
        title="The Unreasonable Effectiveness of Recurrent Neural Networks",
        url="http://karpathy.github.io/2015/05/21/rnn-effectiveness/",
        author="benjaminwb",
        points=601,
        num_comments=None,
        created_at_i=1432200000,
        old_record=True,
    ),
    HNStory(
        objectID="33322343",
        title="Python 3.11 is up to 10-60% faster than Python 3.10",
        url="https://docs.python.org/3.11/whatsnew/3.11.html",
        author="snakecharmer",
        points=712,
        num_comments=389,
        created_at_i=1666600000,
    ),
    HNStory(
        objectID="38544061",
        title="Ask HN: Is Python still the right first language for machine learning?",
        author="newgradnoah",
        points=88,
        num_comments=121,
        created_at_i=1701900000,
        story_text=(
            "Every course I find uses Python with PyTorch, but people at work say Rust "
            "and Mojo are the future.<p>If you were starting today, would you still learn "
            "Python first? Why or why not?"
        ),
    ),
)
