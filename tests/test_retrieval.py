"""End to end on the confusable set: the real runtime against fakes serving its articles.

The hashing backend keeps it fast; bench/retrieval.py runs the whole set with the real model.
Every test runs once per ``[llm].provider``: the keyword replies small models give reach
the bot through Ollama's API and through an OpenAI-compatible one alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.adapters.inmemory import InMemoryAdapter
from bot.cli import reply_json
from bot.config import RankingSettings, Settings
from bot.contract import conversation_key
from bot.pipeline import ranking
from bot.pipeline.prompts import KEYWORD_SCHEMA, TOPIC_MARKER
from bot.pipeline.search_plan import question_terms
from bot.runtime import Runtime
from tests.conftest import LLM_PROVIDERS, FakeLLM, ignore_token_limit
from tests.fakes import confusable
from tests.fakes.hackernews import FakeHackerNews
from tests.fakes.keyword_modes import Mode, misbehaving
from tests.fakes.scripted import requested_schema, requested_token_limit
from tests.fakes.wikipedia import FakeWikipedia


@pytest.fixture(params=LLM_PROVIDERS)
def llm_provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def wikipedia() -> AsyncIterator[FakeWikipedia]:
    async with FakeWikipedia(confusable.pages()) as fake:
        yield fake


@pytest.fixture
async def hackernews() -> AsyncIterator[FakeHackerNews]:
    async with FakeHackerNews(confusable.stories()) as fake:
        yield fake


@pytest.fixture
async def runtime(make_settings: Callable[..., Settings], llm: FakeLLM) -> AsyncIterator[Runtime]:
    llm.responder = confusable.keyword_responder
    settings = make_settings(chat={"max_sources_in_prompt": 20}, analysis={"enabled": False})
    async with await Runtime.start(settings) as rt:
        yield rt


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
    # Marked disambiguation pages are dropped; an unmarked one is ranked after every
    # article (a story held back by the Hacker News share may still follow it).
    assert "Java" not in titles
    wikipedia = [s.title for s in reply.sources if s.source == "Wikipedia"]
    assert wikipedia[-1] == "Java (disambiguation)"
    parts = [s.parts for s in reply.sources]
    assert all(p is not None for p in parts)
    fuse = ranking.FUSIONS[RankingSettings().fusion]  # the default, as the bot runs it
    fused = fuse([p for p in parts if p is not None])
    # score is the fused score; the order follows it except where the rules intervene.
    assert [s.score for s in reply.sources] == [round(f, 4) for f in fused]
    # (Stories may be held back by the Hacker News share, so: the articles.)
    kept = [s.score for s in reply.sources if s.source == "Wikipedia"][:-1]
    assert kept == sorted(kept, reverse=True)
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


@pytest.mark.parametrize("honours_format", [True, False])
async def test_a_wrong_topic_keyword_reply_still_finds_the_question_s_article(
    llm: FakeLLM, bot: InMemoryAdapter, honours_format: bool
) -> None:
    # The case: a small model names "Rust (programming language)" for a question
    # about a film franchise, well-formed, inside the JSON schema or not.
    llm.responder = misbehaving(
        "wrong-topic",
        base=confusable.keyword_responder,
        wrong_topics=["Rust (programming language)"],
    )
    llm.honours_format = honours_format
    reply = await bot.ask("who leads the autobots?")

    [keyword_call] = [b for b in llm.chat_bodies() if TOPIC_MARKER in str(b["messages"])]
    assert requested_schema(keyword_call) == KEYWORD_SCHEMA
    assert requested_token_limit(keyword_call) == 64
    titles = [s.title for s in reply.sources]
    assert titles[0] == "Transformers (franchise)", titles
    # The wrong topic was searched (it may add candidates) but decided nothing.
    assert "Rust (programming language)" in titles
    assert reply.topics == ("autobots", "leads")


@pytest.mark.parametrize("mode", ["prose", "empty", "truncated"])
@pytest.mark.parametrize("honours_format", [True, False])
async def test_a_keyword_reply_with_no_keyword_leaves_the_question_s_own_search(
    llm: FakeLLM, bot: InMemoryAdapter, mode: Mode, honours_format: bool
) -> None:
    llm.responder = misbehaving(mode, base=confusable.keyword_responder)
    llm.honours_format = honours_format
    question = "why did the 64-bit jaguar flop?"
    reply = await bot.ask(question)

    assert reply.sources[0].title == "Atari Jaguar"
    assert reply.topics == tuple(question_terms(question)) == ("64-bit", "jaguar", "flop")


async def test_the_keyword_reply_is_cut_at_its_own_token_budget(
    llm: FakeLLM, bot: InMemoryAdapter
) -> None:
    # A server that ignores both the token limit and the schema: the client's own count
    # cuts.
    def rambling(body: dict[str, Any]) -> Any:
        if TOPIC_MARKER not in str(body["messages"]):
            return confusable.keyword_responder(body)
        return ["Jaguar", "\n", *[" and"] * 100, "\n", "Atari", " Jaguar"]

    llm.honours_format = False
    ignore_token_limit(llm)
    llm.responder = rambling
    reply = await bot.ask("why did the 64-bit jaguar flop?")

    # "Atari Jaguar" came after the 64th token: never read. The cut line is dropped.
    assert reply.topics == ("Jaguar",)
    assert reply.sources[0].title == "Atari Jaguar"
