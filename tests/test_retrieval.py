"""End to end on the confusable set: the real runtime against fakes serving its articles.

The hashing backend keeps it fast; bench/retrieval.py runs the whole set with the real model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from bot.adapters.inmemory import InMemoryAdapter
from bot.cli import reply_json
from bot.config import Settings
from bot.contract import conversation_key
from bot.pipeline import ranking
from bot.runtime import Runtime
from tests.fakes import confusable
from tests.fakes.hackernews import FakeHackerNews
from tests.fakes.ollama import FakeOllama
from tests.fakes.wikipedia import FakeWikipedia


@pytest.fixture
async def wikipedia() -> AsyncIterator[FakeWikipedia]:
    async with FakeWikipedia(confusable.pages()) as fake:
        yield fake


@pytest.fixture
async def hackernews() -> AsyncIterator[FakeHackerNews]:
    async with FakeHackerNews(confusable.stories()) as fake:
        yield fake


@pytest.fixture
async def runtime(
    make_settings: Callable[..., Settings], ollama: FakeOllama
) -> AsyncIterator[Runtime]:
    ollama.responder = confusable.keyword_responder
    settings = make_settings(chat={"max_sources_in_prompt": 20}, analysis={"enabled": False})
    async with await Runtime.start(settings) as rt:
        yield rt


@pytest.fixture
async def bot(runtime: Runtime) -> InMemoryAdapter:
    adapter = InMemoryAdapter()
    await runtime.add_adapter(adapter)
    return adapter


def test_the_labelled_set_is_as_large_as_promised() -> None:
    turns = [t for c in confusable.conversations() for t in c.turns]
    assert len(turns) >= 40
    assert len({c.cluster for c in confusable.conversations()}) >= 12
    assert {t.kind for t in turns} >= {"direct", "overlap", "followup", "hn"}
    titles = {p.title for p in confusable.pages()} | {s.title for s in confusable.stories()}
    assert all(set(t.gold) <= titles for t in turns)


async def test_sources_carry_the_fused_score_and_its_parts(bot: InMemoryAdapter) -> None:
    reply = await bot.ask("does java still need the jvm to run?")

    assert reply.sources, reply
    titles = [s.title for s in reply.sources]
    # Marked disambiguation pages are dropped; an unmarked one is ranked last.
    assert "Java" not in titles
    assert titles[-1] == "Java (disambiguation)"
    parts = [s.parts for s in reply.sources]
    assert all(p is not None for p in parts)
    fused = ranking.weighted([p for p in parts if p is not None])
    # score is the fused score; the order follows it except where the rules intervene.
    assert [s.score for s in reply.sources[:-1]] == [round(f, 4) for f in fused[:-1]]
    assert [s.score for s in reply.sources[:-1]] == sorted(
        (s.score for s in reply.sources[:-1]), reverse=True
    )
    line = reply_json(reply)["sources"][0]
    assert set(line) >= {"n", "title", "url", "source", "score", "cited", "parts"}
    assert set(line["parts"]) == {"dense", "bm25", "prior", "source_rank"}


async def test_a_follow_up_is_ranked_with_the_conversation_behind_it(
    bot: InMemoryAdapter,
) -> None:
    await bot.ask("why is mars red?", channel="mars")
    reply = await bot.ask("can I try driving a rover on it in my browser?", channel="mars")

    assert reply.sources[0].title.startswith("Show HN: A Mars rover simulator")
    assert reply.sources[0].source == "Hacker News"


async def test_sources_remember_the_version_they_were_read_at(
    runtime: Runtime, bot: InMemoryAdapter, wikipedia: FakeWikipedia
) -> None:
    reply = await bot.ask("is rust actually in the linux kernel now?", channel="rev")
    await runtime.pipeline.memory.settle()

    by_title = {s.title: s for s in reply.sources}
    article = by_title["Rust (programming language)"]
    page = next(p for p in confusable.pages() if p.title == article.title)
    # The fake's revision ids are derived from the page id, as its prop=info says.
    assert article.revision == str(page.pageid * 7 + 3)
    assert article.permalink == (
        "https://en.wikipedia.org/w/index.php?title=Rust_(programming_language)"
        f"&oldid={article.revision}"
    )
    story = by_title["Rust in the Linux kernel: two years in"]
    assert story.revision == "item 39100003 (640 points)"
    assert story.permalink == "https://news.ycombinator.com/item?id=39100003"
    # Kept with the turn, so the sources command links to exactly what was read.
    stored = await runtime.store.conversations.last_sources(conversation_key("inmemory", "rev"))
    assert {s.permalink for s in stored} == {s.permalink for s in reply.sources}
    assert stored[0].parts == reply.sources[0].parts
