"""Where text goes: the channel, a thread started from the question, or a slash interaction.

A reply's messages go through a :class:`Surface`; a short notice is sent whole.

Every send and edit carries ``allowed_mentions`` none and suppressed link previews; a reply
carries a nonce derived from the question's id, so a post retried within Discord's window
returns the first message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

import discord

from bot.adapters.discord.pacing import SendBudget
from bot.adapters.discord.permissions import Access
from bot.adapters.discord.render import LIMIT
from bot.adapters.discord.target import DiscordTarget, SlashState

NO_MENTIONS = discord.AllowedMentions.none()
ALREADY_THREADED = 160004
# A day without messages archives a thread the bot started (Discord's default).
THREAD_ARCHIVE_MINUTES: Literal[1440] = 1440


class Surface(Protocol):
    """The messages of one reply: the first one (index 0), then follow-ups."""

    @property
    def channel(self) -> int:
        """The channel (or thread) the messages are in, for pacing and permissions."""

    async def post(self, index: int, text: str) -> int:
        """Post message ``index``; returns its id."""

    async def edit(self, index: int, message_id: int, text: str) -> None:
        """Show ``text`` in message ``index`` (``message_id``)."""

    async def delete(self, message_id: int) -> None:
        """Delete a follow-up no longer needed."""

    async def typing(self) -> None:
        """Show the typing indicator, where there is one."""


class Outbound:
    """The channels the bot writes to: surfaces for replies, threads, notices."""

    def __init__(
        self, client: Callable[[], discord.Client | None], budget: SendBudget, access: Access
    ) -> None:
        self._client = client
        self._budget = budget
        self._access = access

    def surface(self, target: DiscordTarget) -> Surface:
        """Where the reply to ``target`` goes: the interaction if there is one, else the channel."""
        if target.slash is not None:
            return SlashSurface(target.slash, target.channel_id)
        return ChannelSurface(self, target)

    def partial(self, channel_id: int, guild_id: int | None) -> discord.PartialMessageable:
        """A channel, thread or DM to send to, without fetching it."""
        client = self._client()
        assert client is not None
        kind = discord.ChannelType.private if guild_id is None else None
        return client.get_partial_messageable(channel_id, guild_id=guild_id, type=kind)

    async def start_thread(self, target: DiscordTarget) -> discord.PartialMessageable | None:
        """The thread started from the question (``auto_thread``); None: answer in place."""
        assert target.message_id is not None
        client = self._client()
        assert client is not None
        try:
            await self._budget.acquire(target.channel_id, "create")
            # The route itself: the REST client caches no guild, which a partial message's
            # create_thread insists on, and only the thread's id is needed.
            thread = await client.http.start_thread_with_message(
                target.channel_id,
                target.message_id,
                name=target.thread_name,
                auto_archive_duration=THREAD_ARCHIVE_MINUTES,
            )
            return self.partial(int(thread["id"]), target.guild_id)
        except discord.Forbidden as exc:
            self._access.missing_permission(target.channel_id, "create_public_threads", exc)
            return None
        except discord.HTTPException as exc:
            if exc.code == ALREADY_THREADED:
                return self.partial(target.message_id, target.guild_id)
            raise

    async def notify(self, target: DiscordTarget, text: str, *, private: bool) -> None:
        """A short line in answer to ``target``'s question (see ``Adapter.notify``)."""
        text = text[:LIMIT]
        if target.slash is not None:
            await self._notify_slash(target.slash, text, private=private)
            return
        channel = self.partial(target.channel_id, target.guild_id)
        await self._budget.acquire(target.channel_id, "create")
        try:
            await send_quietly(channel, text, target, nonce="n{id}", reference=True)
        except discord.Forbidden as exc:
            self._access.missing_permission(target.channel_id, "send", exc)

    async def _notify_slash(self, state: SlashState, text: str, *, private: bool) -> None:
        interaction = state.interaction
        if not state.original_used:
            if private and not state.ephemeral:
                # Everyone sees the "thinking" response: swap it for a message only the
                # author sees.
                state.original_used = True
                await interaction.delete_original_response()
            else:
                state.original_used = True
                await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
                return
        await interaction.followup.send(
            text, ephemeral=private, allowed_mentions=NO_MENTIONS, suppress_embeds=True
        )


