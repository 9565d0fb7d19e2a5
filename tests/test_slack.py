"""The Slack adapter end to end: real Bolt and the real SDK over real sockets, a fake Slack.

The bot runs in the real runtime (hashing embeddings) against the fake Ollama, Wikipedia
and Hacker News; Slack is :class:`~tests.fakes.slack.FakeSlack`, reached in Socket Mode
over a websocket and in HTTP mode through signed POSTs. Nothing of the project is mocked.
Waits are on the fake's state (``until``) or on ``settle`` (the production adapter plus a
wait, :class:`~tests.slack_helpers.SettlingSlackAdapter`), never sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML, which langchain-core requires

from bot.adapters.inmemory import InMemoryAdapter
from bot.adapters.platforms import chat_adapters
from bot.adapters.slack import RESET_SHORTCUT, SlackAdapter
from bot.adapters.slack.commands import COMMAND
from bot.adapters.slack.panel import SUGGESTED_PROMPTS
from bot.adapters.slack.render import MESSAGE_CHARS, split_message, to_mrkdwn
from bot.cli import _conversations, _serve
from bot.config import Secret, Settings, load_settings
from bot.contract import conversation_key
from bot.errors import ConfigError, PlatformSetupError, StartupError
from bot.pipeline.prompts import SYNTHESIS_MARKER
from bot.pipeline.wording import UNMATCHED
from bot.runtime import Runtime
from tests.fakes import answer_modes
from tests.fakes.ollama import FakeOllama, default_responder, split_tokens
from tests.fakes.slack import ALL_SCOPES, BOT_USER, SIGNING_SECRET, TEAM, FakeSlack
from tests.slack_helpers import SettlingSlackAdapter

SettingsFactory = Callable[..., Settings]
Mode = Literal["socket", "http"]
QUESTION = "What is the transformer architecture in deep learning?"
CHANNEL = "C0GENERAL"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


def slack_settings(
    make_settings: SettingsFactory, slack: FakeSlack, mode: Mode = "socket", **changes: Any
) -> Settings:
    settings = make_settings(
        slack={"mode": mode, "http_host": "127.0.0.1", "http_port": 0, "api_url": slack.api_url}
        | changes,
        intake={"delivery_backoff_s": 0.0, "rate_limit_per_minute": 0.0},
        # Room for the long answers that test splitting (the fake ignores num_predict).
        chat={"max_answer_chars": 20_000, "answer_words": 5000},
        llm={"max_tokens": 8192},
    )
    return dataclasses.replace(
        settings,
        slack_bot_token=Secret("xoxb-fake"),
        slack_app_token=Secret("xapp-fake"),
        slack_signing_secret=Secret(SIGNING_SECRET),
    )


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Runtime, SettlingSlackAdapter]]:
    """The runtime with the Slack adapter ``python -m bot`` would build from ``settings``
    (``SlackAdapter.from_settings``), with ``settle`` to wait on."""
    async with await Runtime.start(settings) as runtime:
        adapter = SettlingSlackAdapter.from_settings(settings)
        await runtime.add_adapter(adapter)
        yield runtime, adapter


async def deliver(
    slack: FakeSlack, bot: SlackAdapter, event: dict[str, Any], *, retry: int = 0, event_id: str
) -> float:
    """Deliver one copy of an event the way the adapter's mode receives it; ack seconds."""
    body = slack.callback(event, event_id=event_id)
    if bot.settings.mode == "http":
        status, seconds = await slack.post_signed(bot.http_url, body, retry_num=retry or None)
        assert status == 200
        return seconds
    loop = asyncio.get_running_loop()
    start = loop.time()
    envelope = await slack.push(body, retry_attempt=retry)
    await slack.wait_ack(envelope)
    return slack.acks[envelope] - start


def synthesis_calls(ollama: FakeOllama) -> list[dict[str, Any]]:
    return [b for b in ollama.chat_bodies() if SYNTHESIS_MARKER in str(b["messages"][0])]


def answer_with(text: str) -> Callable[[dict[str, Any]], list[str]]:
    def responder(body: dict[str, Any]) -> list[str]:
        if SYNTHESIS_MARKER in str(body["messages"][0]["content"]):
            return split_tokens(text)
        return default_responder(body)

    return responder


# ----------------------------------------------------------------------------- answering


