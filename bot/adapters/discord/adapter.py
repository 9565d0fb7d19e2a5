"""The Discord adapter: discord.py events in, rendered replies out.

    gateway ──► _Client.on_message ──► DiscordAdapter._consider ── trigger? ──► sink (intake)
            └─► app command tree (/ask /reset /sources /session /help) ──────► sink
    intake ──► open_reply ──► DiscordReply: one reply, edited in place, paced by SendBudget
           └─► notify     ──► a short reply (or an ephemeral interaction follow-up)

Triggers: a mention of the bot; any message in a research channel (or a thread under one);
a follow-up in a thread where the bot has answered; a direct message (``respond_to_dms``).
System messages are dropped here; the bot's own and other bots' messages go to the intake,
which ignores them, like dedupe, rate limits, commands and queueing: they live there once.

Every channel, thread and DM is its own conversation:
``conversation_key("discord", guild, channel[, thread])`` (``@me`` for a DM's guild). With
``auto_thread`` a top-level question in a research channel gets a thread started from it
(a thread's id is its starter message's, so the key is known before the thread exists).

Every send and edit carries ``allowed_mentions`` none and suppressed link previews; a reply
carries a nonce derived from the question's id, so a post retried within Discord's window
returns the first message. After a restart, :meth:`DiscordAdapter._catch_up` reads the
history of research channels and of the threads the bot answered in (back to the inbox's
maximum age) and hands each message in once more: the inbox drops those already taken.

Start-up fails with one :class:`~bot.errors.PlatformSetupError` line for a bad token or a
Message Content intent that is not switched on. discord.py's ``Route.BASE`` and gateway URL
are class attributes, so one process runs one Discord adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands

from bot.adapters.base import IntakePort, Submission
from bot.adapters.discord.catchup import CatchUp
from bot.adapters.discord.commands import SlashCommands
from bot.adapters.discord.inbound import PLATFORM, Answered, Inbound, thread_key
from bot.adapters.discord.pacing import SendBudget
from bot.adapters.discord.permissions import Access
from bot.adapters.discord.render import LIMIT, progress_line, render_reply, split_message
from bot.adapters.discord.target import (
    DiscordTarget,
    SlashState,
    decode_target,
    encode_target,
)
from bot.config import DiscordSettings, Secret
from bot.contract import InboundMessage, Platform, Reply
from bot.errors import PlatformSetupError

_log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
# A typing indicator shows for about 10 s; refresh it before it lapses.
TYPING_EVERY_S = 8.0
# Of the requests a second, typing indicators never take the last ones.
TYPING_SPARE = 15
ALREADY_THREADED = 160004
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


# ----------------------------------------------------------------------------- where text goes


class _Surface(Protocol):
    """The messages of one reply: the first one (index 0), then follow-ups."""

    @property
    def channel(self) -> int: ...

    async def post(self, index: int, text: str) -> int: ...

    async def edit(self, index: int, message_id: int, text: str) -> None: ...

    async def delete(self, message_id: int) -> None: ...

    async def typing(self) -> None: ...


class _ChannelSurface:
    """Plain messages: the first replies to the question (``message_reference``)."""

    def __init__(self, adapter: DiscordAdapter, target: DiscordTarget) -> None:
        self._adapter = adapter
        self._target = target
        self._destination: discord.PartialMessageable | None = None
        self._threaded = False

    @property
    def channel(self) -> int:
        return self._destination.id if self._destination is not None else self._target.channel_id

    async def _where(self) -> discord.PartialMessageable:
        if self._destination is None:
            target = self._target
            self._destination = self._adapter.partial(target.channel_id, target.guild_id)
            if target.start_thread and target.message_id is not None:
                thread = await self._adapter.start_thread(target)
                if thread is not None:
                    self._destination, self._threaded = thread, True
        return self._destination

    async def post(self, index: int, text: str) -> int:
        where = await self._where()
        target = self._target
        options: dict[str, Any] = {}
        if target.message_id is not None:
            options["nonce"] = f"r{target.message_id}.{index}"
            if index == 0 and not self._threaded:
                options["reference"] = discord.MessageReference(
                    message_id=target.message_id,
                    channel_id=target.channel_id,
                    guild_id=target.guild_id,
                    fail_if_not_exists=False,
                )
        message = await where.send(
            text, allowed_mentions=NO_MENTIONS, suppress_embeds=True, mention_author=False,
            **options,
        )  # fmt: skip
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


class _SlashSurface:
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


# ----------------------------------------------------------------------------- one reply


class DiscordReply:
    """One answer: posted at the first progress step, edited as the turn goes on.

    Progress and text only change what the reply should show; a flusher task sends the
    latest state at most every ``interval_s`` and within the shared :class:`SendBudget`,
    so a slow Discord never holds up the pipeline and a fast model never floods Discord.
    :meth:`on_reply` lets an update in flight finish, stops the flusher and writes the
    final text, waiting for its slots.
    """

    def __init__(
        self,
        adapter: DiscordAdapter,
        surface: _Surface,
        *,
        reply_id: int | None,
        interval_s: float,
        label: str,
    ) -> None:
        self._adapter = adapter
        self._surface = surface
        self._interval_s = interval_s
        self._label = label
        self._slash = isinstance(surface, _SlashSurface)
        # The slash response exists from the defer on; a recovered reply exists already.
        self._ids: list[int] = [0] if self._slash else ([reply_id] if reply_id else [])
        self._shown: list[str | None] = [None] * len(self._ids)
        self._wanted: list[str] = []
        self._body: list[str] = []
        self._last_write = -float("inf")
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._posted = asyncio.Event()
        self._done = False
        self._flusher: asyncio.Task[None] | None = None
        self._typer: asyncio.Task[None] | None = None

    @property
    def reply_id(self) -> str | None:
        if self._slash or not self._ids:
            return None
        return str(self._ids[0])

    async def on_progress(self, step: str) -> None:
        if not self._body:
            self._want([progress_line(step)])

    async def on_text(self, text: str) -> None:
        self._body.append(text)
        self._want(split_message("".join(self._body) + " …"))

    async def on_reply(self, reply: Reply) -> None:
        self._done = True
        parts = split_message(render_reply(reply))
        async with self._lock:
            # The lock first: an update in flight (perhaps waiting out a 429, or half-way
            # through posting its parts) finishes, so the final edit neither jumps the
            # rate limit nor starts from a half-recorded set of messages. Only then are
            # the flusher and the typing indicator stopped; neither can hold the lock now.
            await self._stop_background()
            try:
                await self._sync(parts, final=True)
            except discord.Forbidden as exc:
                # Not retried: the permission will not come back by itself.
                self._adapter.access.missing_permission(self._surface.channel, "send", exc)

    def _want(self, parts: list[str]) -> None:
        if self._done:
            return
        self._wanted = parts
        self._wake.set()
        if self._flusher is None:
            self._flusher = self._adapter.spawn(self._flush(), f"discord-flush:{self._label}")
            self._typer = self._adapter.spawn(self._type(), f"discord-typing:{self._label}")

    async def _flush(self) -> None:
        while not self._done:
            await self._wake.wait()
            self._wake.clear()
            pause = self._last_write + self._interval_s - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                async with self._lock:
                    await self._sync(self._wanted, final=False)
            except discord.RateLimited as exc:
                self._adapter.budget.hold(self._surface.channel, exc.retry_after)
            except discord.Forbidden as exc:
                self._adapter.access.missing_permission(self._surface.channel, "send", exc)
                return
            except (discord.HTTPException, aiohttp.ClientError, OSError):
                # The final edit carries everything; an update that failed is only late.
                _log.warning("an update of %s failed; going on", self._label, exc_info=True)
            except Exception:
                _log.exception("updating the reply of %s failed; going on", self._label)

    async def _type(self) -> None:
        with contextlib.suppress(discord.HTTPException, aiohttp.ClientError, OSError):
            await self._typing()
            # Posting the reply clears the indicator: show it again right after.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._posted.wait(), TYPING_EVERY_S)
            while not self._done:
                await self._typing()
                await asyncio.sleep(TYPING_EVERY_S)

    async def _typing(self) -> None:
        # Cosmetic: skipped when the second's budget is needed for posts and edits.
        if self._adapter.budget.take_global(spare=TYPING_SPARE):
            await self._surface.typing()

    async def _stop_background(self) -> None:
        for task in (self._flusher, self._typer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _sync(self, parts: list[str], *, final: bool) -> None:
        """Make the reply's messages show ``parts``: edit what changed, post what is new."""
        budget, channel = self._adapter.budget, self._surface.channel
        spare = 0 if final else 1
        for index, text in enumerate(parts):
            if index < len(self._ids):
                if self._shown[index] == text:
                    continue
                await budget.acquire(channel, "edit", spare=spare)
                try:
                    await self._surface.edit(index, self._ids[index], text)
                except discord.NotFound:
                    if index or self._slash:
                        raise
                    # The reply recorded before a crash was deleted: post a new one.
                    self._ids, self._shown = [], []
                    await self._sync(parts, final=final)
                    return
                self._shown[index] = text
            else:
                await budget.acquire(channel, "create")
                self._ids.append(await self._surface.post(index, text))
                self._shown.append(text)
                if index == 0:
                    self._adapter.answered_in(self._label)
                    self._posted.set()
            self._last_write = time.monotonic()
        if final:
            for extra in self._ids[len(parts) :]:
                await self._surface.delete(extra)
            del self._ids[len(parts) :], self._shown[len(parts) :]


