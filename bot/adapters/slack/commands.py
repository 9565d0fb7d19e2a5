"""Slack's slash command and message shortcut, as messages for the shared commands.

``/research reset|sources|session|help [thread link]`` and the *Reset this thread*
shortcut become :class:`~bot.contract.InboundMessage` with the command as their text
(``/research reset``), so the intake answers them as it answers the word typed in a
thread, and answers ``/research foo`` with the list of commands; their answers go to the
asker alone.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.base import IntakePort
from bot.adapters.slack.admins import Admins
from bot.adapters.slack.api import post_ephemeral
from bot.adapters.slack.handoff import Handoff
from bot.adapters.slack.identity import Identity
from bot.adapters.slack.render import escape
from bot.adapters.slack.target import COMMAND_THREAD, SlackTarget
from bot.contract import Author, InboundMessage, conversation_key

COMMAND = "/research"
RESET_SHORTCUT = "reset_thread"
_PERMALINK = re.compile(r"/archives/(?P<channel>[A-Z0-9]+)/p(?P<sec>\d{10})(?P<frac>\d{6})")
_THREAD_PARAM = re.compile(r"[?&]thread_ts=(?P<ts>\d+\.\d+)")


class SlashCommands:
    """The ``/research`` command and the reset shortcut: acked, then handed in."""

    def __init__(
        self,
        *,
        identity: Identity,
        admins: Admins,
        intake: IntakePort,
        handoff: Handoff,
        client: AsyncWebClient,
    ) -> None:
        """``client`` is for the one line answered here, without the intake: which thread?"""
        self._me = identity
        self._admins = admins
        self._intake = intake
        self._handoff = handoff
        self._client = client

    # ------------------------------------------------------------------ listeners

    async def on_command(self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any]) -> None:
        await ack()
        self._handoff.spawn(self._command(body), f"command {body.get('trigger_id')}")

    async def on_reset_shortcut(
        self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any]
    ) -> None:
        await ack()
        self._handoff.spawn(self._reset_thread(body), f"shortcut {body.get('trigger_id')}")

    # ------------------------------------------------------------------ after the ack

    async def _command(self, body: Mapping[str, Any]) -> None:
        """``/research reset|sources|session|help [thread link]``, via the shared commands.

        Slash commands cannot be typed in a thread, so one that concerns a thread's
        conversation takes a link to the thread; without one only ``help`` makes sense,
        and the asker is told how to name the thread. Any other word goes to the intake
        too, which answers that it is no command and lists them.
        """
        words = str(body.get("text", "")).split()
        word = (words[0] if words else "help").lower()
        channel, user = str(body.get("channel_id", "")), str(body.get("user_id", ""))
        team = str(body.get("team_id") or self._me.team_id)
        thread = _thread_from_link(" ".join(words[1:]))
        if thread is None and word in ("sources", "session"):
            await self._which_thread(channel, user, word)
            return
        channel, thread_ts = thread or (channel, COMMAND_THREAD)
        message = await self._synthetic(
            f"{COMMAND} {word}",
            team,
            channel,
            thread_ts,
            user,
            event_id=str(body.get("trigger_id", "")),
            private=True,
        )
        if thread is None and word == "reset" and message.author.is_admin:
            # Only one who may reset is told how to name the thread: anyone else is
            # refused first, by the intake (the refusal is its to word), link or none.
            await self._which_thread(channel, user, word)
            return
        await self._intake.submit(message)

    async def _which_thread(self, channel: str, user: str, word: str) -> None:
        await post_ephemeral(
            self._client,
            channel=channel,
            user=user,
            thread_ts=None,
            text=escape(
                f"Slash commands cannot be used inside a thread, so tell me which one: "
                f"`{COMMAND} {word} <link to the thread>` (Copy link on its first "
                f"message), or mention me in the thread with `{word}`."
            ),
        )

    async def _reset_thread(self, body: Mapping[str, Any]) -> None:
        message = body.get("message", {})
        channel = str(body.get("channel", {}).get("id", ""))
        user = str(body.get("user", {}).get("id", ""))
        team = str(body.get("team", {}).get("id") or self._me.team_id)
        thread_ts = str(message.get("thread_ts") or message.get("ts", ""))
        if not channel or not thread_ts:
            return
        await self._intake.submit(
            await self._synthetic(
                "reset", team, channel, thread_ts, user, event_id=str(body.get("trigger_id", ""))
            )
        )

    async def _synthetic(
        self,
        text: str,
        team: str,
        channel: str,
        thread_ts: str,
        user: str,
        *,
        event_id: str,
        private: bool = False,
    ) -> InboundMessage[SlackTarget]:
        return InboundMessage(
            text=text,
            author=Author(user, user, is_admin=await self._admins.is_admin(user)),
            conversation=conversation_key("slack", team, channel, thread_ts),
            platform="slack",
            # A command has no message to dedupe on; the trigger id is unique per click.
            event_id=event_id or f"{channel}:{thread_ts}:{text}:{time.time()}",
            sent_at=datetime.now(UTC),
            target=SlackTarget(team, channel, thread_ts, user, private=private),
        )


def _thread_from_link(link: str) -> tuple[str, str] | None:
    """``(channel, thread_ts)`` from a message link (``.../archives/C1/p1700000000000100``)."""
    match = _PERMALINK.search(link)
    if match is None:
        return None
    thread = _THREAD_PARAM.search(link)
    ts = thread.group("ts") if thread else f"{match.group('sec')}.{match.group('frac')}"
    return match.group("channel"), ts
