"""discord.py's client as this bot runs it: its intents, its events handed on, its start-up.

One client per gateway shard (``shard_id``), and one that never connects for REST
(replies, edits, commands): :mod:`bot.adapters.discord.shards` decides which shards run.
Start-up fails with one :class:`~bot.errors.PlatformSetupError` line for a bad token or a
Message Content intent that is not switched on; :func:`check_credentials` finds both
before the gateway is even tried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import discord
from discord import app_commands

from bot.adapters.discord.commands import SlashCommands
from bot.adapters.discord.inbound import Answered, Inbound, thread_key
from bot.adapters.discord.outbound import NO_MENTIONS
from bot.adapters.discord.permissions import Access
from bot.config import Secret
from bot.errors import PlatformSetupError

INTENT_HELP = (
    "Discord refused the Message Content intent: open https://discord.com/developers/"
    "applications, pick this application, go to Bot > Privileged Gateway Intents and switch "
    "on MESSAGE CONTENT INTENT, then start the bot again"
)
TOKEN_HELP = (
    "Discord rejected DISCORD_TOKEN: copy the bot token again from "
    "https://discord.com/developers/applications (Bot > Reset Token) into DISCORD_TOKEN"
)
# Application flags GATEWAY_MESSAGE_CONTENT and GATEWAY_MESSAGE_CONTENT_LIMITED: the intent
# is switched on (the second for bots in fewer than 100 servers).
MESSAGE_CONTENT_FLAGS = (1 << 19) | (1 << 18)


class DiscordClient(discord.Client):
    """discord.py's client, handing each event to the collaborator whose job it is.

    With ``shard_id`` it runs that shard of ``shard_count``, each IDENTIFY waiting for
    ``before_identify`` (which paces them across replicas).
    """

    def __init__(
        self,
        *,
        inbound: Inbound,
        commands: SlashCommands,
        access: Access,
        answered: Answered,
        on_ready: Callable[[DiscordClient], None],
        guild_ready_timeout: float,
        shard_id: int | None = None,
        shard_count: int | None = None,
        before_identify: Callable[[int | None], Awaitable[None]] | None = None,
    ) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.dm_messages = True
        # Privileged: switched on in the Developer Portal (INTENT_HELP says where).
        intents.message_content = True
        super().__init__(
            intents=intents,
            allowed_mentions=NO_MENTIONS,
            max_ratelimit_timeout=30.0,
            guild_ready_timeout=guild_ready_timeout,
            chunk_guilds_at_startup=False,
            shard_id=shard_id,
            shard_count=shard_count,
        )
        self._before_identify = before_identify
        self._inbound = inbound
        self._commands = commands
        self._access = access
        self._answered = answered
        self._on_ready = on_ready
        self.tree: app_commands.CommandTree[DiscordClient] = app_commands.CommandTree(self)

    @property
    def user_id(self) -> int | None:
        """The bot's user id, once logged in."""
        return self.user.id if self.user is not None else None

    async def setup_hook(self) -> None:
        # Every client answers the interactions of its shard; one syncs them (the adapter).
        self._commands.register(self.tree)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        if self._before_identify is None:
            await super().before_identify_hook(shard_id, initial=initial)
        else:
            await self._before_identify(shard_id)

    async def on_ready(self) -> None:
        self._on_ready(self)

    async def on_message(self, message: discord.Message) -> None:
        await self._inbound.consider(message)

    async def on_guild_channel_update(self, before: Any, after: Any) -> None:
        self._access.permissions_changed()

    async def on_guild_role_update(self, before: Any, after: Any) -> None:
        self._access.permissions_changed()

    async def on_thread_create(self, thread: discord.Thread) -> None:
        if thread.owner_id == self.user_id:
            self._answered.answered_in(thread_key(thread))


async def check_credentials(api_url: str, token: Secret) -> str | None:
    """A rejected token or the Message Content intent off, as one line, or None.

    Two REST calls on a session of their own, so a failing start-up leaves nothing open.
    The intent is read from the application's flags, so it is explained before the
    gateway refuses it.
    """
    api = api_url.rstrip("/")
    headers = {"Authorization": f"Bot {token.reveal()}"}
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            async with session.get(f"{api}/users/@me") as me:
                if me.status == 401:
                    return f"Discord: {TOKEN_HELP}"
                me.raise_for_status()
            async with session.get(f"{api}/oauth2/applications/@me") as app:
                app.raise_for_status()
                flags = int((await app.json()).get("flags") or 0)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return f"Discord: cannot reach Discord at {api}: {exc}"
    if not flags & MESSAGE_CONTENT_FLAGS:
        return f"Discord: {INTENT_HELP}"
    return None


def start_error(exc: BaseException, api_url: str) -> BaseException:
    """What a failed start-up raises: one clear line, or ``exc`` itself."""
    if isinstance(exc, PlatformSetupError | asyncio.CancelledError):
        return exc
    if isinstance(exc, discord.LoginFailure) or (
        isinstance(exc, discord.ConnectionClosed) and exc.code == 4004
    ):
        return PlatformSetupError(TOKEN_HELP)
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return PlatformSetupError(INTENT_HELP)
    if isinstance(exc, discord.HTTPException | aiohttp.ClientError | OSError | TimeoutError):
        return PlatformSetupError(f"cannot reach Discord at {api_url}: {exc}")
    return exc
