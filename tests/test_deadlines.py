"""Deadlines and caps: a slow or runaway language model never holds a conversation.

The real runtime against each fake LLM server (Ollama, OpenAI-compatible), which can
trickle its chunks (``chunk_delay_s``), be slow to its first byte (``latency_s``) and
stream without end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bot.adapters.inmemory import InMemoryAdapter
from bot.config import Settings
from bot.pipeline.orchestrator import BACKSTOP_S
from bot.pipeline.prompts import SYNTHESIS_MARKER
from bot.pipeline.wording import ANSWER_LONG, ANSWER_SLOW, LLM_SLOW, TURN_SLOW
from bot.runtime import Runtime
from tests.conftest import LLM_PROVIDERS, FakeLLM, ignore_token_limit
from tests.fakes.base import Fault
from tests.fakes.scripted import default_responder
from tests.fakes.wikipedia import FakeWikipedia

SettingsFactory = Callable[..., Settings]
QUESTION = "What is the transformer architecture in deep learning?"


@pytest.fixture(params=LLM_PROVIDERS)
def llm_provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def answering(llm: FakeLLM, answer: Callable[[], Iterator[str]]) -> None:
    """Keyword and summary calls as usual; the answer call streams ``answer()``."""

    def responder(body: dict[str, Any]) -> Any:
        if SYNTHESIS_MARKER in body["messages"][0]["content"]:
            return answer()
        return default_responder(body)

    llm.responder = responder


async def start(runtime: Runtime) -> InMemoryAdapter:
    bot = InMemoryAdapter()
    await runtime.add_adapter(bot)
    return bot


async def test_a_trickling_model_is_cut_at_the_turn_deadline_and_the_next_question_goes_on(
    make_settings: SettingsFactory, llm: FakeLLM
) -> None:
    def trickle() -> Iterator[str]:
        while True:
            yield " slowly"

    answering(llm, trickle)
    settings = make_settings(
        chat={"turn_timeout_s": 6.0},
        llm={"first_token_timeout_s": 30.0, "call_timeout_s": 600.0, "timeout_s": 30.0},
    )
    async with await Runtime.start(settings) as runtime:
        bot = await start(runtime)
        # A chunk every half second: no read ever times out.
        llm.pace(SYNTHESIS_MARKER, 0.5)
        started = time.monotonic()
        first = asyncio.create_task(bot.ask(QUESTION))
        # The first turn holds the conversation (its reply is up) before the second comes.
        await asyncio.wait_for(bot.service.wait_until(lambda: bool(bot.service.posts)), 30)
        second = asyncio.create_task(bot.ask("What is BERT in language models?"))
        reply = await asyncio.wait_for(first, 30)
        took = time.monotonic() - started
        assert took < 6.0 + 5.0, took
        assert reply.status == "degraded"
        assert reply.body.startswith("slowly")
        assert [n.user for n in reply.notices if n.kind == "answer_cut"] == [ANSWER_SLOW]
        llm.pace(SYNTHESIS_MARKER, 0.0)
        answering(llm, lambda: iter(["BERT is a model [1]."]))
        later = await asyncio.wait_for(second, 30)
        assert later.status == "answered", "the conversation moved on"


async def test_a_model_slow_to_start_gives_the_sources_with_a_notice(
    make_settings: SettingsFactory, llm: FakeLLM
) -> None:
    settings = make_settings(llm={"first_token_timeout_s": 1.0, "timeout_s": 30.0})
    async with await Runtime.start(settings) as runtime:
        bot = await start(runtime)
        llm.latency_s = 3.0  # before every reply's first byte
        started = time.monotonic()
        reply = await asyncio.wait_for(bot.ask(QUESTION), 30)
    assert time.monotonic() - started < 3.0, "the keyword call gave up after 1 s"
    assert reply.status == "degraded"
    assert [n.user for n in reply.notices if n.kind == "llm_unavailable"] == [LLM_SLOW]
    assert reply.sources, "the question's own words still found sources"
    assert "first_token_timeout_s" in next(n.operator for n in reply.notices)


async def test_a_server_that_ignores_num_predict_is_cut_and_the_answer_says_so(
    make_settings: SettingsFactory, llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    def endless() -> Iterator[str]:
        chunk = "x" * 1000 + " "
        for _ in range(10_000):  # 10 MB, were it all read
            yield chunk

    answering(llm, endless)
    ignore_token_limit(llm)
    settings = make_settings(chat={"max_answer_chars": 5000})
    async with await Runtime.start(settings) as runtime:
        bot = await start(runtime)
        with caplog.at_level(logging.INFO):
            reply = await asyncio.wait_for(bot.ask(QUESTION), 60)
    assert reply.status == "degraded"
    assert len(reply.body) <= 5000
    assert [n.user for n in reply.notices if n.kind == "answer_cut"] == [ANSWER_LONG]
    assert max(len(r.getMessage()) for r in caplog.records) < 2000, "log lines stay bounded"


async def test_the_token_cap_holds_for_many_small_chunks(
    make_settings: SettingsFactory, llm: FakeLLM
) -> None:
    answering(llm, lambda: iter(["a "] * 5000))
    ignore_token_limit(llm)  # the bot's own count must hold
    settings = make_settings(llm={"max_tokens": 100})
    async with await Runtime.start(settings) as runtime:
        bot = await start(runtime)
        reply = await asyncio.wait_for(bot.ask(QUESTION), 60)
    assert reply.body.split() == ["a"] * 100
    assert [n.user for n in reply.notices if n.kind == "answer_cut"] == [ANSWER_LONG]


async def test_a_step_that_overruns_the_turn_deadline_is_stopped_and_the_user_told(
    make_settings: SettingsFactory, llm: FakeLLM, wikipedia: FakeWikipedia
) -> None:
    # A source that hangs, with its own timeout far past the turn's: only the turn's
    # deadline (and its backstop) can end this turn.
    wikipedia.always_fail = Fault.hang()
    settings = make_settings(chat={"turn_timeout_s": 5.0}, sources={"timeout_s": 60.0})
    async with await Runtime.start(settings) as runtime:
        bot = await start(runtime)
        started = time.monotonic()
        reply = await asyncio.wait_for(bot.ask(QUESTION), 60)
        assert time.monotonic() - started < 5.0 + BACKSTOP_S + 2.0
        assert reply.status == "failed"
        assert [n.user for n in reply.notices if n.kind == "answer_cut"] == [TURN_SLOW]
        wikipedia.always_fail = None
        again = await asyncio.wait_for(bot.ask("What is BERT in language models?"), 60)
        assert again.ok, "the conversation moved on"
