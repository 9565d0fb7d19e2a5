"""The fetch agent against the Wikipedia and Hacker News fakes, over real HTTP on port 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.agents.fetch import FetchAgent
from bot.agents.fetch import http as fetch_http
from bot.config import HackerNewsSettings, SourcesSettings, WikipediaSettings
from bot.domain import Article, FetchResult
from tests.fakes.base import FakeServer, Fault
from tests.fakes.hackernews import FakeHackerNews
from tests.fakes.wikipedia import FakeWikipedia, WikiPage

USER_AGENT = "research-agent-tests/0.1 (https://example.org/research-agent; tests@example.org)"
WIKI_URL = "https://en.wikipedia.org/wiki/"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FixedJSON(FakeServer):
    """Answers every GET with the same JSON document, for wrong-shape tests."""

    def __init__(self, payload: object) -> None:
        super().__init__()
        self.payload = payload

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/{tail:.*}", self._answer)

    async def _answer(self, request: web.Request) -> web.Response:
        return web.json_response(self.payload)


# Short names for conftest's fakes: these tests mention them on nearly every line.
@pytest.fixture
def wiki(wikipedia: FakeWikipedia) -> FakeWikipedia:
    return wikipedia


@pytest.fixture
def hn(hackernews: FakeHackerNews) -> FakeHackerNews:
    return hackernews


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def make_settings(
    wiki_url: str,
    hn_url: str,
    *,
    wiki_enabled: bool = True,
    hn_enabled: bool = True,
    per_keyword: int = 3,
    **overrides: Any,
) -> SourcesSettings:
    values: dict[str, Any] = {
        "user_agent": USER_AGENT,
        "timeout_s": 2.0,
        "retries": 2,
        "backoff_s": 0.01,
        "wikipedia": WikipediaSettings(
            enabled=wiki_enabled, api_url=wiki_url, results_per_keyword=per_keyword
        ),
        "hackernews": HackerNewsSettings(
            enabled=hn_enabled, api_url=hn_url, results_per_keyword=per_keyword
        ),
    }
    values.update(overrides)
    return SourcesSettings(**values)


def agent_for(
    session: aiohttp.ClientSession,
    wiki: FakeServer,
    hn: FakeServer,
    *,
    clock: FakeClock | None = None,
    **overrides: Any,
) -> FetchAgent:
    settings = make_settings(wiki.url + "/w/api.php", hn.url + "/api/v1", **overrides)
    if clock is None:
        return FetchAgent(session, settings)
    return FetchAgent(session, settings, clock=clock)


def of(result: FetchResult, source: str) -> list[Article]:
    return [a for a in result.articles if a.source == source]


async def test_both_sources_direct_title_first_redirect_followed(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    agent = agent_for(session, wiki, hn)

    result = await agent.fetch(["Transformer (machine learning model)", "attention"])

    assert result.unavailable == ()
    first = result.articles[0]
    assert first.source == "wikipedia"
    assert first.title == "Transformer (deep learning architecture)"
    assert first.url == WIKI_URL + "Transformer_(deep_learning_architecture)"
    assert first.rank == 0
    assert first.text.startswith("The transformer is a deep learning architecture")
    assert "== Architecture ==" not in first.text  # intro only
    wiki_titles = [a.title for a in of(result, "wikipedia")]
    assert "Attention (machine learning)" in wiki_titles
    assert len(wiki_titles) == len(set(wiki_titles))
    paper = next(a for a in of(result, "hackernews") if a.title == "Attention Is All You Need")
    assert paper.url == "https://arxiv.org/abs/1706.03762"
    assert (paper.points, paper.comments, paper.author) == (263, 41, "lamby_ml")
    assert paper.published is not None and paper.published.startswith("2017-06-12")


async def test_disambiguation_pages_are_skipped(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    agent = agent_for(session, wiki, hn, hn_enabled=False)

    result = await agent.fetch(["transformer"])

    articles = of(result, "wikipedia")
    assert "Transformer" not in [a.title for a in articles]
    # The disambiguation page was search rank 0; the ranks of the others are kept.
    assert [(a.title, a.rank) for a in articles] == [
        ("Transformer (deep learning architecture)", 1),
        ("Generative pre-trained transformer", 2),
    ]


async def test_search_results_follow_index_not_page_id(
    session: aiohttp.ClientSession, hn: FakeHackerNews
) -> None:
    pages = [
        WikiPage("Widget", 900, "A widget is a widget; widgets and more widget talk about widget."),
        WikiPage("Gadget", 100, "A gadget is a small tool, unlike a widget."),
    ]
    async with FakeWikipedia(pages) as wiki:
        agent = agent_for(session, wiki, hn, hn_enabled=False)
        result = await agent.fetch(["a widget"])  # no page has that title

    assert [(a.title, a.rank) for a in result.articles] == [("Widget", 0), ("Gadget", 1)]
    assert all(a.url.startswith(WIKI_URL) for a in result.articles)


async def test_wire_format_and_user_agent(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    agent = agent_for(session, wiki, hn)

    await agent.fetch(["GPT", "python"])

    page_params = {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "prop": "extracts|info|pageprops",
        "exintro": "1",
        "explaintext": "1",
        "inprop": "url",
        "ppprop": "disambiguation",
        "redirects": "1",
    }
    wiki_queries = [r.query for r in wiki.requests_to("/w/api.php")]
    assert {**page_params, "titles": "GPT"} in wiki_queries
    for keyword in ("GPT", "python"):
        search = {"generator": "search", "gsrsearch": keyword, "gsrlimit": "3", "exlimit": "max"}
        assert {**page_params, **search} in wiki_queries
    assert len(wiki_queries) == 3
    hn_queries = sorted(r.query["query"] for r in hn.requests_to("/api/v1/search"))
    assert hn_queries == ["GPT", "python"]  # one per keyword, never joined
    for request in hn.requests:
        assert request.query == {
            "query": request.query["query"],
            "tags": "story",
            "hitsPerPage": "3",
        }
    for request in [*wiki.requests, *hn.requests]:
        assert request.headers["User-Agent"] == USER_AGENT
        assert "0" not in request.query.values()


async def test_all_requests_are_in_flight_together(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    wiki.latency_s = hn.latency_s = 0.3
    agent = agent_for(session, wiki, hn)

    started = time.perf_counter()
    result = await agent.fetch(["transformer", "attention", "python"])
    elapsed = time.perf_counter() - started

    assert wiki.max_in_flight == 4  # title lookup + three searches
    assert hn.max_in_flight == 3
    assert elapsed < 2 * 0.3
    assert of(result, "wikipedia") and of(result, "hackernews")


async def test_retries_a_server_error_then_succeeds(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    hn.faults.append(Fault.status(500))
    agent = agent_for(session, wiki, hn, wiki_enabled=False)

    result = await agent.fetch(["python"])

    assert len(hn.requests) == 2
    assert result.unavailable == ()
    assert of(result, "hackernews")


async def test_429_retry_after_is_honoured(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    hn.faults.append(Fault.status(429, retry_after=0.3))
    agent = agent_for(session, wiki, hn, wiki_enabled=False, backoff_s=0.0)

    started = time.perf_counter()
    result = await agent.fetch(["python"])

    assert time.perf_counter() - started >= 0.3
    assert len(hn.requests) == 2
    assert of(result, "hackernews")


async def test_long_retry_after_is_capped(
    session: aiohttp.ClientSession,
    wiki: FakeWikipedia,
    hn: FakeHackerNews,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fetch_http, "_MAX_RETRY_AFTER_S", 0.05)
    hn.faults.append(Fault.status(503, retry_after=3600))
    agent = agent_for(session, wiki, hn, wiki_enabled=False)

    result = await asyncio.wait_for(agent.fetch(["python"]), timeout=5)

    assert of(result, "hackernews")


async def test_retries_are_bounded_and_the_other_source_still_answers(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    wiki.always_fail = Fault.status(503)
    agent = agent_for(session, wiki, hn, retries=2)

    result = await agent.fetch(["python"])

    assert len(wiki.requests) == 2 * 3  # (title + search) x (1 try + 2 retries)
    assert result.unavailable == ("Wikipedia",)
    assert of(result, "hackernews")
    assert not of(result, "wikipedia")


async def test_refused_connection_makes_the_source_unavailable(
    session: aiohttp.ClientSession, hn: FakeHackerNews
) -> None:
    closed = await FakeWikipedia().start()
    await closed.close()
    agent = agent_for(session, closed, hn)

    result = await agent.fetch(["python"])

    assert result.unavailable == ("Wikipedia",)
    assert of(result, "hackernews")


async def test_garbage_body_is_a_failure_and_not_retried(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    hn.always_fail = Fault.garbage()
    agent = agent_for(session, wiki, hn)

    result = await agent.fetch(["python", "gpt"])

    assert result.unavailable == ("Hacker News",)
    assert len(hn.requests) == 2
    assert of(result, "wikipedia")


async def test_hanging_server_times_out_fast(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    wiki.always_fail = Fault.hang()
    # Long enough for the healthy fake to answer on a loaded machine (0.2 s was not, once,
    # in CI); the hang is still given up on at once, not waited out.
    agent = agent_for(session, wiki, hn, timeout_s=1.0)

    started = time.perf_counter()
    result = await agent.fetch(["python"])

    assert time.perf_counter() - started < 3.0
    assert result.unavailable == ("Wikipedia",)
    assert len(wiki.requests) == 2  # a timeout is not retried
    assert of(result, "hackernews")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversize_body_is_a_failure(
    session: aiohttp.ClientSession, hn: FakeHackerNews, chunked: bool
) -> None:
    huge = WikiPage("Huge", 1, "Huge is an enormous article. " * 2000)
    async with FakeWikipedia([huge]) as wiki:
        wiki.chunked = chunked
        agent = agent_for(session, wiki, hn, max_body_bytes=16_000)
        result = await agent.fetch(["huge"])

    assert result.unavailable == ("Wikipedia",)


async def test_wrong_json_shape_is_a_failure(session: aiohttp.ClientSession) -> None:
    async with (
        FixedJSON({"batchcomplete": True, "query": {"pages": "none"}}) as wiki,
        FixedJSON({"hits": None, "nbHits": 0}) as hn,
    ):
        agent = agent_for(session, wiki, hn)
        result = await agent.fetch(["python"])

    assert (result.articles, result.unavailable) == ((), ("Wikipedia", "Hacker News"))
    host = wiki.url.removeprefix("http://")
    assert result.failure("Wikipedia") == (
        f"{host}: 'query.pages' is neither a list nor an object; "
        "check the network, or [sources.wikipedia].api_url"
    )
    assert "response has no 'hits' list" in result.failure("Hacker News")


async def test_api_error_body_is_a_failure_and_not_cached(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    wiki.api_error = ("ratelimited", "You've exceeded your rate limit. Please wait.")
    agent = agent_for(session, wiki, hn)

    failed = await agent.fetch(["python"])
    wiki.api_error = None
    recovered = await agent.fetch(["python"])

    assert failed.unavailable == ("Wikipedia",)
    assert len(wiki.requests) == 4
    assert recovered.unavailable == ()
    assert [a.title for a in of(recovered, "wikipedia")][:1] == ["Python (programming language)"]


async def test_partial_failure_keeps_what_arrived(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    hn.faults.append(Fault.status(404))  # not retried
    agent = agent_for(session, wiki, hn, wiki_enabled=False)

    result = await agent.fetch(["python", "transformer"])

    assert len(hn.requests) == 2
    assert result.unavailable == ()
    assert of(result, "hackernews")


async def test_cache_serves_repeats_until_the_ttl_passes(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    clock = FakeClock()
    agent = agent_for(session, wiki, hn, clock=clock, cache_ttl_s=300.0)

    first = await agent.fetch(["python"])
    sent = len(wiki.requests) + len(hn.requests)
    clock.now += 299
    second = await agent.fetch(["python"])
    assert len(wiki.requests) + len(hn.requests) == sent
    assert second == first

    clock.now += 2
    await agent.fetch(["python"])
    assert len(wiki.requests) + len(hn.requests) == 2 * sent


async def test_cache_evicts_least_recently_used(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    agent = agent_for(session, wiki, hn, wiki_enabled=False, cache_entries=2)

    for keyword in ("python", "gpt", "attention", "attention"):
        await agent.fetch([keyword])
    assert len(hn.requests) == 3
    await agent.fetch(["python"])  # evicted by "attention"
    assert len(hn.requests) == 4


async def test_zero_ttl_disables_the_cache(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    agent = agent_for(session, wiki, hn, wiki_enabled=False, cache_ttl_s=0.0)

    await agent.fetch(["python"])
    await agent.fetch(["python"])

    assert len(hn.requests) == 2


async def test_concurrent_identical_fetches_share_requests(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    wiki.latency_s = hn.latency_s = 0.05
    agent = agent_for(session, wiki, hn)

    first, second = await asyncio.gather(agent.fetch(["python"]), agent.fetch(["python"]))

    assert first == second
    assert (len(wiki.requests), len(hn.requests)) == (2, 1)


async def test_hacker_news_records_old_new_and_ask_hn(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    agent = agent_for(session, wiki, hn, wiki_enabled=False, per_keyword=10)

    result = await agent.fetch(["python", "recurrent", "gpt"])

    by_title = {a.title: a for a in result.articles}
    assert len(by_title) == len(result.articles)  # the GPT-in-Python story only once
    old = by_title["The Unreasonable Effectiveness of Recurrent Neural Networks"]
    assert (old.points, old.comments, old.text) == (601, None, old.title)
    ask = by_title["Ask HN: Is Python still the right first language for machine learning?"]
    assert ask.url == "https://news.ycombinator.com/item?id=38544061"
    assert "Every course I find uses Python" in ask.text
    assert "<p>" not in ask.text


async def test_malformed_hacker_news_hits_are_skipped(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    hn.extra_hits = [
        "not an object",
        {"title": "No objectID"},
        {"objectID": "1", "title": None},
        {"objectID": 42, "title": "Numeric id", "points": "many", "num_comments": True, "url": 7},
        {
            "objectID": "43",
            "title": "Escaped",
            "story_text": "Tom &amp; Jerry&#x27;s<p><i>fine</i>",
        },
    ]
    agent = agent_for(session, wiki, hn, wiki_enabled=False, per_keyword=10)

    result = await agent.fetch(["python"])

    assert result.unavailable == ()
    numeric, escaped, *stories = result.articles
    assert numeric == Article(
        source="hackernews",
        title="Numeric id",
        url="https://news.ycombinator.com/item?id=42",
        text="Numeric id",
        rank=3,
        revision="42",
    )
    assert escaped.text == "Escaped\n\nTom & Jerry's fine"
    assert stories and all(a.title and a.url.startswith("http") for a in stories)


async def test_article_text_is_capped(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    agent = agent_for(session, wiki, hn, max_article_chars=120)

    result = await agent.fetch(["python"])

    assert result.articles
    assert all(len(a.text) <= 120 for a in result.articles)


async def test_disabled_source_is_not_queried(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    agent = agent_for(session, wiki, hn, wiki_enabled=False)

    result = await agent.fetch(["python"])

    assert wiki.requests == []
    assert result.unavailable == ()
    assert {a.source for a in result.articles} == {"hackernews"}


@pytest.mark.parametrize("keywords", [[], ["", "  "]])
async def test_no_keywords_no_requests(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews, keywords: list[str]
) -> None:
    agent = agent_for(session, wiki, hn)

    assert await agent.fetch(keywords) == FetchResult(articles=())
    assert wiki.requests == [] and hn.requests == []


# ------------------------------------------------------------- how a source failed, and where


async def test_a_refused_connection_names_the_host_and_says_refused(
    session: aiohttp.ClientSession, hn: FakeHackerNews
) -> None:
    closed = await FakeWikipedia().start()
    host = closed.url.removeprefix("http://")
    await closed.close()
    agent = agent_for(session, closed, hn, retries=1)

    result = await agent.fetch(["python"])

    assert result.failure("Wikipedia") == (
        f"{host}: connection refused (after 2 attempts); "
        "check the network, or [sources.wikipedia].api_url"
    )
    assert result.failure("Hacker News") == ""


async def test_an_unresolvable_host_is_a_dns_failure(
    session: aiohttp.ClientSession, wiki: FakeWikipedia
) -> None:
    settings = make_settings(
        wiki.url + "/w/api.php", "http://nonexistent.invalid/api/v1", retries=0
    )
    result = await FetchAgent(session, settings).fetch(["python"])

    assert result.unavailable == ("Hacker News",)
    failure = result.failure("Hacker News")
    assert failure.startswith("nonexistent.invalid: DNS lookup failed (")
    assert failure.endswith("); check the network, or [sources.hackernews].api_url")
    assert "attempts" not in failure


async def test_a_timeout_says_how_long_it_waited(
    session: aiohttp.ClientSession, wiki: FakeWikipedia, hn: FakeHackerNews
) -> None:
    hn.always_fail = Fault.hang()
    agent = agent_for(session, wiki, hn, timeout_s=0.2)

    result = await agent.fetch(["python", "gpt"])

    host = hn.url.removeprefix("http://")
    assert result.failure("Hacker News") == (
        f"{host}: no answer within 0.2 s; check the network, or [sources.hackernews].api_url"
    ), "two requests failed the same way: said once"
