"""Exactly one finished answer per question, whatever fails: real processes, real faults.

Each test runs the real ``python -m bot`` against the fakes (tests/fakes/), injects a
fault at the wire or in the process (SIGKILL mid-answer, SIGTERM past the grace period,
429s, a stopped worker ...) and checks on the wire what the users of the platform saw.
docs/reliability.md lists each fault with the test that runs it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.pipeline.prompts import SYNTHESIS_MARKER
from tests.fakes.discord import TOKEN, FakeDiscord, user
from tests.fakes.ollama import FakeOllama
from tests.fakes.slack import FakeSlack, Message
from tests.processes import ROOT, ServedBot, bot_env, bots, embedding_workers

QUESTION = "What is the transformer architecture in deep learning?"
CHANNEL = "C0GENERAL"
WAIT_S = 60.0


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


def slack_config(write_config: Callable[..., Path], slack: FakeSlack, extra: str = "") -> Path:
    config = write_config()
    config.write_text(
        config.read_text(encoding="utf-8")
        + f'\n[slack]\nmode = "socket"\napi_url = "{slack.api_url}"\n{extra}',
        encoding="utf-8",
    )
    return config


SLACK_ENV = {"SLACK_BOT_TOKEN": "xoxb-fake", "SLACK_APP_TOKEN": "xapp-fake"}


async def ask_slack(slack: FakeSlack, event_id: str) -> dict[str, object]:
    event = slack.user_says(QUESTION)
    await slack.wait_ack(await slack.push(slack.callback(event, event_id=event_id)))
    return event


def thread(slack: FakeSlack, event: dict[str, object]) -> list[Message]:
    return slack.in_thread(CHANNEL, str(event["ts"]))


def finished(message: Message) -> bool:
    return not message.streaming and "Sources" in message.shown()


async def mid_answer(slack: FakeSlack, event: dict[str, object], *, streamed: bool) -> None:
    """Until the bot's reply shows part of the answer (streamed, or in a placeholder)."""

    def started() -> bool:
        replies = thread(slack, event)
        if streamed:
            return any(m.streaming and len(m.chunks) >= 3 for m in replies)
        return any("According to" in m.text for m in replies)

    await asyncio.wait_for(slack.until(started), WAIT_S)


async def answered_once(slack: FakeSlack, event: dict[str, object]) -> Message:
    """Until the thread holds the finished answer; then exactly one message, finished."""
    await asyncio.wait_for(slack.until(lambda: any(map(finished, thread(slack, event)))), WAIT_S)
    replies = thread(slack, event)
    assert len(replies) == 1, [m.shown()[:80] for m in replies]
    (reply,) = replies
    assert not reply.streaming, "its stream was stopped"
    assert "Choosing search keywords" not in reply.shown()
    return reply


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "placeholder"])
async def test_slack_a_sigkill_mid_answer_finishes_the_original_message(
    write_config: Callable[..., Path], slack: FakeSlack, ollama: FakeOllama, streaming: bool
) -> None:
    if not streaming:
        slack.refuse_streaming = "not_allowed"
    config = slack_config(write_config, slack)
    ollama.pace(SYNTHESIS_MARKER, 0.3)
    async with bots() as started:
        started.append(first := await ServedBot.start(config, bot_env(**SLACK_ENV)))
        event = await ask_slack(slack, "Ev-kill")
        await mid_answer(slack, event, streamed=streaming)
        await first.kill()
        assert not any(map(finished, thread(slack, event)))

        ollama.pace(SYNTHESIS_MARKER, 0.0)
        started.append(second := await ServedBot.start(config, bot_env(**SLACK_ENV)))
        assert second.recovered == 1
        reply = await answered_once(slack, event)
    assert reply.streamed == streaming


async def test_slack_a_recovered_message_that_cannot_be_edited_is_replaced_not_left_dangling(
    write_config: Callable[..., Path], slack: FakeSlack, ollama: FakeOllama
) -> None:
    config = slack_config(write_config, slack)
    ollama.pace(SYNTHESIS_MARKER, 0.3)
    async with bots() as started:
        started.append(first := await ServedBot.start(config, bot_env(**SLACK_ENV)))
        event = await ask_slack(slack, "Ev-old")
        await mid_answer(slack, event, streamed=True)
        await first.kill()
        (cut,) = thread(slack, event)
        slack.uneditable.add(cut.ts)  # too old to edit, say

        ollama.pace(SYNTHESIS_MARKER, 0.0)
        started.append(await ServedBot.start(config, bot_env(**SLACK_ENV)))
        reply = await answered_once(slack, event)
    assert reply.ts != cut.ts, "a new message, and the half-answer gone"


