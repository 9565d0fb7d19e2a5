"""The Slack adapter's lifecycle and its :class:`~bot.adapters.base.Adapter` face.

:class:`SlackAdapter` checks the token, builds the collaborators that do the work once
it knows who the bot is (:mod:`~bot.adapters.slack.inbound`,
:mod:`~bot.adapters.slack.commands`, :mod:`~bot.adapters.slack.feedback`, wired into
Bolt by :mod:`~bot.adapters.slack.app`), listens, and closes it all again. Everything
else it delegates: a reply to :class:`~bot.adapters.slack.reply.SlackReply`, a short line
to the posting helpers of :mod:`~bot.adapters.slack.api`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.base import IntakePort
from bot.adapters.slack.admins import Admins
from bot.adapters.slack.api import WarnOnce, post_ephemeral, post_message, web_client
from bot.adapters.slack.app import Listening, build_app
from bot.adapters.slack.commands import SlashCommands
from bot.adapters.slack.feedback import FeedbackButtons
from bot.adapters.slack.handoff import Handoff
from bot.adapters.slack.identity import Identity, check_identity
from bot.adapters.slack.inbound import Inbound
from bot.adapters.slack.panel import Panel
from bot.adapters.slack.render import escape
from bot.adapters.slack.reply import NativeStreaming, SlackReply
from bot.adapters.slack.target import SlackTarget
from bot.config import Settings, SlackSettings
from bot.contract import InboundMessage, Platform
from bot.core.tasks import TaskTracker
from bot.errors import ConfigError, PlatformSetupError

_log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 5.0


class SlackAdapter:
    """Slack, as the intake sees it. Build with :meth:`from_settings`; ``start`` connects."""

    platform: Platform = "slack"
    admins = "workspace admins and owners"
    command_prefix = "/research "
    own_commands: tuple[str, ...] = ()
    recovers = True

    def __init__(
        self,
        settings: SlackSettings,
        *,
        bot_token: str,
        app_token: str | None = None,
        signing_secret: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        tasks: TaskTracker | None = None,
    ) -> None:
        """``clock`` paces reply updates and expires the admin cache. The work that follows
        each ack (translating the payload, handing it to the intake) runs in ``tasks``,
        which :meth:`close` drains; pass one to wait for what was received to be handed in
        (the tests do), else the adapter keeps its own."""
        self.settings = settings
        self.rate_limit_per_minute = settings.rate_limit_per_minute
        self._bot_token = bot_token
        self._app_token = app_token
        self._signing_secret = signing_secret
        self._clock = clock
        self._tasks = tasks if tasks is not None else TaskTracker()
        self._warn_once = WarnOnce()
        self._streaming = NativeStreaming()
        self._identity = Identity()
        self._stopped = asyncio.Event()
        self._alive = False
        self._closed = False
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None
        self._listening: Listening | None = None
        self.http_url = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The adapter for ``settings.slack`` with the tokens from the environment.

        Raises:
            ConfigError: no bot token, or the mode's second secret is missing.
        """
        slack = settings.slack
        if settings.slack_bot_token is None:
            raise ConfigError("Slack needs SLACK_BOT_TOKEN in the environment")
        if slack.mode == "socket" and settings.slack_app_token is None:
            raise ConfigError(
                "Slack's Socket Mode needs SLACK_APP_TOKEN (an xapp- token), "
                'or set [slack].mode = "http"'
            )
        if slack.mode == "http" and settings.slack_signing_secret is None:
            raise ConfigError("Slack's HTTP mode needs SLACK_SIGNING_SECRET in the environment")
        return cls(
            slack,
            bot_token=settings.slack_bot_token.reveal(),
            app_token=settings.slack_app_token.reveal() if settings.slack_app_token else None,
            signing_secret=(
                settings.slack_signing_secret.reveal() if settings.slack_signing_secret else None
            ),
        )

    # ------------------------------------------------------------------ state

    @property
    def client(self) -> AsyncWebClient:
        """The Web API client, while started.

        Raises:
            RuntimeError: the adapter is not started.
        """
        if self._client is None:
            raise RuntimeError("the Slack adapter is not started")
        return self._client

    @property
    def streaming(self) -> bool:
        """Whether replies stream natively (until the workspace refuses it once)."""
        return self._streaming.on

    @property
    def bot_user_id(self) -> str:
        """The bot user's id (``U...``), once the token was checked."""
        return self._identity.user_id

    @property
    def bot_id(self) -> str:
        return self._identity.bot_id

    @property
    def team_id(self) -> str:
        return self._identity.team_id

    @property
    def is_alive(self) -> bool:
        return self._alive and not self._closed

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # ------------------------------------------------------------------ lifecycle

    async def check(self) -> str | None:
        """A rejected token, an uninstalled app or a missing scope, as one line, or None.

        Runs with the other start-up checks, before :meth:`start`, on a client of its own
        that it closes, so a start-up that fails leaves nothing open.
        """
        async with aiohttp.ClientSession() as session:
            client = web_client(
                self._bot_token, base_url=self.settings.api_url, session=session, retrying=False
            )
            try:
                self._identity = await check_identity(client, self.settings)
            except PlatformSetupError as exc:
                return f"Slack: {exc}"
        return None

    async def start(self, intake: IntakePort) -> None:
        """Check the token and scopes, then listen (Socket Mode or HTTP); ready on return.

        Raises:
            PlatformSetupError: a rejected token, an uninstalled app, a missing scope, or
                an app token Slack refuses; one line naming the fix.
        """
        self._session = aiohttp.ClientSession()
        try:
            self._client = client = web_client(
                self._bot_token,
                base_url=self.settings.api_url,
                session=self._session,
                retrying=True,
            )
            self._identity = await check_identity(client, self.settings)
            self._listening = Listening(
                self._build_app(intake, client),
                client,
                self.settings,
                app_token=self._app_token,
            )
            await self._listening.start()
            self.http_url = self._listening.http_url
        except BaseException:
            await self._release()
            raise
        self._alive = True
        _log.info(
            "Slack: answering as %s in team %s (%s mode)",
            self.bot_user_id,
            self.team_id,
            self.settings.mode,
        )

    def _build_app(self, intake: IntakePort, client: AsyncWebClient) -> AsyncApp:
        # Built per start, once the identity is known: the collaborators take it as is.
        handoff = Handoff(self._tasks)
        admins = Admins(
            client,
            configured=self.settings.admin_user_ids,
            clock=self._clock,
            warn=self._warn_once,
        )
        return build_app(
            client,
            http=self.settings.mode == "http",
            signing_secret=self._signing_secret,
            inbound=Inbound(
                settings=self.settings,
                identity=self._identity,
                admins=admins,
                intake=intake,
                handoff=handoff,
            ),
            panel=Panel(client=client, handoff=handoff, warn=self._warn_once),
            commands=SlashCommands(
                identity=self._identity,
                admins=admins,
                intake=intake,
                handoff=handoff,
                client=client,
            ),
            feedback=FeedbackButtons(intake=intake, handoff=handoff),
        )

    async def close(self) -> None:
        """Stop listening, finish handing in what was received, close the connections.

        Safe to call twice. The turns themselves belong to the intake, which drains them
        before the runtime closes adapters.
        """
        if self._closed:
            return
        self._closed = True
        try:
            await self._stop_listening()
            await self._tasks.drain(grace_s=SHUTDOWN_GRACE_S, final=True)
        finally:
            await self._release()
            self._stopped.set()

    async def _stop_listening(self) -> None:
        listening, self._listening = self._listening, None
        if listening is not None:
            await listening.close()

    async def _release(self) -> None:
        await self._stop_listening()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ------------------------------------------------------------------ Adapter

    def open_reply(
        self, message: InboundMessage[SlackTarget], *, reply_id: str | None = None
    ) -> SlackReply:
        return SlackReply(
            self.client,
            message,
            reply_id=reply_id,
            streaming=self._streaming,
            clock=self._clock,
            warn=self._warn_once,
        )

    async def notify(
        self, message: InboundMessage[SlackTarget], text: str, *, private: bool
    ) -> None:
        target = message.target
        if private or target.private:
            await post_ephemeral(
                self.client,
                channel=target.channel,
                user=target.user,
                thread_ts=target.thread,
                text=escape(text),
            )
            return
        await post_message(
            self.client, channel=target.channel, thread_ts=target.thread_ts, text=escape(text)
        )

    def encode_target(self, target: SlackTarget) -> Mapping[str, Any]:
        return target.encode()

    def decode_target(self, data: Mapping[str, Any]) -> SlackTarget:
        return SlackTarget.decode(data)
