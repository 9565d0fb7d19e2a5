"""Slack events as :class:`~bot.contract.InboundMessage`: which are questions, and each handed in.

What is answered: an ``app_mention`` in a channel or thread; later messages in a thread the
bot answered in (``follow_up_in_threads``: handed in as follow-ups, which the intake answers
only where the bot has a conversation); top-level direct messages (``respond_to_dms``);
and every message in a thread of a direct message, which is how the AI panel's messages
come on either of Slack's surfaces (Bolt's Assistant middleware hands them to
:meth:`Inbound.on_assistant_message`; the panel's suggested prompts are
:mod:`~bot.adapters.slack.panel`'s). The answer always goes to the thread: the message's
``thread_ts``, or its own ``ts`` when it starts one, and each thread is its own
conversation, ``conversation_key("slack", team, channel, thread_ts)``.

The event id is the message, ``"{channel}:{ts}"``, not the envelope's ``event_id``: a retry
carries the same message, and so does the ``message`` event Slack sends next to an
``app_mention`` for the same text, so the intake's inbox answers each message once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bot.adapters.base import IntakePort
from bot.adapters.slack.admins import Admins
from bot.adapters.slack.handoff import Handoff
from bot.adapters.slack.identity import Identity
from bot.adapters.slack.render import unescape
from bot.adapters.slack.target import SlackTarget
from bot.config import SlackSettings
from bot.contract import Author, InboundMessage, conversation_key


class Inbound:
    """The Events API listeners: each decides whether an event is a question, then spawns
    its translation and hand-in, so that Bolt acks at once."""

    def __init__(
        self,
        *,
        settings: SlackSettings,
        identity: Identity,
        admins: Admins,
        intake: IntakePort,
        handoff: Handoff,
    ) -> None:
        """Nothing here calls Slack but through ``admins``."""
        self._settings = settings
        self._me = identity
        self._admins = admins
        self._intake = intake
        self._handoff = handoff

    # ------------------------------------------------------------------ listeners

    async def on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        self._handoff.spawn(self._take(event, body, follow_up=False), f"mention {event.get('ts')}")

    async def on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        if event.get("subtype") not in (None, "file_share", "thread_broadcast"):
            return  # edits, deletions, joins: not questions
        mention = f"<@{self._me.user_id}>"
        if event.get("channel_type") == "im":
            if self._settings.respond_to_dms:
                self._handoff.spawn(
                    self._take(event, body, follow_up=False), f"dm {event.get('ts')}"
                )
            return
        if mention in str(event.get("text", "")):
            return  # the app_mention event for the same message answers it
        if event.get("thread_ts") and self._settings.follow_up_in_threads:
            self._handoff.spawn(
                self._take(event, body, follow_up=True), f"follow-up {event.get('ts')}"
            )

    async def on_assistant_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        self._handoff.spawn(
            self._take(event, body, follow_up=False, assistant=True),
            f"assistant message {event.get('ts')}",
        )

    # ------------------------------------------------------------------ after the ack

    async def _take(
        self,
        event: Mapping[str, Any],
        body: Mapping[str, Any],
        *,
        follow_up: bool,
        assistant: bool = False,
    ) -> None:
        message = await self._translate(event, body, follow_up=follow_up, assistant=assistant)
        if message is not None:
            # The turn, if one started, is the intake's to run and drain.
            await self._intake.submit(message)

    async def _translate(
        self,
        event: Mapping[str, Any],
        body: Mapping[str, Any],
        *,
        follow_up: bool,
        assistant: bool,
    ) -> InboundMessage[SlackTarget] | None:
        """The message in ``event`` (``body`` is its envelope), or None when it names no
        message; asks ``users.info`` whether a human author is an admin."""
        channel, ts = str(event.get("channel", "")), str(event.get("ts", ""))
        if not channel or not ts:
            return None
        user = str(event.get("user", "") or event.get("bot_id", ""))
        team = str(event.get("team") or body.get("team_id") or self._me.team_id)
        thread_ts = str(event.get("thread_ts") or ts)
        is_bot = bool(event.get("bot_id")) or event.get("subtype") == "bot_message"
        is_self = user == self._me.user_id or (
            bool(self._me.bot_id) and event.get("bot_id") == self._me.bot_id
        )
        text = unescape(str(event.get("text", "")).replace(f"<@{self._me.user_id}>", " "))
        return InboundMessage(
            text=" ".join(text.split()),
            author=Author(
                id=user,
                name=user,
                is_bot=is_bot,
                is_self=is_self,
                is_admin=False if is_bot else await self._admins.is_admin(user),
            ),
            conversation=conversation_key("slack", team, channel, thread_ts),
            platform="slack",
            event_id=f"{channel}:{ts}",
            sent_at=_slack_time(ts),
            target=SlackTarget(team, channel, thread_ts, user, assistant=assistant),
            follow_up=follow_up,
        )


def _slack_time(ts: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(ts), UTC)
    except ValueError:
        return datetime.now(UTC)
