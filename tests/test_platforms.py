"""Discord and Slack served by one process, as ``python -m bot`` runs them in production.

The real ``python -m bot`` in a subprocess, both chat SDKs over real sockets against the
fake Discord (REST + gateway) and the fake Slack (Web API + Socket Mode), one runtime, one
inbox. A question on each platform is answered there once; SIGTERM stops both cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.fakes.discord import TOKEN, FakeDiscord, user
from tests.fakes.slack import FakeSlack

REPO = Path(__file__).resolve().parent.parent
QUESTION = "What is the transformer architecture in deep learning?"
SLACK_CHANNEL = "C0GENERAL"
WAIT_S = 60


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


@pytest.fixture
async def slack_fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


async def test_discord_and_slack_in_one_process_each_answer_and_sigterm_stops_both(
    write_config: Callable[..., Path], discord_fake: FakeDiscord, slack_fake: FakeSlack
) -> None:
    guild = discord_fake.add_guild(channels=("general",))
    (general,) = (int(c["id"]) for c in discord_fake.guilds[guild]["channels"])
    config = write_config()
    config.write_text(
        config.read_text(encoding="utf-8") + f'\n[discord]\napi_url = "{discord_fake.api_url}"\n'
        f'gateway_url = "{discord_fake.gateway_url}"\n'
        f'\n[slack]\nmode = "socket"\napi_url = "{slack_fake.api_url}"\n',
        encoding="utf-8",
    )
    env = dict(
        os.environ, DISCORD_TOKEN=TOKEN, SLACK_BOT_TOKEN="xoxb-fake", SLACK_APP_TOKEN="xapp-fake"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(config),
        cwd=REPO, env=env,
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        # Serving starts after both adapters are connected and ready.
        await asyncio.wait_for(proc.stderr.readuntil(b"Ctrl-C stops it."), WAIT_S)
        assert slack_fake.connected == 1

        asked = await discord_fake.send_message(
            general,
            f"<@{discord_fake.bot_id}> {QUESTION}",
            author=user(discord_fake.new_id(), "ann"),
        )
        event = slack_fake.user_says(QUESTION)
        await slack_fake.wait_ack(
            await slack_fake.push(slack_fake.callback(event, event_id="Ev-1"))
        )

        def discord_answered() -> bool:
            return any(
                "**Sources" in m["content"]
                and (m.get("message_reference") or {}).get("message_id") == asked["id"]
                for m in discord_fake.bot_messages(general)
            )

        await asyncio.wait_for(discord_fake.wait_for(discord_answered), WAIT_S)
        await asyncio.wait_for(
            slack_fake.until(
                lambda: any(
                    not m.streaming for m in slack_fake.in_thread(SLACK_CHANNEL, event["ts"])
                )
            ),
            WAIT_S,
        )
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 30)
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert b"Stopped; bye." in rest and b"Traceback" not in rest
    await asyncio.wait_for(slack_fake.until(lambda: slack_fake.connected == 0), WAIT_S)
    answers = [m for m in discord_fake.bot_messages(general) if "**Sources" in m["content"]]
    assert len(answers) == 1, "one answer on Discord"
    assert (
        len([m for m in slack_fake.in_thread(SLACK_CHANNEL, event["ts"]) if not m.streaming]) == 1
    )
