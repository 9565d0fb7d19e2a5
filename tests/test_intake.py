"""The intake end to end: the real runtime against the fakes, through the in-memory adapter.

Dedupe, rate limits, queueing, delivery failures, commands, untrusted text, shutdown and
recovery, each as a chat platform would exercise them. Nothing of the project is mocked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.adapters.inmemory import InMemoryAdapter, MemoryPlatform
from bot.config import Settings
from bot.contract import conversation_key
from bot.intake.codec import encode_message
from bot.pipeline.prompts import SYNTHESIS_MARKER
from bot.runtime import Runtime
from bot.store.sqlite import SqliteStore
from tests.conftest import chat
from tests.fakes.base import Fault
from tests.fakes.ollama import FakeOllama, default_responder, split_tokens

SettingsFactory = Callable[..., Settings]
QUESTION = "What is the transformer architecture in deep learning?"
GENERAL = conversation_key("inmemory", "general")


@pytest.fixture
async def runtime(make_settings: SettingsFactory) -> AsyncIterator[Runtime]:
    async with await Runtime.start(make_settings(intake={"delivery_backoff_s": 0.0})) as rt:
        yield rt


def answer_calls(ollama: FakeOllama) -> list[dict[str, Any]]:
    return [b for b in ollama.chat_bodies() if SYNTHESIS_MARKER in str(b["messages"][0])]


# ----------------------------------------------------------------------------- dedupe


async def test_a_redelivered_event_is_answered_once(
    bot: InMemoryAdapter, ollama: FakeOllama
) -> None:
    message = bot.message(QUESTION, event_id="Ev1")
    first = await bot.submit(message)
    assert first.outcome == "turn" and first.done is not None
    await first.done
    again = await bot.submit(message)  # Slack's retry after a slow ack
    assert again.outcome == "duplicate" and again.done is None
    assert len(answer_calls(ollama)) == 1
    assert len(bot.service.in_channel("general")) == 1


async def test_two_copies_arriving_at_the_same_moment_give_one_answer(
    bot: InMemoryAdapter, ollama: FakeOllama
) -> None:
    message = bot.message(QUESTION, event_id="Ev2")
    outcomes = await asyncio.gather(*(bot.submit(message) for _ in range(5)))
    assert sorted(o.outcome for o in outcomes) == ["duplicate"] * 4 + ["turn"]
    await asyncio.gather(*(o.done for o in outcomes if o.done is not None))
    assert len(answer_calls(ollama)) == 1
    assert len(bot.service.in_channel("general")) == 1


async def test_a_redelivery_after_a_restart_is_not_answered_again(
    make_settings: SettingsFactory, ollama: FakeOllama
) -> None:
    settings = make_settings()
    platform = MemoryPlatform()
    async with await Runtime.start(settings) as first:
        bot = await chat(first, service=platform)
        message = bot.message(QUESTION, event_id="Ev3")
        await bot.ask(QUESTION, event_id="Ev3")
    async with await Runtime.start(settings) as second:
        bot = await chat(second, service=platform)
        assert (await bot.submit(message)).outcome == "duplicate"
    assert len(answer_calls(ollama)) == 1


async def test_a_redelivered_command_or_refusal_is_not_answered_twice(
    bot: InMemoryAdapter,
) -> None:
    for text in ("/help", "   "):
        message = bot.message(text)
        assert (await bot.submit(message)).outcome in {"command", "empty"}
        assert (await bot.submit(message)).outcome == "duplicate"
    assert len(bot.service.in_channel("general")) == 2


# ----------------------------------------------------------------------------- who and how often


async def test_the_bots_own_messages_and_other_bots_are_ignored(
    bot: InMemoryAdapter, ollama: FakeOllama
) -> None:
    assert (await bot.deliver(QUESTION, is_self=True)).outcome == "ignored"
    assert (await bot.deliver(QUESTION, is_bot=True)).outcome == "ignored"
    assert bot.service.posts == {} and ollama.chat_bodies() == []


async def test_the_rate_limit_refuses_clearly_and_takes_nothing(
    make_settings: SettingsFactory, ollama: FakeOllama
) -> None:
    settings = make_settings(intake={"rate_limit_per_minute": 6.0, "rate_limit_burst": 2})
    async with await Runtime.start(settings) as rt:
        bot = await chat(rt, rate_limit_per_minute=None)  # the intake's default applies
        submissions = [await bot.deliver(f"What is topic {n}?", author="ann") for n in range(3)]
        assert [s.outcome for s in submissions] == ["turn", "turn", "rate_limited"]
        refusal = bot.service.in_channel("general")[-1]
        assert refusal.private_to == "ann"
        assert "did not take that question" in refusal.text and "second" in refusal.text
        # Someone else is not held back by ann's bucket.
        other = await bot.deliver("What is BERT?", author="bob")
        assert other.outcome == "turn"
        await asyncio.gather(*(s.done for s in [*submissions, other] if s.done is not None))
        transcript = await rt.store.conversations.transcript(GENERAL)
    assert transcript is not None
    questions = [t.question for t in transcript.turns]
    assert "What is topic 2?" not in questions and len(questions) == 3


# ----------------------------------------------------------------------------- queueing


async def test_a_question_in_a_busy_conversation_is_queued_with_a_notice(
    bot: InMemoryAdapter, ollama: FakeOllama
) -> None:
    ollama.latency_s = 0.1
    submissions = [await bot.deliver(f"What is topic {n}?") for n in range(3)]
    elsewhere = await bot.deliver("What is BERT?", channel="other")
    notices = [p.text for p in bot.service.in_channel("general") if p.text.startswith("I am")]
    assert notices == [
        "I am still working on an earlier question here; yours is next.",
        "I am still working on an earlier question here; yours is queued behind 2.",
    ]
    # Another conversation is not told to wait.
    assert not [p for p in bot.service.in_channel("other") if p.text.startswith("I am")]
    replies = await asyncio.gather(*(s.done for s in [*submissions, elsewhere] if s.done))
    assert [r.question for r in replies[:3]] == [f"What is topic {n}?" for n in range(3)]
    assert all(r.ok for r in replies)


# ----------------------------------------------------------------------------- delivery


async def test_a_notice_the_platform_refuses_does_not_lose_the_question(
    bot: InMemoryAdapter, ollama: FakeOllama
) -> None:
    ollama.latency_s = 0.05
    first = await bot.deliver("What is BERT?")
    bot.service.fail_next(1)  # the "yours is next" notice fails
    second = await bot.deliver("What is GPT?")
    assert second.outcome == "turn" and second.done is not None
    assert (await second.done).ok and first.done is not None and (await first.done).ok


async def test_a_flaky_platform_still_gets_the_whole_answer_in_one_post(
    runtime: Runtime, bot: InMemoryAdapter
) -> None:
    bot.service.fail_next(2)  # the progress post and the next update fail
    reply = await bot.ask(QUESTION)
    posts = bot.service.in_channel("general")
    assert len(posts) == 1
    assert posts[0].text.startswith(reply.body)
    assert "went wrong" not in posts[0].text


async def test_a_failed_delivery_still_saves_the_answer(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(intake={"delivery_retries": 2, "delivery_backoff_s": 0.0})
    async with await Runtime.start(settings) as rt:
        bot = await chat(rt)
        bot.service.fail_next(1000)  # the platform is down for this whole turn
        with caplog.at_level(logging.WARNING):
            reply = await bot.ask(QUESTION)
        assert reply.ok
        await rt.pipeline.memory.settle()
        state = await rt.store.conversations.load(GENERAL)
        assert state.turns[-1].answer == reply.body
        assert "giving up delivering the reply" in caplog.text
    # Held in the outbox, not regenerated: the next start delivers that very answer.
    async with await Runtime.start(settings) as again:
        other = await chat(again)
        assert await again.recover() == 1
        await asyncio.wait_for(other.service.wait_until(lambda: bool(other.service.posts)), 30)
        (post,) = other.service.posts.values()
        assert post.text.startswith(reply.body)
    async with await Runtime.start(settings) as third:
        await chat(third)
        assert await third.recover() == 0, "delivered once, and closed"


# ----------------------------------------------------------------------------- commands


async def test_commands_answer_here_and_reset_is_for_admins(
    runtime: Runtime, bot: InMemoryAdapter, ollama: FakeOllama
) -> None:
    reply = await bot.ask(QUESTION)
    calls = len(ollama.chat_bodies())

    assert (await bot.deliver("/reset", author="mallory")).outcome == "command"
    refusal = bot.service.in_channel("general")[-1]
    assert refusal.private_to == "mallory" and "the channel's admins" in refusal.text
    assert (await runtime.store.conversations.load(GENERAL)).turns, "nothing was forgotten"

    await bot.deliver("sources")
    listing = bot.service.in_channel("general")[-1].text
    for source in reply.sources:
        assert f"[{source.n}] {source.title} — {source.url}" in listing
    assert "score" in listing

    await bot.deliver("/session")
    assert "I remember 1 question here" in bot.service.in_channel("general")[-1].text

    await bot.deliver("/help")
    assert "/reset" in bot.service.in_channel("general")[-1].text

    await bot.deliver("/reset", author="alice", is_admin=True)
    assert "forgotten" in bot.service.in_channel("general")[-1].text
    assert (await runtime.store.conversations.load(GENERAL)).turns == ()
    await bot.deliver("/sources")
    assert "not answered anything" in bot.service.in_channel("general")[-1].text
    assert len(ollama.chat_bodies()) == calls, "no command reached the language model"


async def test_an_unknown_slash_command_lists_the_commands_instead_of_being_researched(
    bot: InMemoryAdapter, ollama: FakeOllama
) -> None:
    assert (await bot.deliver("/foo")).outcome == "command"
    unknown = bot.service.in_channel("general")[-1]
    assert unknown.private_to is not None
    assert unknown.text.startswith("/foo is not a command I know.")
    for command in ("/sources", "/session", "/reset", "/help"):
        assert f"\n{command} " in unknown.text
    await bot.deliver("/reset everything", author="alice", is_admin=True)
    assert bot.service.in_channel("general")[-1].text.startswith("/reset takes nothing after it")
    assert answer_calls(ollama) == [], "neither reached the language model"

    reply = await bot.ask("/usr/bin is what?")  # a turn ran: a path is a question
    assert reply.question == "/usr/bin is what?" and reply.status != "failed"


# ----------------------------------------------------------------------------- untrusted text


async def test_links_and_mentions_from_the_model_are_made_inert(
    bot: InMemoryAdapter, ollama: FakeOllama
) -> None:
    def injected(body: dict[str, Any]) -> list[str]:
        if SYNTHESIS_MARKER in str(body["messages"][0]["content"]):
            return split_tokens("Transformers use attention [1]. Note: @everyone check "
                                "<https://evil.example/x> and ping <@123> <!channel>.")  # fmt: skip
        return default_responder(body)

    ollama.responder = injected
    reply = await bot.ask(QUESTION)
    shown = bot.service.in_channel("general")[-1].text
    assert "@everyone" not in shown and "<@123>" not in shown and "<!channel>" not in shown
    assert "https://evil.example" not in shown and "evil" in shown, "kept readable, inert"
    assert reply.neutralised.links == 1 and reply.neutralised.mentions == 3
    cited = reply.cited[0]
    assert cited.url in shown, "the real source links stay"


# ----------------------------------------------------------------------------- lifecycle


async def test_shutdown_lets_a_turn_in_flight_finish(
    make_settings: SettingsFactory, ollama: FakeOllama
) -> None:
    settings = make_settings()
    ollama.latency_s = 0.2
    async with await Runtime.start(settings) as rt:
        bot = await chat(rt)
        submission = await bot.deliver(QUESTION)
        await ollama.wait_for_requests(1, "/api/chat")
        # Leaving the block is the shutdown: intake closes, the turn gets its grace.
    assert submission.done is not None and submission.done.done()
    assert submission.done.result().ok
    assert bot.service.in_channel("general")[0].text.startswith(submission.done.result().body)
    assert (await rt.intake.submit(bot.message(QUESTION))).outcome == "closed"


async def test_a_turn_cut_by_shutdown_is_answered_at_the_next_start_in_the_same_post(
    make_settings: SettingsFactory, ollama: FakeOllama
) -> None:
    settings = make_settings(intake={"shutdown_grace_s": 0.05})
    platform = MemoryPlatform()
    async with await Runtime.start(settings) as rt:
        bot = await chat(rt, service=platform)
        ollama.faults.append(Fault.hang())  # the turn's keyword call never answers
        submission = await bot.deliver(QUESTION, event_id="Ev9")
        await ollama.wait_for_requests(1, "/api/chat")
    assert submission.done is not None and submission.done.cancelled()
    placeholder = platform.in_channel("general")
    assert len(placeholder) == 1 and placeholder[0].text.startswith("…")

    async with await Runtime.start(settings) as rt:
        bot = await chat(rt, service=platform)
        assert await rt.recover() == 1
        await rt.intake.drain(grace_s=30)
        assert await rt.recover() == 0, "answered once"
    posts = platform.in_channel("general")
    assert len(posts) == 1, "the recovered turn edited its reply instead of posting again"
    assert "Sources:" in posts[0].text


async def test_recovery_quarantines_an_event_that_crashed_twice(
    make_settings: SettingsFactory, ollama: FakeOllama, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings()
    async with await Runtime.start(settings) as rt:
        bot = InMemoryAdapter()
        message = bot.message("poison", event_id="Ev-poison")
    # What two crashed processes leave behind: claimed, then taken over once (their
    # leases short, so that they ran out by the time the next process looks).
    first = await SqliteStore.open(settings.memory.database, lease_s=0.01)
    try:
        assert await first.inbox.claim("inmemory", "Ev-poison", GENERAL, "poison",
                                 encode_message(message, bot)) is not None  # fmt: skip
    finally:
        await first.close()
    await asyncio.sleep(0.02)
    second = await SqliteStore.open(settings.memory.database, lease_s=0.01)
    try:
        assert len(await second.inbox.recover(platforms=["inmemory"], max_age_s=3600)) == 1
    finally:
        await second.close()
    await asyncio.sleep(0.02)
    with caplog.at_level(logging.WARNING):
        async with await Runtime.start(settings) as rt:
            bot = await chat(rt)
            assert await rt.recover() == 0
            transcript = await rt.store.conversations.transcript(GENERAL)
            assert await rt.recover() == 0
    assert "quarantined inmemory event Ev-poison" in caplog.text
    # Its author is told, once, instead of being left with a half-done reply.
    (told,) = bot.service.in_channel("general")
    assert "could not answer this question" in told.text
    assert transcript is not None and transcript.turns[0].status == "quarantined"
    assert ollama.chat_bodies() == []