async def test_slack_sigterm_past_the_grace_period_is_finished_in_the_same_message(
    write_config: Callable[..., Path], slack: FakeSlack, ollama: FakeOllama
) -> None:
    config = slack_config(write_config, slack)
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "[logging]", "[intake]\nshutdown_grace_s = 0.5\n\n[logging]"
        ),
        encoding="utf-8",
    )
    ollama.pace(SYNTHESIS_MARKER, 0.3)
    async with bots() as started:
        started.append(first := await ServedBot.start(config, bot_env(**SLACK_ENV)))
        event = await ask_slack(slack, "Ev-term")
        await mid_answer(slack, event, streamed=True)
        assert await first.terminate() == 128 + 15
        assert "Traceback" not in first.stderr

        ollama.pace(SYNTHESIS_MARKER, 0.0)
        started.append(second := await ServedBot.start(config, bot_env(**SLACK_ENV)))
        assert second.recovered == 1
        await answered_once(slack, event)


async def test_discord_a_sigkill_mid_answer_finishes_the_original_message(
    write_config: Callable[..., Path], discord: FakeDiscord, ollama: FakeOllama
) -> None:
    guild = discord.add_guild(channels=("general",))
    (general,) = (int(c["id"]) for c in discord.guilds[guild]["channels"])
    config = write_config()
    config.write_text(
        config.read_text(encoding="utf-8")
        + f'\n[discord]\napi_url = "{discord.api_url}"\ngateway_url = "{discord.gateway_url}"\n'
        "edit_interval_s = 0.2\n",
        encoding="utf-8",
    )
    env = bot_env(DISCORD_TOKEN=TOKEN)
    ollama.pace(SYNTHESIS_MARKER, 0.3)
    async with bots() as started:
        started.append(first := await ServedBot.start(config, env))
        asked = await discord.send_message(
            general, f"<@{discord.bot_id}> {QUESTION}", author=user(discord.new_id(), "ann")
        )

        def replies() -> list[dict[str, object]]:
            return [
                m
                for m in discord.bot_messages(general)
                if (m.get("message_reference") or {}).get("message_id") == asked["id"]
            ]

        await asyncio.wait_for(
            discord.wait_for(lambda: any("According to" in str(m["content"]) for m in replies())),
            WAIT_S,
        )
        await first.kill()
        ollama.pace(SYNTHESIS_MARKER, 0.0)
        started.append(await ServedBot.start(config, env))
        await asyncio.wait_for(
            discord.wait_for(lambda: any("**Sources" in str(m["content"]) for m in replies())),
            WAIT_S,
        )
    assert len(replies()) == 1, "the reply the crashed process posted, edited"


# ----------------------------------------------------------------------------- the outbox


def discord_config(write_config: Callable[..., Path], discord: FakeDiscord, intake: str) -> Path:
    config = write_config()
    config.write_text(
        config.read_text(encoding="utf-8").replace("[logging]", f"[intake]\n{intake}\n\n[logging]")
        + f'\n[discord]\napi_url = "{discord.api_url}"\ngateway_url = "{discord.gateway_url}"\n'
        "edit_interval_s = 0.2\n",
        encoding="utf-8",
    )
    return config


class DiscordAsk:
    """One question in a fresh channel, and the bot's replies to it."""

    def __init__(self, discord: FakeDiscord) -> None:
        self.discord = discord
        guild = discord.add_guild(channels=("general",))
        (self.channel,) = (int(c["id"]) for c in discord.guilds[guild]["channels"])
        self.asked: dict[str, object] = {}

    async def ask(self) -> None:
        self.asked = await self.discord.send_message(
            self.channel,
            f"<@{self.discord.bot_id}> {QUESTION}",
            author=user(self.discord.new_id(), "ann"),
        )

    def replies(self) -> list[dict[str, object]]:
        return [
            m
            for m in self.discord.bot_messages(self.channel)
            if (m.get("message_reference") or {}).get("message_id") == self.asked["id"]
        ]

    def messages(self) -> list[str]:
        return [str(m["content"]) for m in self.discord.bot_messages(self.channel)]

    async def until(self, done: Callable[[], bool]) -> None:
        await asyncio.wait_for(self.discord.wait_for(done), WAIT_S)

    def answered(self) -> bool:
        return any("**Sources" in str(m["content"]) for m in self.replies())


EDITS = r"/channels/\d+/messages/\d+$"


async def test_discord_an_answer_meeting_a_long_run_of_429s_is_delivered_after_it(
    write_config: Callable[..., Path], discord: FakeDiscord, ollama: FakeOllama
) -> None:
    config = discord_config(write_config, discord, "delivery_retries = 1\ndelivery_backoff_s = 0.2")
    question = DiscordAsk(discord)
    async with bots() as started:
        started.append(await ServedBot.start(config, bot_env(DISCORD_TOKEN=TOKEN)))
        ollama.pace(SYNTHESIS_MARKER, 0.1)
        await question.ask()
        await question.until(lambda: bool(question.replies()))  # the progress post is up
        discord.rate_limit_for("PATCH", EDITS, seconds=12.0, retry_after=0.5)
        await question.until(question.answered)
    (reply,) = question.replies()
    assert "**Sources" in str(reply["content"]), "the one reply, finished"
    assert len(discord.rate_limited) > 8, "it did meet the run of 429s"


