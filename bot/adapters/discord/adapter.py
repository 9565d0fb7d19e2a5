"""The Discord adapter's lifecycle: check, start, close, health, and the collaborators wired.

:class:`DiscordAdapter` is what the runtime and the intake see (the
:class:`~bot.adapters.base.Adapter` protocol); each of its jobs is a collaborator's, built
here and handed only what it needs. A client that never connects carries the REST calls
(replies, edits); the gateway shards this replica runs each have a client of their own
(:class:`~bot.adapters.discord.shards.ShardSet`). discord.py's ``Route.BASE`` and gateway
URL are class attributes, so one process runs one Discord adapter.
"""

from __future__ import annotations

import asyncio
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
from bot.adapters.discord.pacing import RetriedLimits, SendBudget
from bot.adapters.discord.permissions import Access
from bot.adapters.discord.reply import DiscordReply
from bot.adapters.discord.shards import GatewayClient, IdentifyPacer, ShardSet, gateway_plan
from bot.adapters.discord.target import DiscordTarget, decode_target, encode_target
from bot.config import DiscordSettings, Secret
from bot.contract import InboundMessage, Platform

_log = logging.getLogger(__name__)


class DiscordAdapter:
    """Discord as the intake sees it (see the package docstring)."""

    platform: Platform = PLATFORM
    admins = "members with Manage Server (or an admin role)"
    command_prefix = "/"
    own_commands: tuple[str, ...] = ()
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
        # REST only (never connects): replies, edits, threads, whichever shards run here.
        self._client: DiscordClient | None = None
        self._shards: ShardSet | None = None
        self._pacer: IdentifyPacer | None = None
        self._synced = False
        self._stopped = asyncio.Event()
        self._alive = False
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # One budget for every request of every conversation, the bot's divided among
        # the replicas.
        self._budget = SendBudget(replicas=self._replicas)
        self._retried_limits = RetriedLimits()
        self._access = Access(
            admin_role_ids=settings.admin_role_ids, admin_user_ids=settings.admin_user_ids
        )
        self._answered = Answered(self._intake_has_answered, shared=self._shared)
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
        """Log in, ask Discord how many shards, connect this replica's share of them;
        return once those are ready (alone: every shard; with other replicas: perhaps
        none yet, and the REST client answers all the same).

        Raises:
            PlatformSetupError: a bad token, the Message Content intent off, Discord
                unreachable.
        """
        if self._client is not None:
            raise RuntimeError("the Discord adapter was started already")
        self._intake = intake
        discord.http.Route.BASE = self._settings.api_url.rstrip("/")
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self._settings.gateway_url)
        self._retried_limits.attach()
        self._client = client = self._new_client()
        try:
            await client.login(self._token.reveal())
            plan = await gateway_plan(client.http, self._settings.shard_count)
            self._pacer = IdentifyPacer(intake.cluster, plan.max_concurrency)
            self._shards = ShardSet(
                intake.cluster, plan.count, launch=self._launch, lost=self._lost
            )
            await self._shards.start()
        except BaseException as exc:
            await self._shut()
            raise start_error(exc, self._settings.api_url) from exc
        self._alive = True
        _log.info(
            "Discord: logged in as %s; shard(s) %s of %d run here",
            client.user,
            ", ".join(map(str, sorted(self._shards.running))) or "none yet",
            plan.count,
        )

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._alive = False
        await self._shut()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _shut(self) -> None:
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._shards is not None:
            await self._shards.close()
        if self._client is not None:
            try:
                await self._client.close()
            except Exception:
                _log.exception("closing the Discord client failed")
        self._retried_limits.detach()

    def _new_client(self, shard_id: int | None = None, count: int | None = None) -> DiscordClient:
        return DiscordClient(
            inbound=self._inbound,
            commands=self._commands,
            access=self._access,
            answered=self._answered,
            on_ready=self._on_ready,
            guild_ready_timeout=self._guild_ready_timeout_s,
            shard_id=shard_id,
            shard_count=count,
            before_identify=self._pacer.wait if self._pacer is not None else None,
        )

    async def _launch(self, shard_id: int) -> GatewayClient:
        """The logged-in client of ``shard_id``; the replica that runs shard 0 syncs the
        slash commands (once)."""
        assert self._shards is not None
        client = self._new_client(shard_id, self._shards.count)
        try:
            await client.login(self._token.reveal())
            if shard_id == 0 and not self._synced:
                self._synced = True
                await self._commands.sync(client.tree)
        except BaseException:
            await client.close()
            raise
        return client

    def _lost(self, shard_id: int, exc: BaseException | None) -> None:
        """A shard's connection ended for good: the adapter has stopped (its shards go to
        the other replicas once the process is gone)."""
        if self._closing:
            return
        if isinstance(exc, discord.PrivilegedIntentsRequired):
            _log.error("Discord: %s", INTENT_HELP)
        elif exc is None:
            _log.error("Discord: the gateway connection of shard %d ended", shard_id)
        else:
            _log.error(
                "Discord: the gateway connection of shard %d was lost for good",
                shard_id,
                exc_info=exc,
            )
        self._alive = False
        self._stopped.set()

    def _spawn(self, work: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """A background task the adapter owns (cancelled at close)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_ready(self, client: DiscordClient) -> None:
        """A shard is ready (at its start, and again after a reconnect that re-identified)."""
        self._spawn(self._catch_up.run(client), f"discord-catch-up:{client.shard_id}")

    # ------------------------------------------------------------------ what collaborators ask

    def _current_client(self) -> DiscordClient | None:
        return self._client

    def _shared(self) -> bool:
        return self._intake.cluster.shared if self._intake is not None else False

    def _replicas(self) -> int:
        return self._intake.cluster.replicas if self._intake is not None else 1

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