# ----------------------------------------------------------------------------- the client


class _Client(discord.Client):
    """discord.py's client, handing everything to the adapter."""

    def __init__(self, adapter: DiscordAdapter, *, guild_ready_timeout: float) -> None:
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
        )
        self.adapter = adapter
        self.tree: app_commands.CommandTree[_Client] = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:
        await self.adapter.set_up_commands(self.tree)

    async def on_ready(self) -> None:
        self.adapter.ready()

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.consider(message)

    async def on_guild_channel_update(self, before: Any, after: Any) -> None:
        self.adapter.access.permissions_changed()

    async def on_guild_role_update(self, before: Any, after: Any) -> None:
        self.adapter.access.permissions_changed()

    async def on_thread_create(self, thread: discord.Thread) -> None:
        if thread.owner_id == self.adapter.user_id:
            self.adapter.answered_in(thread_key(thread))


# ----------------------------------------------------------------------------- the adapter


class DiscordAdapter:
    """Discord as the intake sees it (see the module docstring)."""

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
        self.budget = SendBudget()
        self.access = Access(
            admin_role_ids=settings.admin_role_ids, admin_user_ids=settings.admin_user_ids
        )
        self._client: _Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._alive = False
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._answered = Answered(self._intake_has_answered)
        self._inbound = Inbound(
            settings,
            access=self.access,
            answered=self._answered,
            me=lambda: self.user_id,
            submit=self._submit,
        )
        self._commands = SlashCommands(settings, access=self.access, submit=self._submit)
        self._catch_up = CatchUp(
            settings,
            max_age_s=inbox_max_age_s,
            client=lambda: self._client,
            budget=self.budget,
            answered=self._answered,
            consider=self._inbound.consider,
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_alive(self) -> bool:
        return self._alive

    @property
    def user_id(self) -> int | None:
        user = self._client.user if self._client is not None else None
        return user.id if user is not None else None

    async def check(self) -> str | None:
        """A rejected token or the Message Content intent off, as one line, or None.

        Runs with the other start-up checks, before :meth:`start`: two REST calls on a
        session of its own, so a failing start-up leaves nothing open. The intent is read
        from the application's flags, so it is explained before the gateway refuses it.
        """
        api = self._settings.api_url.rstrip("/")
        headers = {"Authorization": f"Bot {self._token.reveal()}"}
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
        self._client = client = _Client(self, guild_ready_timeout=self._guild_ready_timeout_s)
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
            raise _start_error(exc, self._settings.api_url) from exc
        self._alive = True
        self.spawn(self._watch(self._runner), "discord-watch")
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

    async def _shut(self, client: _Client) -> None:
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

    def spawn(self, work: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """A background task the adapter owns (cancelled at close)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def ready(self) -> None:
        """The gateway is ready (at start-up, and again after a reconnect that re-identified)."""
        self._ready.set()
        self.spawn(self._catch_up.run(), "discord-catch-up")

    # ------------------------------------------------------------------ events

    async def set_up_commands(self, tree: app_commands.CommandTree[_Client]) -> None:
        """Register the slash commands and sync them (setup_hook)."""
        await self._commands.set_up(tree)

    async def consider(self, message: discord.Message) -> None:
        """One MESSAGE_CREATE: a trigger?"""
        await self._inbound.consider(message)

    def answered_in(self, key: str) -> None:
        """The bot has posted an answer in conversation ``key`` (its follow-ups need no mention)."""
        self._answered.answered_in(key)

    async def _submit(self, message: InboundMessage[DiscordTarget]) -> Submission:
        assert self._intake is not None, "messages arrive only once started"
        return await self._intake.submit(message)

    async def _intake_has_answered(self, key: str) -> bool:
        assert self._intake is not None, "asked only once started"
        return await self._intake.has_answered(key)

    # ------------------------------------------------------------------ outbound

    def partial(self, channel_id: int, guild_id: int | None) -> discord.PartialMessageable:
        assert self._client is not None
        kind = discord.ChannelType.private if guild_id is None else None
        return self._client.get_partial_messageable(channel_id, guild_id=guild_id, type=kind)

    async def start_thread(self, target: DiscordTarget) -> discord.PartialMessageable | None:
        """The thread started from the question (``auto_thread``); None: answer in place."""
        assert target.message_id is not None
        channel = self.partial(target.channel_id, target.guild_id)
        question = channel.get_partial_message(target.message_id)
        try:
            await self.budget.acquire(target.channel_id, "create")
            thread = await question.create_thread(name=target.thread_name)
            return self.partial(thread.id, target.guild_id)
        except discord.Forbidden as exc:
            self.access.missing_permission(target.channel_id, "create_public_threads", exc)
            return None
        except discord.HTTPException as exc:
            if exc.code == ALREADY_THREADED:
                return self.partial(target.message_id, target.guild_id)
            raise

    def open_reply(
        self, message: InboundMessage[DiscordTarget], *, reply_id: str | None = None
    ) -> DiscordReply:
        target = message.target
        surface: _Surface
        if target.slash is not None:
            surface = _SlashSurface(target.slash, target.channel_id)
        else:
            surface = _ChannelSurface(self, target)
        return DiscordReply(
            self,
            surface,
            reply_id=int(reply_id) if reply_id and reply_id.isdigit() else None,
            interval_s=self._settings.edit_interval_s,
            label=message.conversation,
        )

    async def notify(
        self, message: InboundMessage[DiscordTarget], text: str, *, private: bool
    ) -> None:
        target = message.target
        text = text[:LIMIT]
        if target.slash is not None:
            await self._notify_slash(target.slash, text, private=private)
            return
        channel = self.partial(target.channel_id, target.guild_id)
        options: dict[str, Any] = {}
        if target.message_id is not None:
            options["nonce"] = f"n{target.message_id}"
            options["reference"] = discord.MessageReference(
                message_id=target.message_id,
                channel_id=target.channel_id,
                guild_id=target.guild_id,
                fail_if_not_exists=False,
            )
        await self.budget.acquire(target.channel_id, "create")
        try:
            await channel.send(
                text, allowed_mentions=NO_MENTIONS, suppress_embeds=True, mention_author=False,
                **options,
            )  # fmt: skip
        except discord.Forbidden as exc:
            self.access.missing_permission(target.channel_id, "send", exc)

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

    def encode_target(self, target: DiscordTarget) -> Mapping[str, Any]:
        return encode_target(target)

    def decode_target(self, data: Mapping[str, Any]) -> DiscordTarget:
        return decode_target(data)


# ----------------------------------------------------------------------------- helpers


def _start_error(exc: BaseException, api_url: str) -> BaseException:
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
