"""A Discord message in: the trigger policy, its conversation key and the question's text.

Triggers: a mention of the bot; any message in a research channel (or a thread under one);
a follow-up in a thread where the bot has answered; a direct message (``respond_to_dms``).
System messages are dropped here; the bot's own and other bots' messages go to the intake,
which ignores them, like dedupe, rate limits, commands and queueing: they live there once.

Every channel, thread and DM is its own conversation:
``conversation_key("discord", guild, channel[, thread])`` (``@me`` for a DM's guild). With
``auto_thread`` a top-level question in a research channel gets a thread started from it
(a thread's id is its starter message's, so the key is known before the thread exists).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.adapters.base import Submission
from bot.adapters.discord.permissions import Access
from bot.adapters.discord.target import DiscordTarget
from bot.config import DiscordSettings
from bot.contract import Author, InboundMessage, Platform, conversation_key

_log = logging.getLogger(__name__)

PLATFORM: Platform = "discord"
SYSTEM_FREE = {discord.MessageType.default, discord.MessageType.reply}
THREAD_NAME_CHARS = 90
# With replicas sharing the store, how long "the bot has not answered there" is believed.
SHARED_NO_S = 5.0

Submit = Callable[[InboundMessage[DiscordTarget]], Awaitable[Submission]]


class Answered:
    """The conversations the bot has answered in: a follow-up there needs no mention.

    Remembered as the bot posts; anything not seen in this process is asked of the intake
    (``lookup``). A yes is kept for good. A no is kept for good too when this process is
    the only one answering; when replicas share the store (``shared``), another may answer
    there at any moment, so a no is kept only :data:`SHARED_NO_S`, sparing the store a
    lookup per message of a busy thread.
    """

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[bool]],
        *,
        shared: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._shared = shared
        self._clock = clock
        self._answered: set[str] = set()
        self._unanswered: dict[str, float] = {}  # conversation -> when the lookup said no

    async def has_answered(self, key: str) -> bool:
        """Whether the bot has answered in conversation ``key``."""
        if key in self._answered:
            return True
        if self._fresh_no(key):
            return False
        if await self._lookup(key):
            self.answered_in(key)
            return True
        self._unanswered[key] = self._clock()
        return False

    def answered_in(self, key: str) -> None:
        """The bot has posted an answer in conversation ``key`` (its follow-ups need no mention)."""
        self._answered.add(key)
        self._unanswered.pop(key, None)

    def _fresh_no(self, key: str) -> bool:
        said = self._unanswered.get(key)
        if said is None:
            return False
        if not self._shared():
            return True
        now = self._clock()
        if now - said < SHARED_NO_S:
            return True
        # Stale: forget it, and every other one as stale, so the record stays small.
        self._unanswered = {k: t for k, t in self._unanswered.items() if now - t < SHARED_NO_S}
        return False


class Inbound:
    """Turns MESSAGE_CREATE (or a message read back from history) into an inbound message."""

    def __init__(
        self,
        settings: DiscordSettings,
        *,
        access: Access,
        answered: Answered,
        me: Callable[[], int | None],
        submit: Submit,
    ) -> None:
        self._settings = settings
        self._research = frozenset(settings.research_channels)
        self._access = access
        self._answered = answered
        self._me = me
        self._submit = submit

    async def consider(self, message: discord.Message) -> None:
        """One MESSAGE_CREATE (or a message read back by the catch-up): a trigger?"""
        try:
            inbound = await self.translate(message)
            if inbound is not None:
                await self._submit(inbound)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception(
                "Discord: could not take message %s in channel %s", message.id, message.channel.id
            )

    async def translate(self, message: discord.Message) -> InboundMessage[DiscordTarget] | None:
        """``message`` as the intake takes it, or None when it is not for the bot."""
        me = self._me()
        if me is None or message.type not in SYSTEM_FREE:
            return None
        channel = message.channel
        guild_id = message.guild.id if message.guild is not None else None
        parent = parent_of(channel)
        key = channel_key(guild_id, channel.id, parent)
        mentioned = me in message.raw_mentions
        start_thread = False
        if guild_id is None:
            if not self._settings.respond_to_dms:
                return None
        elif parent is not None:
            follow_up = self._settings.follow_up_in_threads and (
                await self._answered.has_answered(key)
            )
            if not (mentioned or parent in self._research or follow_up):
                return None
        elif channel.id in self._research:
            start_thread = self._settings.auto_thread
        elif not mentioned:
            return None
        if message.author.id != me and not self._access.can_answer(channel, start_thread):
            return None
        # "/ask <question>" typed as a message (the client sent it as text) is the question.
        text = _TYPED_ASK.sub("", clean_text(message, me), count=1)
        if start_thread:
            # The thread will take the question's id: the conversation is known already.
            key = channel_key(guild_id, message.id, channel.id)
        return InboundMessage(
            text=text,
            author=Author(
                str(message.author.id),
                message.author.display_name,
                is_bot=message.author.bot,
                is_self=message.author.id == me,
                is_admin=self._access.is_admin(message.author, None),
            ),
            conversation=key,
            platform=PLATFORM,
            event_id=str(message.id),
            sent_at=message.created_at,
            target=DiscordTarget(
                channel.id,
                guild_id,
                message.id,
                start_thread=start_thread,
                thread_name=thread_name(text),
            ),
        )


def channel_key(guild_id: int | None, channel_id: int, parent: int | None) -> str:
    """The conversation of a channel, DM (no guild) or thread (with its ``parent``)."""
    guild = str(guild_id) if guild_id is not None else "@me"
    if parent is None:
        return conversation_key(PLATFORM, guild, str(channel_id))
    return conversation_key(PLATFORM, guild, str(parent), str(channel_id))


def thread_key(thread: discord.Thread) -> str:
    """The conversation of ``thread``."""
    return channel_key(thread.guild.id, thread.id, thread.parent_id)


def parent_of(channel: Any) -> int | None:
    """The parent channel of a thread; None for anything else."""
    if isinstance(channel, discord.Thread):
        return channel.parent_id
    return None


def thread_name(text: str) -> str:
    """The name of a thread started from the question ``text``."""
    name = " ".join(text.split()) or "Question"
    return name if len(name) <= THREAD_NAME_CHARS else name[: THREAD_NAME_CHARS - 1] + "…"


_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")
_CHANNEL = re.compile(r"<#(\d+)>")
_TYPED_ASK = re.compile(r"^/ask\s+(?=\S)", re.IGNORECASE)


def clean_text(message: discord.Message, me: int) -> str:
    """The question: the bot's mentions removed, other mentions as readable inert names.

    Like discord.py's ``clean_content``, but the bot's own mention goes entirely (it is
    how the question was addressed, not part of it).
    """
    text = re.sub(rf"<@!?{me}>", " ", message.content)
    names = {user.id: user.display_name for user in message.mentions}
    guild = message.guild

    def user(match: re.Match[str]) -> str:
        return "@" + names.get(int(match.group(1)), "unknown-user")

    def role(match: re.Match[str]) -> str:
        found = guild.get_role(int(match.group(1))) if guild is not None else None
        return "@" + (found.name if found is not None else "deleted-role")

    def channel(match: re.Match[str]) -> str:
        found = guild.get_channel_or_thread(int(match.group(1))) if guild is not None else None
        return "#" + (found.name if found is not None else "unknown-channel")

    text = _CHANNEL.sub(channel, _ROLE.sub(role, _USER.sub(user, text)))
    text = text.replace("@everyone", "@\u200beveryone").replace("@here", "@\u200bhere")
    # Collapse the gap a removed mention leaves, keeping line breaks (code in questions).
    return "\n".join(" ".join(line.split()) for line in text.strip().splitlines()).strip()