async def test_a_mention_in_a_thread_gets_exactly_one_streamed_answer_there(
    make_settings: SettingsFactory, slack: FakeSlack, ollama: FakeOllama
) -> None:
    async with serving(slack_settings(make_settings, slack)) as (_rt, bot):
        root = slack.user_says("Let's talk about models", mention=False)
        event = slack.user_says(QUESTION, thread_ts=root["ts"])
        ack = await deliver(slack, bot, event, event_id="Ev1")
        await bot.settle()
    assert ack < 3.0
    [answer] = slack.in_thread(CHANNEL, root["ts"])
    assert answer.streamed and not answer.streaming, "native stream, stopped"
    start = slack.calls_to("chat.startStream")[0].args
    assert start["thread_ts"] == root["ts"], "in the thread, not under the mention"
    assert start["recipient_user_id"] == "UALICE" and start["recipient_team_id"] == TEAM
    first = start["chunks"][0]
    assert first["type"] == "task_update" and first["status"] == "in_progress", "progress first"
    assert "*Sources:*" in answer.text or "**Sources:**" in answer.text
    assert "[1] [" in answer.text and "](https://en.wikipedia.org/wiki/" in answer.text
    assert answer.has_feedback()
    assert len(synthesis_calls(ollama)) == 1
    assert not any("link_names" in call.args for call in slack.calls)


async def test_what_the_bot_adds_after_a_streamed_answer_reaches_the_stream(
    make_settings: SettingsFactory, slack: FakeSlack, ollama: FakeOllama
) -> None:
    # No source matches this answer: the bot lists the sources after it has streamed.
    ollama.responder = answer_modes.unsupported
    async with serving(slack_settings(make_settings, slack)) as (_rt, bot):
        event = slack.user_says(QUESTION)
        await deliver(slack, bot, event, event_id="Ev-unmatched")
        await bot.settle()
    [answer] = slack.in_thread(CHANNEL, event["ts"])
    assert answer.streamed and not answer.streaming
    assert ollama.replies[-1] in answer.text
    assert UNMATCHED in answer.text and "\n[1] " in answer.text, answer.text
    assert answer.text.index(UNMATCHED) < answer.text.index("Sources:")


async def test_a_mention_at_the_top_level_starts_a_thread_on_it(
    make_settings: SettingsFactory, slack: FakeSlack
) -> None:
    async with serving(slack_settings(make_settings, slack, "http")) as (_rt, bot):
        event = slack.user_says(QUESTION)
        await deliver(slack, bot, event, event_id="Ev-top")
        await bot.settle()
    assert len(slack.in_thread(CHANNEL, event["ts"])) == 1


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_the_same_event_four_times_gives_one_answer_even_after_a_restart(
    make_settings: SettingsFactory, slack: FakeSlack, ollama: FakeOllama, mode: Mode
) -> None:
    settings = slack_settings(make_settings, slack, mode)
    event = slack.user_says(QUESTION)
    async with serving(settings) as (_rt, bot):
        acks = await asyncio.gather(
            *(deliver(slack, bot, event, retry=n, event_id="Ev4") for n in range(4))
        )
        await bot.settle()
    assert max(acks) < 3.0
    async with serving(settings) as (_rt, bot):
        await asyncio.gather(
            *(deliver(slack, bot, event, retry=n, event_id="Ev4") for n in range(1, 4))
        )
        await bot.settle()
    assert len(slack.in_thread(CHANNEL, event["ts"])) == 1
    assert len(synthesis_calls(ollama)) == 1


async def test_a_retry_whose_first_copy_never_arrived_is_answered(
    make_settings: SettingsFactory, slack: FakeSlack
) -> None:
    async with serving(slack_settings(make_settings, slack, "http")) as (_rt, bot):
        event = slack.user_says(QUESTION)
        await deliver(slack, bot, event, retry=2, event_id="Ev-lost")
        await bot.settle()
    assert len(slack.in_thread(CHANNEL, event["ts"])) == 1