async def send_quietly(
    where: discord.abc.Messageable,
    text: str,
    target: DiscordTarget,
    *,
    nonce: str,
    reference: bool,
) -> discord.Message:
    """Post ``text`` with every mention off and no link previews.

    For a message that answers ``target``'s question the nonce is derived from the
    question's id (``nonce`` is a template with ``{id}``), so a post retried within
    Discord's window returns the first message instead of a second; with ``reference`` the
    post replies to the question.
    """
    options: dict[str, Any] = {}
    if target.message_id is not None:
        options["nonce"] = nonce.format(id=target.message_id)
        if reference:
            options["reference"] = discord.MessageReference(
                message_id=target.message_id,
                channel_id=target.channel_id,
                guild_id=target.guild_id,
                fail_if_not_exists=False,
            )
    return await where.send(
        text, allowed_mentions=NO_MENTIONS, suppress_embeds=True, mention_author=False,
        **options,
    )  # fmt: skip


class ChannelSurface:
    """Plain messages: the first replies to the question (``message_reference``)."""

    def __init__(self, outbound: Outbound, target: DiscordTarget) -> None:
        self._outbound = outbound
        self._target = target
        self._destination: discord.PartialMessageable | None = None
        self._threaded = False

    @property
    def channel(self) -> int:
        return self._destination.id if self._destination is not None else self._target.channel_id

    async def _where(self) -> discord.PartialMessageable:
        if self._destination is None:
            target = self._target
            self._destination = self._outbound.partial(target.channel_id, target.guild_id)
            if target.start_thread and target.message_id is not None:
                thread = await self._outbound.start_thread(target)
                if thread is not None:
                    self._destination, self._threaded = thread, True
        return self._destination

    async def post(self, index: int, text: str) -> int:
        where = await self._where()
        reference = index == 0 and not self._threaded
        message = await send_quietly(
            where, text, self._target, nonce=f"r{{id}}.{index}", reference=reference
        )
        return message.id

    async def edit(self, index: int, message_id: int, text: str) -> None:
        where = await self._where()
        await where.get_partial_message(message_id).edit(content=text, allowed_mentions=NO_MENTIONS)

    async def delete(self, message_id: int) -> None:
        where = await self._where()
        await where.get_partial_message(message_id).delete()

    async def typing(self) -> None:
        where = await self._where()
        await where.typing()


class SlashSurface:
    """A slash command's deferred response (index 0), then webhook follow-ups."""

    def __init__(self, state: SlashState, channel: int) -> None:
        self._state = state
        self._channel = channel
        self._followups: dict[int, discord.WebhookMessage] = {}

    @property
    def channel(self) -> int:
        return self._channel

    async def post(self, index: int, text: str) -> int:
        if index == 0:
            await self.edit(0, 0, text)
            return 0
        message = await self._state.interaction.followup.send(
            text, wait=True, allowed_mentions=NO_MENTIONS, suppress_embeds=True,
            ephemeral=self._state.ephemeral,
        )  # fmt: skip
        self._followups[message.id] = message
        return message.id

    async def edit(self, index: int, message_id: int, text: str) -> None:
        if index == 0:
            self._state.original_used = True
            await self._state.interaction.edit_original_response(
                content=text, allowed_mentions=NO_MENTIONS
            )
        else:
            await self._followups[message_id].edit(content=text, allowed_mentions=NO_MENTIONS)

    async def delete(self, message_id: int) -> None:
        await self._followups.pop(message_id).delete()

    async def typing(self) -> None:
        return None  # the deferred response shows "thinking" already
