"""End to end: the real runtime (ChatOllama, aiohttp, aiosqlite, subprocess, process pool)
against the fakes, driven through the in-memory adapter. Nothing of the project is mocked.

The hashing embedding backend keeps these fast; tests/test_embeddings.py and
tests/test_cli.py cover the real sentence-transformers model.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.adapters.inmemory import InMemoryAdapter
from bot.agents.memory import MemoryStore
from bot.config import Settings
from bot.domain import InboundMessage, conversation_key
from bot.pipeline.prompts import SYNTHESIS_MARKER
from bot.pipeline.wording import FAILURE_LINE
from bot.runtime import Runtime
from tests.fakes.base import Fault
from tests.fakes.hackernews import FakeHackerNews
from tests.fakes.ollama import FakeOllama, default_responder
from tests.fakes.wikipedia import FakeWikipedia

SettingsFactory = Callable[..., Settings]
QUESTION = "What is the transformer architecture in deep learning?"


@pytest.fixture
async def runtime(make_settings: SettingsFactory) -> AsyncIterator[Runtime]:
    async with await Runtime.start(make_settings()) as rt:
        yield rt


@pytest.fixture
async def bot(runtime: Runtime) -> AsyncIterator[InMemoryAdapter]:
    adapter = InMemoryAdapter(runtime.pipeline.handle)
    await adapter.start()
    yield adapter
    await adapter.close()


def citations(text: str) -> set[int]:
    return {int(n) for group in re.findall(r"\[([\d,\s]+)\]", text) for n in group.split(",")}


async def test_a_turn_answers_with_citations_that_map_to_real_links(
    bot: InMemoryAdapter, ollama: FakeOllama, wikipedia: FakeWikipedia, hackernews: FakeHackerNews
) -> None:
    result = await bot.deliver(QUESTION)

    assert result.ok
    assert result.topics and "transformer" in " ".join(result.topics).lower()
    body, _, footer = result.answer.partition("\n\nSources:\n")
    assert footer, result.answer
    # The fake model cites [1], [2] and an invalid [9]; the invalid one must be gone.
    assert citations(body) == {1, 2}
    assert [s.n for s in result.sources] == [1, 2]
    for source in result.sources:
        assert f"[{source.n}] {source.title}" in footer
        assert source.url in footer
        assert source.url.startswith(("https://en.wikipedia.org/wiki/", "https://", "http://"))
    assert wikipedia.requests and hackernews.requests
    # Everything posted is exactly what was streamed, in more than one piece.
    listener = bot.listeners[conversation_key("memory", "general")][0]
    assert "".join(listener.chunks) == result.answer
    assert len(listener.chunks) > 3
    assert listener.steps[0] == "Choosing search keywords"
    assert set(result.timings) >= {
        "total_s",
        "topics_s",
        "fetch_s",
        "analysis_s",
        "embed_s",
        "synthesis_s",
    }
    assert result.analysis is not None and result.analysis.article_count > 0
    # Keyword extraction, then synthesis: two LLM calls, with the sources in the second.
    topic_call, answer_call = ollama.chat_bodies()
    assert topic_call["stream"] is True
    prompt = answer_call["messages"][-1]["content"]
    assert "[1]" in prompt
    # Hacker News stories reach the model with their standing and date.
    assert re.search(r"\(\d+ points, \d+ comments, posted \d{4}-\d\d-\d\d\)", prompt)


async def test_the_question_survives_a_turn_that_dies_during_generation(
    runtime: Runtime, bot: InMemoryAdapter, ollama: FakeOllama
) -> None:
    def hang_the_next_call(body: dict[str, Any]) -> list[str]:
        ollama.faults.append(Fault.hang())  # the answer call, which comes next, never returns
        return default_responder(body)

    ollama.responder = hang_the_next_call
    turn = asyncio.create_task(bot.deliver(QUESTION))
    await ollama.wait_for_requests(2, "/api/chat")
    key = conversation_key("memory", "general")
    transcript = await runtime.memory.transcript(key)
    assert transcript is not None
    assert [(t.question, t.status) for t in transcript.turns] == [(QUESTION, "pending")]
    turn.cancel()  # the process dies mid-answer
    with pytest.raises(asyncio.CancelledError):
        await turn
    transcript = await runtime.memory.transcript(key)
    assert transcript is not None and transcript.turns[0].question == QUESTION
    # A half-done turn never leaks into the next prompt's history.
    assert (await runtime.memory.load(key)).turns == ()


async def test_follow_ups_see_the_conversation(bot: InMemoryAdapter, ollama: FakeOllama) -> None:
    await bot.deliver("What is BERT?")
    await bot.deliver("How is it different from GPT?")
    synthesis = ollama.chat_bodies()[-1]["messages"][-1]["content"]
    assert "What is BERT?" in synthesis
    topic_prompt = ollama.chat_bodies()[-2]["messages"][-1]["content"]
    assert "What is BERT?" in topic_prompt


async def test_follow_ups_resolve_after_a_restart(
    make_settings: SettingsFactory, ollama: FakeOllama
) -> None:
    settings = make_settings()
    async with await Runtime.start(settings) as first_process:
        bot = InMemoryAdapter(first_process.pipeline.handle)
        await bot.start()
        await bot.deliver("What is BERT?")
    ollama.requests.clear()
    async with await Runtime.start(settings) as second_process:
        bot = InMemoryAdapter(second_process.pipeline.handle)
        await bot.start()
        await bot.deliver("Who created it?")
    topic_prompt = ollama.chat_bodies()[0]["messages"][-1]["content"]
    assert "What is BERT?" in topic_prompt


async def test_an_llm_that_answers_garbage_degrades_like_one_that_is_down(
    bot: InMemoryAdapter, ollama: FakeOllama
) -> None:
    ollama.always_fail = Fault.garbage()  # HTTP 200, not JSON: not Ollama at all
    result = await bot.deliver(QUESTION)
    assert result.ok
    assert "sent a reply I could not read" in result.answer
    assert result.sources


async def test_turns_of_one_conversation_run_one_at_a_time_others_overlap(
    bot: InMemoryAdapter, ollama: FakeOllama
) -> None:
    ollama.latency_s = 0.05
    await asyncio.gather(
        bot.deliver("What is BERT?", channel="a"), bot.deliver("What is GPT?", channel="a")
    )
    questions = [_question_of(body) for body in ollama.chat_bodies()]
    # Same conversation: topic and answer of one turn, then of the other; never interleaved.
    assert questions[0] == questions[1] and questions[2] == questions[3]
    assert questions[0] != questions[2]

    ollama.requests.clear()
    await asyncio.gather(
        bot.deliver("What is BERT?", channel="b"), bot.deliver("What is GPT?", channel="c")
    )
    questions = [_question_of(body) for body in ollama.chat_bodies()]
    # Different conversations: both keyword calls arrive before either answer call.
    assert questions[0] != questions[1]


def _question_of(body: dict[str, Any]) -> str:
    found = re.search(r"^Question: (.*)$", str(body["messages"][-1]["content"]), re.MULTILINE)
    assert found, body
    return found.group(1)


async def test_an_unreachable_llm_gives_sources_and_a_fix(
    make_settings: SettingsFactory, ollama: FakeOllama
) -> None:
    closed_port = ollama.url
    await ollama.close()
    settings = make_settings(llm={"base_url": closed_port})
    async with await Runtime.start(settings) as rt:
        assert rt.llm_warning is not None and "ollama serve" in rt.llm_warning
        bot = InMemoryAdapter(rt.pipeline.handle)
        await bot.start()
        result = await bot.deliver(QUESTION)
    assert result.ok
    assert "ollama serve" in result.answer
    assert result.sources, "the fallback answer still lists the best sources"
    for source in result.sources:
        assert result.answer.count(source.url) == 1, "each source is listed once"
    assert "Traceback" not in result.answer and "ConnectError" not in result.answer


async def test_a_model_that_is_not_pulled_says_how_to_pull_it(
    make_settings: SettingsFactory,
) -> None:
    async with await Runtime.start(make_settings(llm={"model": "mistral"})) as rt:
        assert rt.llm_warning is not None and "ollama pull mistral" in rt.llm_warning
        bot = InMemoryAdapter(rt.pipeline.handle)
        await bot.start()
        result = await bot.deliver(QUESTION)
    assert "ollama pull mistral" in result.answer
    assert result.sources


async def test_an_llm_failing_mid_answer_keeps_what_was_written(
    bot: InMemoryAdapter, ollama: FakeOllama
) -> None:
    def answer_then_fail(body: dict[str, Any]) -> Any:
        chunks = default_responder(body)
        if SYNTHESIS_MARKER not in str(body["messages"][0]["content"]):
            return chunks

        def stream() -> Iterator[str]:
            yield from chunks[:8]
            raise RuntimeError("the GPU fell off the bus")

        return stream()

    ollama.responder = answer_then_fail
    result = await bot.deliver(QUESTION)
    assert result.ok
    written, _, rest = result.answer.partition("(The answer was cut off:")
    assert written.strip()
    assert "Sources" in rest
    assert "GPU" not in result.answer


async def test_one_source_down_is_named_and_the_other_still_answers(
    bot: InMemoryAdapter, wikipedia: FakeWikipedia
) -> None:
    wikipedia.always_fail = Fault.status(500)
    result = await bot.deliver(QUESTION)
    assert result.unavailable == ("Wikipedia",)
    assert "Wikipedia was unavailable" in result.answer
    assert result.sources and all(s.source == "Hacker News" for s in result.sources)


async def test_garbage_from_a_source_is_survived(
    bot: InMemoryAdapter, hackernews: FakeHackerNews
) -> None:
    hackernews.always_fail = Fault.garbage()
    result = await bot.deliver(QUESTION)
    assert result.unavailable == ("Hacker News",)
    assert result.sources and all(s.source == "Wikipedia" for s in result.sources)


async def test_both_sources_down_still_answers_politely(
    bot: InMemoryAdapter, wikipedia: FakeWikipedia, hackernews: FakeHackerNews
) -> None:
    wikipedia.always_fail = hackernews.always_fail = Fault.status(503)
    result = await bot.deliver(QUESTION)
    assert result.ok
    assert set(result.unavailable) == {"Wikipedia", "Hacker News"}
    assert "could not reach Wikipedia or Hacker News" in result.answer
    assert result.sources == ()


async def test_a_dead_embedding_worker_is_replaced_between_turns(
    runtime: Runtime, bot: InMemoryAdapter
) -> None:
    await bot.deliver("What is BERT?")
    for pid in runtime.embeddings.worker_pids:
        os.kill(pid, signal.SIGKILL)
    result = await bot.deliver(QUESTION)
    assert result.ok
    assert result.sources and result.sources[0].score > 0


async def test_a_broken_analysis_worker_leaves_the_turn_going(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    script = tmp_path / "crash.py"
    script.write_text("import sys\nsys.exit(3)\n", encoding="utf-8")
    async with await Runtime.start(make_settings()) as rt:
        assert rt.analysis is not None
        rt.analysis._script = script  # the configured worker, swapped for one that crashes
        bot = InMemoryAdapter(rt.pipeline.handle)
        await bot.start()
        result = await bot.deliver(QUESTION)
    assert result.ok and result.analysis is None and result.sources


async def test_an_overlong_message_is_cut_and_the_answer_says_so(
    runtime: Runtime, bot: InMemoryAdapter
) -> None:
    huge = "Tell me about transformers. " + "x" * 40_000
    result = await bot.deliver(huge)
    limit = runtime.settings.chat.max_question_chars
    assert result.ok
    assert len(result.question) <= limit
    assert f"first {limit:,}" in result.answer
    await runtime.pipeline.drain()
    state = await runtime.memory.load(conversation_key("memory", "general"))
    assert state.turns[-1].question == result.question


async def test_an_empty_message_gets_a_hint_and_stores_nothing(
    runtime: Runtime, bot: InMemoryAdapter, ollama: FakeOllama
) -> None:
    result = await bot.deliver("   \n ")
    assert "Ask me a research question" in result.answer
    assert ollama.requests_to("/api/chat") == []
    assert await runtime.memory.list_sessions() == []


async def test_long_histories_are_summarised_in_the_background(
    make_settings: SettingsFactory, ollama: FakeOllama
) -> None:
    settings = make_settings(memory={"summarize_after": 2, "keep_recent": 1})
    key = conversation_key("memory", "general")
    async with await Runtime.start(settings) as rt:
        bot = InMemoryAdapter(rt.pipeline.handle)
        await bot.start()
        for question in ("What is BERT?", "What is GPT?", "What is attention?"):
            await bot.deliver(question)
        await rt.pipeline.drain()
        state = await rt.memory.load(key)
        assert state.summary
        assert state.summary_upto > 0
        assert all(turn.id > state.summary_upto for turn in state.turns)
        summary_calls = [
            b for b in ollama.chat_bodies() if "running summary" in str(b["messages"][0]["content"])
        ]
        assert summary_calls


async def test_reset_forgets_a_conversation(runtime: Runtime, bot: InMemoryAdapter) -> None:
    await bot.deliver("What is BERT?")
    key = conversation_key("memory", "general")
    assert await runtime.pipeline.reset(key) is True
    assert (await runtime.memory.load(key)).turns == ()
    assert await runtime.pipeline.reset(key) is False


async def test_shutdown_drains_background_saves(
    make_settings: SettingsFactory, ollama: FakeOllama
) -> None:
    settings = make_settings()
    async with await Runtime.start(settings) as rt:
        bot = InMemoryAdapter(rt.pipeline.handle)
        await bot.start()
        result = await bot.deliver(QUESTION)
        # No explicit drain: closing the runtime must finish the save.
    store = await MemoryStore.open(settings.memory.database)
    try:
        state = await store.load(conversation_key("memory", "general"))
    finally:
        await store.close()
    assert state.turns and state.turns[-1].answer == result.answer


async def test_a_memory_failure_degrades_the_turn_instead_of_failing_it(
    runtime: Runtime, bot: InMemoryAdapter
) -> None:
    await runtime.memory.close()  # every store call now raises MemoryStoreError
    result = await bot.deliver(QUESTION)
    assert result.ok
    assert result.sources
    assert "will not be remembered" in result.answer


class BrokenListener:
    """An adapter whose posting fails: the turn's error boundary must hold."""

    async def on_progress(self, step: str) -> None:
        return None

    async def on_text(self, text: str) -> None:
        raise ConnectionResetError("platform went away")


async def test_an_unexpected_error_is_logged_and_the_user_gets_a_fixed_line(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    message = InboundMessage(QUESTION, "tester", conversation_key("memory", "x"), "memory")
    result = await runtime.pipeline.handle(message, BrokenListener())
    assert not result.ok
    assert result.answer == FAILURE_LINE
    assert "platform went away" not in result.answer
    assert "turn failed: conversation=memory:x" in caplog.text