async def test_the_mention_and_its_message_event_are_one_question(
    make_settings: SettingsFactory, slack: FakeSlack, ollama: FakeOllama
) -> None:
    async with serving(slack_settings(make_settings, slack, "http")) as (_rt, bot):
        root = slack.user_says(QUESTION)
        await deliver(slack, bot, root, event_id="Ev-a")
        await bot.settle()
        # Slack also sends a message event for a mention in a thread; one answer.
        follow = slack.user_says("And BERT?", thread_ts=root["ts"])
        as_message = dict(follow, type="message", channel_type="channel")
        await asyncio.gather(
            deliver(slack, bot, follow, event_id="Ev-b"),
            deliver(slack, bot, as_message, event_id="Ev-c"),
        )
        await bot.settle()
    assert len(slack.in_thread(CHANNEL, root["ts"])) == 2
    assert len(synthesis_calls(ollama)) == 2


async def test_a_bad_signature_or_a_stale_timestamp_gets_401_and_no_work(
    make_settings: SettingsFactory, slack: FakeSlack, ollama: FakeOllama
) -> None:
    async with serving(slack_settings(make_settings, slack, "http")) as (_rt, bot):
        body = slack.callback(slack.user_says(QUESTION), event_id="Ev-forged")
        before = len(slack.calls)
        forged, _ = await slack.post_signed(bot.http_url, body, secret="not-the-secret")
        stale, _ = await slack.post_signed(bot.http_url, body, timestamp=time.time() - 301)
        await bot.settle()
    assert (forged, stale) == (401, 401)
    assert len(slack.calls) == before and ollama.chat_bodies() == []


# ----------------------------------------------------------------------------- conversations


async def test_two_threads_keep_separate_memories_and_follow_ups_need_no_mention(
    make_settings: SettingsFactory, slack: FakeSlack, ollama: FakeOllama
) -> None:
    async with serving(slack_settings(make_settings, slack, "http")) as (rt, bot):
        first = slack.user_says(QUESTION)
        second = slack.user_says("What is the Rust programming language?")
        await deliver(slack, bot, first, event_id="Ev-t1")
        await deliver(slack, bot, second, event_id="Ev-t2")
        await bot.settle()
        follow = slack.user_says("How does attention work in it?", thread_ts=first["ts"],
                                 mention=False)  # fmt: skip
        await deliver(slack, bot, follow, event_id="Ev-t3")
        # Neither a thread the bot is not part of, nor the channel itself, is answered.
        stranger = slack.user_says("Lunch?", thread_ts="1600000000.000001", mention=False)
        chatter = slack.user_says("Good morning all", mention=False)
        await deliver(slack, bot, stranger, event_id="Ev-t4")
        await deliver(slack, bot, chatter, event_id="Ev-t5")
        await bot.settle()
        one = await rt.store.conversations.transcript(
            conversation_key("slack", TEAM, CHANNEL, first["ts"])
        )
        two = await rt.store.conversations.transcript(
            conversation_key("slack", TEAM, CHANNEL, second["ts"])
        )
    assert one is not None and two is not None
    assert [t.question for t in one.turns] == [QUESTION, "How does attention work in it?"]
    assert [t.question for t in two.turns] == ["What is the Rust programming language?"]
    calls = [str(call["messages"]) for call in synthesis_calls(ollama)]
    assert len(calls) == 3
    # The two first questions ran concurrently: find each prompt by its question.
    [rust] = [c for c in calls if "Question: What is the Rust" in c]
    [follow_up] = [c for c in calls if "Question: How does attention work in it?" in c]
    assert QUESTION in follow_up, "the follow-up sees its own thread"
    assert QUESTION not in rust, "the other thread does not"
    assert len(slack.in_thread(CHANNEL, first["ts"])) == 2


async def test_a_direct_message_is_answered_in_its_thread(
    make_settings: SettingsFactory, slack: FakeSlack
) -> None:
    async with serving(slack_settings(make_settings, slack, "http")) as (_rt, bot):
        dm = slack.user_says(QUESTION, channel="D0ALICE", mention=False, channel_type="im")
        await deliver(slack, bot, dm, event_id="Ev-dm")
        await bot.settle()
    assert len(slack.in_thread("D0ALICE", dm["ts"])) == 1


