"""Crash recovery with a real bot process and a real SIGKILL.

The bot is ``tests/scripts/chat_bot.py``: the real runtime serving the fake chat of
``tests/fakes/chat.py`` over HTTP, with the real SQLite inbox. Each test kills it with
SIGKILL (the whole process group, so the embedding workers die with it: nothing gets to
clean up), starts it again on the same config and database, and checks on the wire what
the users of the chat saw. tests/test_intake.py proves the same in-process; here no
``finally``, cancellation handler or shutdown hook gets to run, as in a real crash.

The fakes run on this test's event loop, so the children are driven with the asyncio
subprocess API only.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.contract import conversation_key
from bot.pipeline.prompts import SYNTHESIS_MARKER
from tests.fakes.chat import Event, FakeChat
from tests.fakes.ollama import FakeOllama, default_responder
from tests.processes import crash
from tests.test_cli import ROOT, child_env
from tests.test_cli import bot as run_cli

QUESTION = "What is the transformer architecture in deep learning?"
POISON = "What is BERT?"
HEALTHY = "What is GPT?"
KEY = conversation_key("slack", "C1")
START_TIMEOUT_S = 30.0
STEP_TIMEOUT_S = 20.0


@pytest.fixture
async def chat() -> AsyncIterator[FakeChat]:
    async with FakeChat() as fake:
        yield fake


def synthesis_of(body: dict[str, Any], question: str) -> bool:
    """Whether an ``/api/chat`` body is the answer-writing call for ``question``."""
    messages = body["messages"]
    return SYNTHESIS_MARKER in str(messages[0]["content"]) and question in str(
        messages[-1]["content"]
    )


@dataclass
class CrawlingSynthesis:
    """A responder: the answer to ``question`` crawls out at ``delay_s`` a chunk.

    The fake's ``chunk_delay_s`` is global, so it is raised only when that answer starts
    (the calls before it stay instant) and the test puts it back before the next bot
    starts. :meth:`wait_mid_answer` returns once ``after`` chunks of the ``n``-th such
    answer are out: the model is mid-answer.
    """

    ollama: FakeOllama
    question: str
    delay_s: float
    after: int = 3
    mid_answers: int = 0
    _moved: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, body: dict[str, Any]) -> Iterator[str]:
        chunks = default_responder(body)
        if not synthesis_of(body, self.question):
            return iter(chunks)
        self.ollama.chunk_delay_s = self.delay_s
        return self._signalling(chunks)

    async def wait_mid_answer(self, n: int) -> None:
        while self.mid_answers < n:
            self._moved.clear()
            await self._moved.wait()

    def _signalling(self, chunks: list[str]) -> Iterator[str]:
        # The fake asks for a chunk only once the previous ones are written.
        for sent, chunk in enumerate(chunks):
            if sent == self.after:
                self.mid_answers += 1
                self._moved.set()
            yield chunk


class BotProcess:
    """One ``chat_bot`` process, in a process group of its own."""

    def __init__(self, proc: asyncio.subprocess.Process, recovered: int) -> None:
        self.proc = proc
        self.recovered = recovered

    @classmethod
    async def start(cls, config: Path, chat: FakeChat) -> BotProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.scripts.chat_bot",
            "--config", str(config), "--chat-url", chat.url,
            cwd=ROOT, env=child_env(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
        if not line.startswith(b"ready"):
            _out, err = await asyncio.wait_for(proc.communicate(), START_TIMEOUT_S)
            raise AssertionError(f"the bot did not start: {err.decode()}")
        return cls(proc, int(line.decode().split("recovered=")[1]))

    async def kill(self) -> None:
        """SIGKILL the bot and everything it started: a crash, with no clean-up at all."""
        crash(self.proc.pid)
        await asyncio.wait_for(self.proc.communicate(), STEP_TIMEOUT_S)
        assert self.proc.returncode == -signal.SIGKILL

    async def stop(self) -> None:
        """SIGTERM: the graceful shutdown, which must be clean."""
        self.proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(self.proc.communicate(), STEP_TIMEOUT_S)
        assert self.proc.returncode == 0, err.decode()
        assert b"Traceback" not in err, err.decode()

    async def ensure_gone(self) -> None:
        if self.proc.returncode is None:
            await self.kill()


@pytest.fixture
async def processes() -> AsyncIterator[list[BotProcess]]:
    """The bots a test started; any still running at the end are killed."""
    started: list[BotProcess] = []
    yield started
    for bot in started:
        await bot.ensure_gone()


async def within(awaitable: Awaitable[object]) -> None:
    await asyncio.wait_for(awaitable, STEP_TIMEOUT_S)


async def wait_answered(chat: FakeChat, event: Event) -> None:
    """Until some reply to ``event`` shows a complete answer (it ends with its Sources)."""

    def answered() -> bool:
        return any(
            m.in_reply_to == event.event_id and "Sources:" in m.text for m in chat.messages.values()
        )

    await within(chat.wait_until(answered))


async def test_a_sigkill_mid_answer_is_answered_once_after_the_restart_in_the_same_reply(
    write_config: Callable[..., Path],
    chat: FakeChat,
    ollama: FakeOllama,
    processes: list[BotProcess],
) -> None:
    config = write_config()
    crawl = CrawlingSynthesis(ollama, QUESTION, delay_s=0.5)
    ollama.responder = crawl
    first = await BotProcess.start(config, chat)
    processes.append(first)
    event = await chat.queue(QUESTION, event_id="Ev-crash")

    # Mid-answer: the reply is posted, part of the answer is in it, the model still talks.
    await within(crawl.wait_mid_answer(1))
    await within(
        chat.wait_until(lambda: any("According to" in m.text for m in chat.messages.values()))
    )
    assert len(chat.posts()) == 1
    (reply_id,) = chat.messages
    await first.kill()
    cut = chat.messages[reply_id].text
    assert "Sources:" not in cut, "killed before the answer was complete"

    ollama.chunk_delay_s = 0.0
    ollama.responder = default_responder
    second = await BotProcess.start(config, chat)
    processes.append(second)
    assert second.recovered == 1
    await wait_answered(chat, event)

    # The platform redelivers the event, as Slack does when it saw no ack.
    again = await chat.redeliver(event)
    await within(chat.wait_until(lambda: chat.acked(again) is not None))
    await second.stop()

    # Taken once; then seen again by the restarted bot reading the stream, and redelivered.
    assert [(a.seq, a.outcome) for a in chat.acks] == [
        (event.seq, "turn"),
        (event.seq, "duplicate"),
        (again.seq, "duplicate"),
    ]
    posts = chat.posts()
    assert len(posts) == 1, "one reply message in total: the restarted bot edited it"
    assert {message_id for message_id, _ in chat.edits()} == {reply_id}
    final = chat.messages[reply_id].text
    assert final.count("According to") == 1 and "[1]" in final
    assert "\n\nSources:\n[1] " in final
    answers = [b for b in ollama.chat_bodies() if synthesis_of(b, QUESTION)]
    assert len(answers) == 2, "the cut answer, then the one delivered"
    log = (config.parent / "bot.log").read_text(encoding="utf-8")
    assert f"answering slack event Ev-crash left unanswered (attempt 2, reply {reply_id})" in log


async def test_a_question_that_crashed_the_bot_twice_is_quarantined_and_shown_so(
    write_config: Callable[..., Path],
    chat: FakeChat,
    ollama: FakeOllama,
    processes: list[BotProcess],
) -> None:
    config = write_config()
    # Its answer never finishes: a model wedged on this one prompt.
    hang = CrawlingSynthesis(ollama, POISON, delay_s=3600.0, after=1)
    ollama.responder = hang
    first = await BotProcess.start(config, chat)
    processes.append(first)
    await chat.queue(POISON, event_id="Ev-poison")
    await within(hang.wait_mid_answer(1))
    await first.kill()  # crash 1

    ollama.chunk_delay_s = 0.0
    second = await BotProcess.start(config, chat)
    processes.append(second)
    assert second.recovered == 1
    await within(hang.wait_mid_answer(2))  # the recovered attempt wedges the same way
    await second.kill()  # crash 2

    ollama.chunk_delay_s = 0.0
    calls_before = [b for b in ollama.chat_bodies() if POISON in str(b["messages"])]
    third = await BotProcess.start(config, chat)
    processes.append(third)
    assert third.recovered == 0
    # The conversation is not stuck behind it: the next question is answered.
    healthy = await chat.queue(HEALTHY, event_id="Ev-next")
    await wait_answered(chat, healthy)
    await third.stop()

    assert [b for b in ollama.chat_bodies() if POISON in str(b["messages"])] == calls_before
    assert len([b for b in calls_before if synthesis_of(b, POISON)]) == 2
    # The second attempt edited the first one's reply; the healthy question got its own.
    assert [p["in_reply_to"] for p in chat.posts()] == ["Ev-poison", "Ev-next"]
    # The half-done reply was not left hanging: its author was told it was given up.
    poison_reply = next(m for m in chat.messages.values() if m.in_reply_to == "Ev-poison")
    assert "could not answer this question" in poison_reply.text
    log = (config.parent / "bot.log").read_text(encoding="utf-8")
    assert f"quarantined slack event Ev-poison in {KEY} after 2 attempts" in log

    shown = await run_cli("sessions", "show", KEY, "--config", str(config))
    assert shown.code == 0, shown.err
    assert (
        f"you: {POISON}\n(quarantined: answering it crashed the bot twice, so it is not tried "
        "again)\n" in shown.out
    )
    assert f"you: {HEALTHY}\nbot: " in shown.out
