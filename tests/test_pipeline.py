"""End to end: the real runtime (ChatOllama or ChatOpenAI, aiohttp, aiosqlite, subprocess,
process pool) against the fakes, driven through the intake and the in-memory adapter.
Nothing of the project is mocked. Every test runs once per ``[llm].provider``: against the
fake Ollama and the fake OpenAI-compatible server, which answer alike.

The hashing embedding backend keeps these fast; tests/test_embeddings.py and
tests/test_cli.py cover the real sentence-transformers model.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.adapters.inmemory import InMemoryAdapter
from bot.adapters.render import render_reply
from bot.config import Settings
from bot.contract import SILENT, Author, InboundMessage, Reply, conversation_key
from bot.pipeline.prompts import SYNTHESIS_MARKER
from bot.pipeline.wording import FAILURE_LINE
from bot.runtime import Runtime
from bot.store.sqlite import SqliteStore
from tests.conftest import LLM_PROVIDERS, FakeLLM, chat, llm_base_url
from tests.fakes.base import Fault
from tests.fakes.hackernews import FakeHackerNews
from tests.fakes.scripted import default_responder
from tests.fakes.wikipedia import FakeWikipedia

SettingsFactory = Callable[..., Settings]
QUESTION = "What is the transformer architecture in deep learning?"
GENERAL = conversation_key("inmemory", "general")
# What the operator is told to do, by provider: the server is down; the model is missing.
UNREACHABLE_FIX = {"ollama": "ollama serve", "openai": "set [llm].base_url"}
MISSING_MODEL_FIX = {"ollama": "ollama pull mistral", "openai": "start your server with it"}


@pytest.fixture(params=LLM_PROVIDERS)
def llm_provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def runtime(make_settings: SettingsFactory) -> AsyncIterator[Runtime]:
    async with await Runtime.start(make_settings()) as rt:
        yield rt


def operator_view(reply: Reply) -> str:
    """What the terminal shows: notices with their operator hints."""
    return render_reply(reply, operator=True)


def user_view(bot: InMemoryAdapter) -> str:
    """What a chat user sees of the last answer: the final text of its post."""
    final = bot.replies[-1]
    assert final.reply_id is not None
    return bot.service.posts[final.reply_id].text


def citations(text: str) -> set[int]:
    return {int(n) for group in re.findall(r"\[([\d,\s]+)\]", text) for n in group.split(",")}


async def test_a_turn_answers_with_citations_that_map_to_real_links(
    bot: InMemoryAdapter, llm: FakeLLM, wikipedia: FakeWikipedia, hackernews: FakeHackerNews
) -> None:
    result = await bot.ask(QUESTION)

    assert result.status == "answered"
    assert result.topics and "transformer" in " ".join(result.topics).lower()
    # The fake model cites [1], [2] and an invalid [9]; the invalid one must be gone.
    assert citations(result.body) == {1, 2}
    assert [s.n for s in result.sources if s.cited] == [1, 2]
    assert len(result.sources) > 2, "every numbered source is in the reply, cited or not"
    shown = user_view(bot)
    body, _, footer = shown.partition("\n\nSources:\n")
    assert body == result.body and footer, shown
    for source in result.sources:
        assert (f"[{source.n}] {source.title}" in footer) == source.cited
        if source.cited:
            assert source.url in footer
        assert source.url.startswith(("https://en.wikipedia.org/wiki/", "https://", "http://"))
    assert wikipedia.requests and hackernews.requests
    # The body is exactly what was streamed, in more than one piece.
    stream = bot.replies[-1]
    assert "".join(stream.chunks) == result.body
    assert len(stream.chunks) > 3
    assert stream.steps[0] == "Choosing search keywords"
    # One post, edited in place: progress first, then the streamed body, then the reply.
    assert len(bot.service.in_channel("general")) == 1
    assert bot.service.posts[stream.reply_id or ""].edits > 3
    assert set(result.timings) >= {
        "total_s",
        "topics_s",
        "fetch_s",
        "analysis_s",
        "embed_s",
        "synthesis_s",
    }
    # Keyword extraction, then synthesis: two LLM calls, with the sources in the second.
    topic_call, answer_call = llm.chat_bodies()
    assert topic_call["stream"] is True
    prompt = answer_call["messages"][-1]["content"]
    assert "[1]" in prompt
    assert "average keyword relevance" in prompt, "the analysis reaches the prompt"
    # Hacker News stories reach the model with their standing and date.
    assert re.search(r"\(\d+ points, \d+ comments, posted \d{4}-\d\d-\d\d\)", prompt)


async def test_the_question_survives_a_turn_that_dies_during_generation(
    runtime: Runtime, bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    def hang_the_next_call(body: dict[str, Any]) -> list[str]:
        llm.faults.append(Fault.hang())  # the answer call, which comes next, never returns
        return default_responder(body)

    llm.responder = hang_the_next_call
    submission = await bot.deliver(QUESTION)
    assert submission.done is not None
    await llm.wait_for_requests(2, llm.chat_path)
    transcript = await runtime.store.conversations.transcript(GENERAL)
    assert transcript is not None
    assert [(t.question, t.status) for t in transcript.turns] == [(QUESTION, "pending")]
    submission.done.cancel()  # the turn dies mid-answer
    with pytest.raises(asyncio.CancelledError):
        await submission.done
    transcript = await runtime.store.conversations.transcript(GENERAL)
    assert transcript is not None and transcript.turns[0].question == QUESTION
    # A half-done turn never leaks into the next prompt's history.
    assert (await runtime.store.conversations.load(GENERAL)).turns == ()


async def test_follow_ups_see_the_conversation(bot: InMemoryAdapter, llm: FakeLLM) -> None:
    await bot.ask("What is BERT?")
    await bot.ask("How is it different from GPT?")
    synthesis = llm.chat_bodies()[-1]["messages"][-1]["content"]
    assert "What is BERT?" in synthesis
    history = synthesis.split("Recent conversation:\n")[1].split("\n\nSources:\n")[0]
    assert "What is BERT?" in history
    assert "Sources" not in history and "https://" not in history, "bodies only, no footer"
    topic_prompt = llm.chat_bodies()[-2]["messages"][-1]["content"]
    assert "What is BERT?" in topic_prompt


async def test_follow_ups_resolve_after_a_restart(
    make_settings: SettingsFactory, llm: FakeLLM
) -> None:
    settings = make_settings()
    async with await Runtime.start(settings) as first_process:
        await (await chat(first_process)).ask("What is BERT?")
    llm.requests.clear()
    async with await Runtime.start(settings) as second_process:
        await (await chat(second_process)).ask("Who created it?")
    topic_prompt = llm.chat_bodies()[0]["messages"][-1]["content"]
    assert "What is BERT?" in topic_prompt


async def test_a_reset_by_another_connection_is_not_undone_by_the_cache(
    runtime: Runtime, bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    await bot.ask("What is BERT?")
    await runtime.pipeline.memory.settle()
    # Another process (``sessions reset``) forgets the conversation behind the bot's back.
    other = await SqliteStore.open(runtime.settings.memory.database)
    try:
        assert await other.conversations.reset(GENERAL)
    finally:
        await other.close()
    llm.requests.clear()
    await bot.ask("Who created it?")
    for body in llm.chat_bodies():
        assert "What is BERT?" not in body["messages"][-1]["content"]


async def test_an_llm_that_answers_garbage_degrades_like_one_that_is_down(
    bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    llm.always_fail = Fault.garbage()  # HTTP 200, not JSON: not the LLM server at all
    result = await bot.ask(QUESTION)
    assert result.status == "degraded"
    assert "sent a reply I could not read" in operator_view(result)
    assert "language model" in result.unavailable
    assert result.sources
    shown = user_view(bot)
    assert "could not read" not in shown and "base_url" not in shown and "http://127" not in shown


async def test_turns_of_one_conversation_run_one_at_a_time_others_overlap(
    bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    llm.latency_s = 0.05
    await asyncio.gather(
        bot.ask("What is BERT?", channel="a"), bot.ask("What is GPT?", channel="a")
    )
    questions = [_question_of(body) for body in llm.chat_bodies()]
    # Same conversation: topic and answer of one turn, then of the other; never interleaved.
    assert questions[0] == questions[1] and questions[2] == questions[3]
    assert questions[0] != questions[2]

    llm.requests.clear()
    await asyncio.gather(
        bot.ask("What is BERT?", channel="b"), bot.ask("What is GPT?", channel="c")
    )
    questions = [_question_of(body) for body in llm.chat_bodies()]
    # Different conversations: both keyword calls arrive before either answer call.
    assert questions[0] != questions[1]


def _question_of(body: dict[str, Any]) -> str:
    found = re.search(r"^Question: (.*)$", str(body["messages"][-1]["content"]), re.MULTILINE)
    assert found, body
    return found.group(1)


async def test_an_unreachable_llm_gives_sources_and_a_fix_for_the_operator_only(
    make_settings: SettingsFactory, llm: FakeLLM, llm_provider: str
) -> None:
    closed_port = llm_base_url(llm)
    await llm.close()
    settings = make_settings(llm={"base_url": closed_port})
    fix = UNREACHABLE_FIX[llm_provider]
    async with await Runtime.start(settings) as rt:
        assert rt.llm_warning is not None and fix in rt.llm_warning
        bot = await chat(rt)
        result = await bot.ask(QUESTION)
        shown = user_view(bot)
    assert result.status == "degraded"
    assert fix in operator_view(result)
    assert result.sources, "the fallback answer still lists the best sources"
    for source in result.cited:
        assert operator_view(result).count(source.url) == 1, "each source is listed once"
    assert "Traceback" not in operator_view(result) and "ConnectError" not in operator_view(result)
    # A chat user gets the sources and a fixed line: no host, no command.
    assert "language model is unavailable" in shown
    assert "ollama" not in shown.lower() and "openai" not in shown.lower()
    assert closed_port not in shown and "127.0.0.1" not in shown


async def test_a_model_that_is_not_pulled_says_how_to_pull_it(
    make_settings: SettingsFactory, llm_provider: str
) -> None:
    fix = MISSING_MODEL_FIX[llm_provider]
    async with await Runtime.start(make_settings(llm={"model": "mistral"})) as rt:
        assert rt.llm_warning is not None and fix in rt.llm_warning
        bot = await chat(rt)
        result = await bot.ask(QUESTION)
        shown = user_view(bot)
    assert fix in operator_view(result)
    assert "ollama" not in shown.lower() and "openai" not in shown.lower()
    assert result.sources


async def test_an_llm_failing_mid_answer_keeps_what_was_written(
    bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    def answer_then_fail(body: dict[str, Any]) -> Any:
        chunks = default_responder(body)
        if SYNTHESIS_MARKER not in str(body["messages"][0]["content"]):
            return chunks

        def stream() -> Iterator[str]:
            yield from chunks[:8]
            raise RuntimeError("the GPU fell off the bus")

        return stream()

    llm.responder = answer_then_fail
    result = await bot.ask(QUESTION)
    assert result.status == "degraded"
    assert result.body.strip()
    assert [n.kind for n in result.notices] == ["answer_cut"]
    rendered = operator_view(result)
    assert "cut off" in rendered and "Sources" in rendered
    assert "GPU" not in rendered


async def test_one_source_down_is_named_and_the_other_still_answers(
    bot: InMemoryAdapter, wikipedia: FakeWikipedia
) -> None:
    wikipedia.always_fail = Fault.status(500)
    result = await bot.ask(QUESTION)
    assert result.unavailable == ("Wikipedia",)
    assert result.status == "degraded"
    assert "Wikipedia was unavailable" in user_view(bot)
    assert result.sources and all(s.source == "Hacker News" for s in result.sources)
    # Which host failed, and how, is for the operator: never in the chat.
    host = wikipedia.url.removeprefix("http://")
    (notice,) = result.notices
    assert notice.operator.startswith(f"{host}: HTTP 500")
    assert host not in user_view(bot) and "HTTP 500" not in user_view(bot)


async def test_garbage_from_a_source_is_survived(
    bot: InMemoryAdapter, hackernews: FakeHackerNews
) -> None:
    hackernews.always_fail = Fault.garbage()
    result = await bot.ask(QUESTION)
    assert result.unavailable == ("Hacker News",)
    assert result.sources and all(s.source == "Wikipedia" for s in result.sources)


async def test_both_sources_down_still_answers_politely(
    bot: InMemoryAdapter, wikipedia: FakeWikipedia, hackernews: FakeHackerNews
) -> None:
    wikipedia.always_fail = hackernews.always_fail = Fault.status(503)
    result = await bot.ask(QUESTION)
    assert result.status == "failed"  # nothing could be answered
    assert set(result.unavailable) == {"Wikipedia", "Hacker News"}
    assert "could not reach Wikipedia or Hacker News" in user_view(bot)
    assert result.sources == ()


async def test_a_dead_embedding_worker_is_replaced_between_turns(
    runtime: Runtime, bot: InMemoryAdapter
) -> None:
    await bot.ask("What is BERT?")
    for pid in runtime.embeddings.worker_pids:
        os.kill(pid, signal.SIGKILL)
    result = await bot.ask(QUESTION)
    assert result.ok
    assert result.sources and result.sources[0].score > 0


async def test_a_broken_analysis_worker_leaves_the_turn_going(
    make_settings: SettingsFactory, tmp_path: Path, llm: FakeLLM
) -> None:
    script = tmp_path / "crash.py"
    script.write_text("import sys\nsys.exit(3)\n", encoding="utf-8")
    async with await Runtime.start(make_settings()) as rt:
        assert rt.analysis is not None
        rt.analysis._script = script  # the configured worker, swapped for one that crashes
        result = await (await chat(rt)).ask(QUESTION)
    assert result.ok and result.sources
    assert "Source statistics:\n(not available)" in llm.chat_bodies()[-1]["messages"][-1]["content"]


async def test_an_overlong_message_is_cut_and_the_answer_says_so(
    runtime: Runtime, bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    huge = "Tell me about transformers. " + "x" * 40_000
    result = await bot.ask(huge)
    limit = runtime.settings.chat.max_question_chars
    assert result.ok
    assert len(result.question) <= limit
    assert f"first {limit:,}" in user_view(bot)
    assert all(len(b["messages"][-1]["content"]) < limit + 20_000 for b in llm.chat_bodies())
    await runtime.pipeline.memory.settle()
    # Nothing is lost: the store keeps the message as it was sent.
    state = await runtime.store.conversations.load(GENERAL)
    assert state.turns[-1].question == huge


async def test_an_empty_message_gets_a_hint_and_stores_nothing(
    runtime: Runtime, bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    submission = await bot.deliver("   \n ")
    assert submission.outcome == "empty" and submission.done is None
    assert "Ask me a research question" in bot.service.in_channel("general")[-1].text
    assert llm.requests_to(llm.chat_path) == []
    assert await runtime.store.conversations.list_all() == []


async def test_long_histories_are_summarised_in_the_background(
    make_settings: SettingsFactory, llm: FakeLLM
) -> None:
    settings = make_settings(memory={"summarize_after": 2, "keep_recent": 1})
    async with await Runtime.start(settings) as rt:
        bot = await chat(rt)
        for question in ("What is BERT?", "What is GPT?", "What is attention?"):
            await bot.ask(question)
        await rt.pipeline.memory.drain()
        state = await rt.store.conversations.load(GENERAL)
        assert state.summary
        assert state.summary_upto > 0
        assert all(turn.id > state.summary_upto for turn in state.turns)
        summary_calls = [
            b for b in llm.chat_bodies() if "running summary" in str(b["messages"][0]["content"])
        ]
        assert summary_calls


async def test_reset_forgets_a_conversation(runtime: Runtime, bot: InMemoryAdapter) -> None:
    await bot.ask("What is BERT?")
    assert await runtime.pipeline.reset(GENERAL) is True
    assert (await runtime.store.conversations.load(GENERAL)).turns == ()
    assert await runtime.pipeline.reset(GENERAL) is False


async def test_shutdown_drains_background_saves(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    async with await Runtime.start(settings) as rt:
        result = await (await chat(rt)).ask(QUESTION)
        # No explicit drain: closing the runtime must finish the save.
    store = await SqliteStore.open(settings.memory.database)
    try:
        state = await store.conversations.load(GENERAL)
        sources = await store.conversations.last_sources(GENERAL)
    finally:
        await store.close()
    assert state.turns and state.turns[-1].answer == result.body
    assert sources == result.sources


async def test_a_memory_failure_degrades_the_turn_instead_of_failing_it(
    runtime: Runtime, bot: InMemoryAdapter
) -> None:
    await runtime.store.close()  # every store call now raises StoreError
    result = await bot.ask(QUESTION)
    assert result.status == "degraded"
    assert result.sources
    assert "will not be remembered" in user_view(bot)


class BrokenListener:
    """A listener whose every call fails: the pipeline's own error boundary must hold."""

    async def on_progress(self, step: str) -> None:
        return None

    async def on_text(self, text: str) -> None:
        raise ConnectionResetError("platform went away")

    async def on_reply(self, reply: Reply) -> None:
        raise AssertionError("the pipeline never delivers the final reply itself")


async def test_an_unexpected_error_is_logged_and_the_user_gets_a_fixed_line(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    message = InboundMessage(
        QUESTION,
        Author("u1", "tester"),
        conversation_key("inmemory", "x"),
        "inmemory",
        event_id="e1",
        sent_at=datetime.now(UTC),
        target=None,
    )
    result = await runtime.pipeline.answer(message, BrokenListener(), claim=None)
    assert result.status == "failed"
    assert result.body == FAILURE_LINE
    assert "platform went away" not in result.body
    assert "turn failed: conversation=inmemory:x" in caplog.text
    # And a listener that shows nothing gives a full reply.
    quiet = await runtime.pipeline.answer(message, SILENT, claim=None)
    assert quiet.ok and quiet.body