async def test_the_agent_view_panel_suggests_prompts_and_its_messages_are_answered(
    make_settings: SettingsFactory, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(slack_settings(make_settings, slack)) as (_rt, bot):  # Socket Mode
        await deliver(slack, bot, slack.home_opened(channel="D0PANEL"), event_id="Ev-ag1")
        await deliver(slack, bot, slack.home_opened(channel="D0PANEL", tab="home"),
                      event_id="Ev-ag2")  # fmt: skip
        root = slack.dm_root(QUESTION, channel="D0PANEL")
        await deliver(slack, bot, root, event_id="Ev-ag3")
        await bot.settle()
    [prompts] = slack.calls_to("assistant.threads.setSuggestedPrompts")
    assert prompts.args["channel_id"] == "D0PANEL" and "thread_ts" not in prompts.args
    assert [p["title"] for p in prompts.args["prompts"]] == ["What is it?", "Compare", "Latest"]
    assert slack.calls_to("assistant.threads.setStatus")[0].args["thread_ts"] == root["ts"]
    assert len(slack.in_thread("D0PANEL", root["ts"])) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_the_assistant_view_panel_still_suggests_prompts_and_shows_status(
    make_settings: SettingsFactory, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    slack.surface = "assistant"  # a workspace whose app still has features.assistant_view
    async with serving(slack_settings(make_settings, slack, "http")) as (_rt, bot):
        started = slack.assistant_thread_started(channel="D0PANEL")
        thread = started["assistant_thread"]["thread_ts"]
        await deliver(slack, bot, started, event_id="Ev-as1")
        question = slack.user_says(QUESTION, channel="D0PANEL", thread_ts=thread,
                                   mention=False, channel_type="im")  # fmt: skip
        await deliver(slack, bot, question, event_id="Ev-as2")
        # Subscribed to app_home_opened as well: Slack refuses a threadless call.
        await deliver(slack, bot, slack.home_opened(channel="D0PANEL"), event_id="Ev-as3")
        await bot.settle()
    first, refused = slack.calls_to("assistant.threads.setSuggestedPrompts")
    assert first.args["thread_ts"] == thread and first.args["channel_id"] == "D0PANEL"
    assert "thread_ts" not in refused.args
    assert slack.calls_to("assistant.threads.setStatus")[0].args["thread_ts"] == thread
    assert len(slack.in_thread("D0PANEL", thread)) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "an expected no"


# ----------------------------------------------------------------------------- text safety


async def test_broadcast_mentions_from_the_model_arrive_escaped(
    make_settings: SettingsFactory, slack: FakeSlack, ollama: FakeOllama
) -> None:
    ollama.responder = answer_with(
        "Transformers use attention [1]. <!channel> <!here|here> <@U0BOSS> if a<b & b>c, "
        "**bold** and `x<y`."
    )
    slack.refuse_streaming = "feature_not_enabled"
    async with serving(slack_settings(make_settings, slack, "http")) as (_rt, bot):
        event = slack.user_says(QUESTION)
        await deliver(slack, bot, event, event_id="Ev-esc")
        await bot.settle()
    [answer] = slack.in_thread(CHANNEL, event["ts"])
    for call in slack.calls_to("chat.update") + slack.calls_to("chat.postMessage"):
        sent = f"{call.args.get('text', '')} {call.args.get('blocks', '')}"
        assert "<!channel>" not in sent and "<!here" not in sent and "<@U0BOSS>" not in sent
    shown = answer.shown()
    assert "a&lt;b &amp; b&gt;c" in shown and "`x&lt;y`" in shown and "*bold*" in shown


def test_markdown_becomes_mrkdwn() -> None:
    text = to_mrkdwn(
        "## Heading\n**bold**, *it*, ~~old~~, [Rust](https://www.rust-lang.org/) and "
        "[evil](hxxps://evil[.]example)\n- one\n```python\nif a < b: pass\n```"
    )
    assert text.splitlines() == [
        "*Heading*",
        "*bold*, _it_, ~old~, <https://www.rust-lang.org/|Rust> and evil (hxxps://evil[.]example)",
        "• one",
        "```",
        "if a &lt; b: pass",
        "```",
    ]


def test_long_text_splits_at_paragraphs_with_fences_balanced() -> None:
    text = "\n\n".join(["Intro paragraph " * 20, "```\n" + "code();\n" * 300 + "```", "End."])
    parts = split_message(text, 1000)
    assert len(parts) > 2 and all(len(p) <= 1000 for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts)
    assert parts[0] == "Intro paragraph " * 20, "the long code block starts a part of its own"


# ----------------------------------------------------------------------------- delivery


async def test_a_streaming_refusal_falls_back_to_a_placeholder_and_updates(
    make_settings: SettingsFactory, slack: FakeSlack
) -> None:
    slack.refuse_streaming = "not_allowed"
    async with serving(slack_settings(make_settings, slack, "http")) as (_rt, bot):
        event = slack.user_says(QUESTION)
        await deliver(slack, bot, event, event_id="Ev-fb")
        await bot.settle()
        assert not bot.streaming
    [answer] = slack.in_thread(CHANNEL, event["ts"])
    assert not answer.streamed and answer.edits, "a placeholder, then edits"
    assert answer.edits[0].startswith("_") and answer.edits[0].endswith("…_"), "progress first"
    assert "*Sources:*" in answer.shown() and answer.has_feedback()
    post = slack.calls_to("chat.postMessage")[0].args
    assert post["unfurl_links"] in (False, "0", "false") and post["thread_ts"] == event["ts"]


async def test_a_429_on_an_update_is_retried_after_retry_after(
    make_settings: SettingsFactory, slack: FakeSlack
) -> None:
    slack.refuse_streaming = "not_allowed"
    slack.rate_limit("chat.update", retry_after=1, times=1)
    async with serving(slack_settings(make_settings, slack, "http")) as (_rt, bot):
        event = slack.user_says(QUESTION)
        await deliver(slack, bot, event, event_id="Ev-429")
        await bot.settle()
    updates = slack.calls_to("chat.update")
    assert updates[0].args == updates[1].args, "the refused update was sent again"
    assert updates[1].at - updates[0].at >= 1.0, "after Retry-After"
    [answer] = slack.in_thread(CHANNEL, event["ts"])
    assert "*Sources:*" in answer.shown()


@pytest.mark.parametrize("streaming", [True, False])
async def test_a_long_answer_continues_in_further_replies(
    make_settings: SettingsFactory, slack: FakeSlack, ollama: FakeOllama, streaming: bool
) -> None:
    paragraphs = [f"Paragraph {n} about attention [1]. " + "Words go on. " * 40 for n in range(12)]
    code = "```python\n" + "print('attention')\n" * 60 + "```"
    ollama.responder = answer_with("\n\n".join([*paragraphs[:6], code, *paragraphs[6:]]))
    if not streaming:
        slack.refuse_streaming = "not_allowed"
    async with serving(slack_settings(make_settings, slack, "http")) as (_rt, bot):
        event = slack.user_says(QUESTION)
        await deliver(slack, bot, event, event_id=f"Ev-long-{streaming}")
        await bot.settle()
    replies = slack.in_thread(CHANNEL, event["ts"])
    assert len(replies) >= 3
    shown = [r.shown() for r in replies]
    assert all(len(text) <= MESSAGE_CHARS for text in shown)
    assert all(text.count("```") % 2 == 0 for text in shown)
    assert [r.has_feedback() for r in replies] == [False] * (len(replies) - 1) + [True]
    assert "*Sources:*" in shown[-1] and "Paragraph 11" in shown[-1]
    assert shown[0].startswith("Paragraph 0")


# ----------------------------------------------------------------------------- commands


async def test_reset_is_refused_to_a_member_and_done_for_an_admin(
    make_settings: SettingsFactory, slack: FakeSlack
) -> None:
    slack.users["UADMIN"] = {"is_admin": True}
    settings = slack_settings(make_settings, slack, "http", admin_user_ids=("UCONF",))
    async with serving(settings) as (rt, bot):
        event = slack.user_says(QUESTION)
        await deliver(slack, bot, event, event_id="Ev-r1")
        await bot.settle()
        key = conversation_key("slack", TEAM, CHANNEL, event["ts"])
        root = next(m for m in slack.messages if m.ts == event["ts"])

        status, _ = await slack.post_signed(bot.http_url, slack.shortcut(root, RESET_SHORTCUT,
                                            user="UBOB"), kind="interaction")  # fmt: skip
        assert status == 200
        refusal = slack.user_says("reset", thread_ts=event["ts"], user="UBOB")
        await deliver(slack, bot, refusal, event_id="Ev-r2")
        await bot.settle()
        assert [m.text for m in slack.ephemeral("UBOB")] == [
            "Sorry, only workspace admins and owners can reset a conversation. "
            "Ask one of them if this one should start over."
        ] * 2
        assert (await rt.store.conversations.load(key)).turns, "nothing was forgotten"

        await slack.post_signed(bot.http_url, slack.shortcut(root, RESET_SHORTCUT,
                                user="UADMIN"), kind="interaction")  # fmt: skip
        await bot.settle()
        assert (await rt.store.conversations.load(key)).turns == ()
        await deliver(slack, bot, slack.user_says(QUESTION, thread_ts=event["ts"]),
                      event_id="Ev-r3")  # fmt: skip
        await bot.settle()
        configured = slack.user_says("reset", thread_ts=event["ts"], user="UCONF")
        await deliver(slack, bot, configured, event_id="Ev-r4")
        await bot.settle()
        assert (await rt.store.conversations.load(key)).turns == ()
    done = [m.text for m in slack.in_thread(CHANNEL, event["ts"]) if "forgotten" in m.text]
    assert len(done) == 2
    looked_up = sorted(call.args["user"] for call in slack.calls_to("users.info"))
    assert looked_up == ["UADMIN", "UALICE", "UBOB"], "cached; configured ids need no lookup"


async def test_a_question_never_depends_on_the_admin_lookup_and_a_reset_says_try_again(
    make_settings: SettingsFactory, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    # users.info resets the connection, more often than the client's own retries.
    slack.drop("users.info", times=100)
    async with serving(slack_settings(make_settings, slack, "http")) as (rt, bot):
        event = slack.user_says(QUESTION, user="UCAROL")
        with caplog.at_level(logging.WARNING):
            await deliver(slack, bot, event, event_id="Ev-a1")
            await bot.settle()
            (answer,) = slack.in_thread(CHANNEL, event["ts"])
            assert "Sources" in answer.shown(), "the question was answered all the same"
            reset = slack.user_says("reset", thread_ts=event["ts"], user="UCAROL")
            await deliver(slack, bot, reset, event_id="Ev-a2")
            await bot.settle()
        key = conversation_key("slack", TEAM, CHANNEL, event["ts"])
        assert (await rt.store.conversations.load(key)).turns, "nothing was forgotten"
    (line,) = (m.text for m in slack.ephemeral("UCAROL"))
    assert "try again" in line and "Traceback" not in caplog.text
    assert "could not ask Slack whether UCAROL is an admin" in caplog.text


async def test_a_replayed_slash_command_runs_once_even_after_a_restart(
    make_settings: SettingsFactory, slack: FakeSlack
) -> None:
    settings = slack_settings(make_settings, slack, "http")
    command = slack.command("help", user="UBOB")  # one trigger_id: one invocation
    async with serving(settings) as (_rt, bot):
        status, _ = await slack.post_signed(bot.http_url, command, kind="command")
        assert status == 200
        await bot.settle()
    async with serving(settings) as (_rt, bot):
        # The same signed request, replayed inside Slack's five minutes.
        status, _ = await slack.post_signed(bot.http_url, command, kind="command")
        assert status == 200
        await bot.settle()
    assert len(slack.ephemeral("UBOB")) == 1


async def test_the_slash_command_goes_through_the_shared_commands(
    make_settings: SettingsFactory, slack: FakeSlack
) -> None:
    async with serving(slack_settings(make_settings, slack, "http")) as (_rt, bot):
        event = slack.user_says(QUESTION)
        await deliver(slack, bot, event, event_id="Ev-c1")
        await bot.settle()
        link = f"https://fake.slack.com/archives/{CHANNEL}/p{event['ts'].replace('.', '')}"
        for text in ("help", f"sources {link}", "session"):
            status, _ = await slack.post_signed(
                bot.http_url, slack.command(text, user="UBOB"), kind="command"
            )
            assert status == 200
            await bot.settle()  # one at a time: each answer is posted in the background
    help_text, sources, hint = (m.text for m in slack.ephemeral("UBOB"))
    assert "/research sources" in help_text
    assert sources.startswith("Sources of my last answer here:") and "score" in sources
    assert "link to the thread" in hint


async def test_an_unknown_command_lists_the_commands_instead_of_being_researched(
    make_settings: SettingsFactory, slack: FakeSlack, ollama: FakeOllama
) -> None:
    async with serving(slack_settings(make_settings, slack, "http")) as (_rt, bot):
        status, _ = await slack.post_signed(
            bot.http_url, slack.command("foo bar", user="UBOB"), kind="command"
        )
        assert status == 200
        await bot.settle()
        await deliver(slack, bot, slack.user_says("/sauces", user="UBOB"), event_id="Ev-u1")
        await bot.settle()
    by_command, by_mention = (m.text for m in slack.ephemeral("UBOB"))
    assert by_command.startswith("/research foo is not a command I know.")
    assert by_mention.startswith("/sauces is not a command I know.")
    for line in (by_command, by_mention):
        assert "\n/research sources lists" in line and "\n/research reset" in line
    assert ollama.chat_bodies() == [], "nothing was researched"


async def test_a_slash_reset_by_a_member_is_refused_before_any_thread_link_is_asked_for(
    make_settings: SettingsFactory, slack: FakeSlack
) -> None:
    slack.users["UADMIN"] = {"is_admin": True}
    async with serving(slack_settings(make_settings, slack, "http")) as (_rt, bot):
        for user in ("UBOB", "UADMIN"):
            status, _ = await slack.post_signed(
                bot.http_url, slack.command("reset", user=user), kind="command"
            )
            assert status == 200
            await bot.settle()
    [refusal] = (m.text for m in slack.ephemeral("UBOB"))
    assert refusal.startswith("Sorry, only workspace admins and owners can reset")
    [hint] = (m.text for m in slack.ephemeral("UADMIN"))
    assert "`/research reset &lt;link to the thread&gt;`" in hint


async def test_a_feedback_click_is_stored_with_the_turn_and_counted(
    make_settings: SettingsFactory, slack: FakeSlack
) -> None:
    settings = slack_settings(make_settings, slack, "http")
    async with serving(settings) as (_rt, bot):
        event = slack.user_says(QUESTION)
        await deliver(slack, bot, event, event_id="Ev-fb1")
        await bot.settle()
        [answer] = slack.in_thread(CHANNEL, event["ts"])
        for user, positive in (("UALICE", True), ("UBOB", False), ("UBOB", True)):
            status, _ = await slack.post_signed(
                bot.http_url, slack.click(answer, positive=positive, user=user), kind="interaction"
            )
            assert status == 200
            await bot.settle()
        await deliver(slack, bot, slack.user_says("session", thread_ts=event["ts"]),
                      event_id="Ev-fb2")  # fmt: skip
        await bot.settle()
    key = conversation_key("slack", TEAM, CHANNEL, event["ts"])
    out = io.StringIO()
    assert await _conversations("show", key, settings, out) == 0
    assert "feedback: 2 up, 0 down" in out.getvalue()
    session_line = slack.in_thread(CHANNEL, event["ts"])[-1].text
    assert "rated my answers here 2 up and 0 down" in session_line


# ----------------------------------------------------------------------------- set-up


async def test_a_missing_scope_or_an_uninstalled_app_fails_start_up_in_one_line(
    make_settings: SettingsFactory, slack: FakeSlack
) -> None:
    settings = slack_settings(make_settings, slack, "http")
    slack.scopes.discard("chat:write")
    with pytest.raises(PlatformSetupError) as missing:
        async with serving(settings):
            pass
    assert "lacks the chat:write scope" in str(missing.value)
    assert "\n" not in str(missing.value)
    slack.scopes.add("chat:write")
    slack.revoked = True
    with pytest.raises(PlatformSetupError) as revoked:
        async with serving(settings):
            pass
    assert "not installed in this workspace" in str(revoked.value)


async def test_a_rejected_slack_token_is_reported_with_every_other_start_up_problem(
    make_settings: SettingsFactory, slack: FakeSlack, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    settings = dataclasses.replace(
        slack_settings(make_settings, slack, "http"),
        memory=dataclasses.replace(
            make_settings().memory, database=str(tmp_path / "a-file" / "bot.db")
        ),
    )
    slack.revoked = True

    with pytest.raises(StartupError) as caught:
        await Runtime.start(settings, adapters=chat_adapters(settings))
    problems = caught.value.problems
    assert len(problems) == 2, problems
    assert "memory database" in problems[0]
    assert problems[1].startswith("Slack: ") and "not installed" in problems[1]


async def test_slack_and_another_adapter_serve_together_and_sigterm_stops_both(
    make_settings: SettingsFactory, slack: FakeSlack
) -> None:
    # The Discord adapter is built elsewhere; the in-memory adapter stands in for it here.
    settings = slack_settings(make_settings, slack)
    async with await Runtime.start(settings) as rt:
        bot = SettlingSlackAdapter.from_settings(settings)
        other = InMemoryAdapter()
        assert isinstance(bot, SlackAdapter)
        serve = asyncio.create_task(_serve(rt, [bot, other]))
        await slack.until(lambda: slack.connected == 1)
        event = slack.user_says(QUESTION)
        await deliver(slack, bot, event, event_id="Ev-both")
        reply = await other.ask("What is BERT?")
        await bot.settle()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, serve.cancel)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            with pytest.raises(asyncio.CancelledError):
                await serve
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
    assert reply.ok and len(slack.in_thread(CHANNEL, event["ts"])) == 1
    assert not bot.is_alive and not other.is_alive
    await asyncio.wait_for(asyncio.gather(bot.wait_stopped(), other.wait_stopped()), 1)
    await slack.until(lambda: slack.connected == 0)
    assert slack.calls[-1].method != "apps.connections.open", "no reconnect after close"
    assert BOT_USER  # the fake's bot identity is the adapter's
    assert bot.bot_user_id == BOT_USER


async def test_python_m_bot_serves_slack_when_its_tokens_are_set_and_sigterm_stops_it(
    write_config: Callable[..., Path], slack: FakeSlack
) -> None:
    config = write_config()
    text = config.read_text(encoding="utf-8")
    config.write_text(
        f'{text}\n[slack]\nmode = "socket"\napi_url = "{slack.api_url}"\n', encoding="utf-8"
    )
    env = dict(os.environ, SLACK_BOT_TOKEN="xoxb-fake", SLACK_APP_TOKEN="xapp-fake")
    env.pop("DISCORD_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(config),
        cwd=REPO, env=env,
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.wait_for(slack.until(lambda: slack.connected == 1), 60)
        event = slack.user_says(QUESTION)
        await slack.wait_ack(await slack.push(slack.callback(event, event_id="Ev-proc")))
        await slack.until(
            lambda: any(not m.streaming for m in slack.in_thread(CHANNEL, event["ts"]))
        )
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "answering on Slack" in err.decode() and "Stopped; bye." in err.decode()
    await slack.until(lambda: slack.connected == 0)


def test_the_manifest_asks_for_what_the_adapter_serves() -> None:
    manifest = yaml.safe_load((REPO / "slack-manifest.yaml").read_text(encoding="utf-8"))
    features = manifest["features"]
    assert "assistant_view" not in features, "replaced by agent_view for new apps"
    assert features["agent_view"]["agent_description"]
    prompts = [(p["title"], p["message"]) for p in features["agent_view"]["suggested_prompts"]]
    assert prompts == list(SUGGESTED_PROMPTS), "the same prompts before the bot sets them"
    assert features["app_home"]["messages_tab_enabled"] is True
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert "app_home_opened" in events
    assert not [e for e in events if e.startswith("assistant_thread_")], "the old surface's"
    assert [c["command"] for c in features["slash_commands"]] == [COMMAND]
    assert [s["callback_id"] for s in features["shortcuts"]] == [RESET_SHORTCUT]
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == ALL_SCOPES, "what the fake grants"


def test_the_slack_section_is_typed_and_checked(tmp_path: Path) -> None:
    def load(section: str) -> Settings:
        path = tmp_path / "config.toml"
        path.write_text(f"[slack]\n{section}\n", encoding="utf-8")
        return load_settings(path, env={"SLACK_SIGNING_SECRET": "s"})

    settings = load('mode = "http"\nadmin_user_ids = ["U1", "U2"]\nrate_limit_per_minute = 2')
    assert settings.slack.mode == "http" and settings.slack.admin_user_ids == ("U1", "U2")
    assert settings.slack.rate_limit_per_minute == 2.0
    assert repr(settings.slack_signing_secret) == "Secret('***')"
    assert load("").slack.rate_limit_per_minute is None, "unset: the intake's default"
    for bad, words in (
        ("mode = 'websocket'", "[slack].mode must be one of"),
        ("admin_user_ids = 'U1'", "[slack].admin_user_ids must be a list"),
        ("http_path = 'events'", "[slack].http_path must start with /"),
        # A token in the file gets the same message wherever it is: use the environment.
        ("signing_secret = 'x'", "set the SLACK_SIGNING_SECRET environment variable"),
        ("slack_bot_token = 'x'", "set the SLACK_BOT_TOKEN environment variable"),
    ):
        with pytest.raises(ConfigError, match=re.escape(words)):
            load(bad)
