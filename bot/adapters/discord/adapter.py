"""The Discord adapter's lifecycle: check, start, close, health, and the collaborators wired.

:class:`DiscordAdapter` is what the runtime and the intake see (the
:class:`~bot.adapters.base.Adapter` protocol); each of its jobs is a collaborator's, built
here and handed only what it needs. discord.py's ``Route.BASE`` and gateway URL are class
attributes, so one process runs one Discord adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

import discord
import discord.gateway
import discord.http
import yarl

from bot.adapters.base import IntakePort, Submission
from bot.adapters.discord.catchup import CatchUp
from bot.adapters.discord.client import (
    INTENT_HELP,
    DiscordClient,
    check_credentials,
    start_error,
)
from bot.adapters.discord.commands import SlashCommands
from bot.adapters.discord.inbound import PLATFORM, Answered, Inbound
from bot.adapters.discord.outbound import Outbound
from bot.adapters.discord.pacing import SendBudget
from bot.adapters.discord.permissions import Access
from bot.adapters.discord.reply import DiscordReply
from bot.adapters.discord.target import DiscordTarget, decode_target, encode_target
from bot.config import DiscordSettings, Secret
from bot.contract import InboundMessage, Platform
from bot.errors import PlatformSetupError

_log = logging.getLogger(__name__)


class DiscordAdapter:
    """Discord as the intake sees it (see the package docstring)."""

    platform: Platform = PLATFORM
    admins = "members with Manage Server (or an admin role)"
    command_prefix = "/"
    recovers = True

    def __init__(
        self,
        settings: DiscordSettings,
        token: Secret,
        *,
        inbox_max_age_s: float = 3600.0,
        guild_ready_timeout_s: float = 2.0,
    ) -> None:
        self._settings = settings
        self._token = token
        self._intake: IntakePort | None = None
        self._guild_ready_timeout_s = guild_ready_timeout_s
        self.rate_limit_per_minute = settings.rate_limit_per_minute
        self._client: DiscordClient | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._alive = False
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # One budget for every request of every conversation.
        self._budget = SendBudget()
        self._access = Access(
            admin_role_ids=settings.admin_role_ids, admin_user_ids=settings.admin_user_ids
        )
        self._answered = Answered(self._intake_has_answered)
        self._inbound = Inbound(
            settings,
            access=self._access,
            answered=self._answered,
            me=self._user_id,
            submit=self._submit,
        )
        self._commands = SlashCommands(settings, access=self._access, submit=self._submit)
        self._outbound = Outbound(self._current_client, self._budget, self._access)
        self._catch_up = CatchUp(
            settings,
            max_age_s=inbox_max_age_s,
            client=self._current_client,
            budget=self._budget,
            answered=self._answered,
            consider=self._inbound.consider,
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_alive(self) -> bool:
        return self._alive

    async def check(self) -> str | None:
        """A rejected token or the Message Content intent off, as one line, or None.

        Runs with the other start-up checks, before :meth:`start`.
        """
        return await check_credentials(self._settings.api_url, self._token)

    async def start(self, intake: IntakePort) -> None:
        """Log in, sync the slash commands, connect; return once the gateway is ready.

        Raises:
            PlatformSetupError: a bad token, the Message Content intent off, Discord
                unreachable.
        """
        if self._client is not None:
            raise RuntimeError("the Discord adapter was started already")
        self._intake = intake
        discord.http.Route.BASE = self._settings.api_url.rstrip("/")
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self._settings.gateway_url)
        self._client = client = DiscordClient(
            inbound=self._inbound,
            commands=self._commands,
            access=self._access,
            answered=self._answered,
            on_ready=self._on_ready,
            guild_ready_timeout=self._guild_ready_timeout_s,
        )
        try:
            await client.login(self._token.reveal())
            self._runner = asyncio.create_task(client.connect(reconnect=True), name="discord")
            ready = asyncio.create_task(self._ready.wait())
            await asyncio.wait({ready, self._runner}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not self._ready.is_set():
                await self._runner  # it ended: raises why
                raise PlatformSetupError("Discord closed the connection before it was ready")
        except BaseException as exc:
            await self._shut(client)
            raise start_error(exc, self._settings.api_url) from exc
        self._alive = True
        self._spawn(self._watch(self._runner), "discord-watch")
        _log.info("Discord: connected as %s to %d server(s)", client.user, len(client.guilds))

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._alive = False
        if self._client is not None:
            await self._shut(self._client)
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _shut(self, client: DiscordClient) -> None:
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await client.close()
        except Exception:
            _log.exception("closing the Discord client failed")
        if self._runner is not None:
            with contextlib.suppress(BaseException):
                await self._runner

    async def _watch(self, runner: asyncio.Task[None]) -> None:
        try:
            await runner
            _log.error("Discord: the gateway connection ended")
        except discord.PrivilegedIntentsRequired:
            _log.error("Discord: %s", INTENT_HELP)
        except Exception:
            _log.exception("Discord: the gateway connection was lost for good")
        self._alive = False
        self._stopped.set()

    def _spawn(self, work: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """A background task the adapter owns (cancelled at close)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_ready(self) -> None:
        """The gateway is ready (at start-up, and again after a reconnect that re-identified)."""
        self._ready.set()
        self._spawn(self._catch_up.run(), "discord-catch-up")

    # ------------------------------------------------------------------ what collaborators ask

    def _current_client(self) -> DiscordClient | None:
        return self._client

    def _user_id(self) -> int | None:
        return self._client.user_id if self._client is not None else None

    async def _submit(self, message: InboundMessage[DiscordTarget]) -> Submission:
        assert self._intake is not None, "messages arrive only once started"
        return await self._intake.submit(message)

    async def _intake_has_answered(self, key: str) -> bool:
        assert self._intake is not None, "asked only once started"
        return await self._intake.has_answered(key)

    # ------------------------------------------------------------------ outbound

    def open_reply(
        self, message: InboundMessage[DiscordTarget], *, reply_id: str | None = None
    ) -> DiscordReply:
        conversation = message.conversation
        return DiscordReply(
            self._outbound.surface(message.target),
            budget=self._budget,
            access=self._access,
            spawn=self._spawn,
            on_posted=lambda: self._answered.answered_in(conversation),
            reply_id=int(reply_id) if reply_id and reply_id.isdigit() else None,
            interval_s=self._settings.edit_interval_s,
            label=conversation,
        )

    async def notify(
        self, message: InboundMessage[DiscordTarget], text: str, *, private: bool
    ) -> None:
        await self._outbound.notify(message.target, text, private=private)

    def encode_target(self, target: DiscordTarget) -> Mapping[str, Any]:
        return encode_target(target)

    def decode_target(self, data: Mapping[str, Any]) -> DiscordTarget:
        return decode_target(data)