async def test_discord_a_held_answer_survives_a_restart_and_is_not_written_again(
    write_config: Callable[..., Path], discord: FakeDiscord, ollama: FakeOllama
) -> None:
    config = discord_config(write_config, discord, "delivery_retries = 0\ndelivery_backoff_s = 0.2")
    question = DiscordAsk(discord)
    async with bots() as started:
        env = bot_env(DISCORD_TOKEN=TOKEN)
        started.append(first := await ServedBot.start(config, env, "-v"))
        await question.ask()
        await question.until(lambda: bool(question.replies()))
        discord.rate_limit_for("PATCH", EDITS, seconds=3600.0, retry_after=0.5)
        await asyncio.wait_for(first.wait_for("failed again (attempt"), WAIT_S)  # the courier
        await first.kill()
        written = len([b for b in ollama.chat_bodies() if SYNTHESIS_MARKER in str(b)])

        discord._storms.clear()
        started.append(second := await ServedBot.start(config, env))
        assert second.recovered == 1
        await question.until(question.answered)
    assert len(question.replies()) == 1
    assert len([b for b in ollama.chat_bodies() if SYNTHESIS_MARKER in str(b)]) == written, (
        "delivered as it was written, not written again"
    )


async def test_discord_delivery_gives_up_in_time_and_says_so_to_user_and_operator(
    write_config: Callable[..., Path], discord: FakeDiscord
) -> None:
    intake = "delivery_retries = 0\ndelivery_backoff_s = 0.2\ndelivery_deadline_s = 3"
    config = discord_config(write_config, discord, intake)
    question = DiscordAsk(discord)
    async with bots() as started:
        started.append(await ServedBot.start(config, bot_env(DISCORD_TOKEN=TOKEN)))
        await question.ask()
        await question.until(lambda: bool(question.replies()))
        discord.rate_limit_for("PATCH", EDITS, seconds=3600.0, retry_after=0.5)
        await question.until(
            lambda: any("could not post my answer" in m for m in question.messages())
        )
    log = (config.parent / "bot.log").read_text(encoding="utf-8")
    assert "gave up delivering the answer" in log and "[intake].delivery_deadline_s" in log
    assert not any("delivery_deadline_s" in m for m in question.messages()), "no config in chat"


async def test_slack_429s_and_500s_on_the_final_calls_are_waited_out(
    write_config: Callable[..., Path], slack: FakeSlack
) -> None:
    config = slack_config(write_config, slack)
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "[logging]", "[intake]\ndelivery_retries = 1\ndelivery_backoff_s = 0.2\n\n[logging]"
        ),
        encoding="utf-8",
    )
    # More than the SDK's own retries: the stop, then every edit, refused for a while.
    slack.rate_limit("chat.stopStream", retry_after=1, times=5)
    slack.server_error("chat.update", times=6)
    async with bots() as started:
        started.append(await ServedBot.start(config, bot_env(**SLACK_ENV)))
        event = await ask_slack(slack, "Ev-busy")
        await answered_once(slack, event)


# ----------------------------------------------------------------------------- the store


async def test_a_second_bot_on_the_same_database_is_refused_and_a_crash_leaves_no_lock(
    write_config: Callable[..., Path], slack: FakeSlack
) -> None:
    config = slack_config(write_config, slack)
    env = bot_env(**SLACK_ENV)
    async with bots() as started:
        started.append(first := await ServedBot.start(config, env))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--config", str(config),
            cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
        assert proc.returncode == 1
        assert f"another research-agent process (pid {first.proc.pid})" in err.decode()
        assert b"Traceback" not in err
        await first.kill()
        started.append(await ServedBot.start(config, env))  # the lock died with it


# ----------------------------------------------------------------------------- embeddings


async def test_a_stopped_embedding_worker_costs_one_ranking_not_the_bot_and_not_shutdown(
    write_config: Callable[..., Path], slack: FakeSlack
) -> None:
    config = slack_config(write_config, slack)
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "[embeddings]\n", "[embeddings]\ntimeout_s = 2\n"
        ),
        encoding="utf-8",
    )
    async with bots() as started:
        started.append(bot := await ServedBot.start(config, bot_env(**SLACK_ENV), "-v"))
        await asyncio.wait_for(bot.wait_for("embedding workers ready"), WAIT_S)
        workers = embedding_workers(bot.proc.pid)
        assert workers, "the pool is up"
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)  # alive, holding its work, answering nothing
        first = await ask_slack(slack, "Ev-stopped")
        reply = await answered_once(slack, first)
        assert "only by their words and the search order" in reply.shown()
        second = await ask_slack(slack, "Ev-after")
        again = await answered_once(slack, second)
        assert "search order" not in again.shown(), "a new pool ranks the next question"
        assert not set(workers) & set(embedding_workers(bot.proc.pid)), "replaced"
        for pid in embedding_workers(bot.proc.pid):
            os.kill(pid, signal.SIGSTOP)  # and stopped again, for the shutdown
        assert await bot.terminate(timeout_s=20) == 128 + signal.SIGTERM
