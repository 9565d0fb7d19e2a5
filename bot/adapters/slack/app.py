"""Bolt's ``AsyncApp`` with every listener wired, and served over Socket Mode or HTTP."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp, AsyncAssistant
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack.api import api_error
from bot.adapters.slack.commands import COMMAND, RESET_SHORTCUT, SlashCommands
from bot.adapters.slack.feedback import FEEDBACK_ACTION, FeedbackButtons
from bot.adapters.slack.inbound import Inbound
from bot.adapters.slack.panel import Panel
from bot.config import SlackSettings
from bot.errors import PlatformSetupError

_log = logging.getLogger(__name__)


def build_app(
    client: AsyncWebClient,
    *,
    http: bool,
    signing_secret: str | None,
    inbound: Inbound,
    panel: Panel,
    commands: SlashCommands,
    feedback: FeedbackButtons,
) -> AsyncApp:
    """The app, each payload routed to its listener; ``http`` verifies request signatures
    with ``signing_secret`` (Socket Mode needs none: the websocket is authenticated)."""
    app = AsyncApp(
        client=client,
        signing_secret=signing_secret if http else None,
        request_verification_enabled=http,
        # Bolt acks when a listener returns; each returns at once, its work in a task
        # (see Handoff), so nothing that waits on the network happens before the ack.
        process_before_response=True,
        logger=logging.getLogger("slack_bolt"),
    )
    app.event("app_mention")(inbound.on_mention)
    app.event("message")(inbound.on_message)
    # The AI panel, on either of Slack's surfaces (a workspace has one or the other).
    app.event("app_home_opened")(panel.on_home_opened)
    app.command(COMMAND)(commands.on_command)
    app.shortcut(RESET_SHORTCUT)(commands.on_reset_shortcut)
    app.action(FEEDBACK_ACTION)(feedback.on_click)
    assistant = AsyncAssistant()
    assistant.thread_started(panel.on_assistant_thread_started)
    assistant.user_message(inbound.on_assistant_message)
    app.assistant(assistant)
    app.error(_on_error)
    return app


async def _on_error(error: Exception, body: dict[str, Any]) -> None:
    _log.error("Slack listener failed on a %s payload", body.get("type"), exc_info=error)


class Listening:
    """The app served the way ``settings.mode`` says, from :meth:`start` to :meth:`close`."""

    def __init__(
        self,
        app: AsyncApp,
        client: AsyncWebClient,
        settings: SlackSettings,
        *,
        app_token: str | None,
    ) -> None:
        """``app_token`` (an xapp- token) is needed in Socket Mode only."""
        self._app = app
        self._client = client
        self._settings = settings
        self._app_token = app_token
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        # Where Slack must POST in HTTP mode, once listening (the port may be picked then).
        self.http_url = ""

    async def start(self) -> None:
        """Connect the websocket, or listen on ``http_host:http_port``; ready on return.

        On failure call :meth:`close` all the same: it releases what was opened.

        Raises:
            PlatformSetupError: Slack refused the app token, or the port is taken.
        """
        if self._settings.mode == "socket":
            await self._start_socket()
        else:
            await self._start_http()

    async def close(self) -> None:
        """Stop listening. Safe to call twice, and after a failed :meth:`start`."""
        socket, self._socket = self._socket, None
        if socket is not None:
            try:
                await socket.close_async()  # type: ignore[no-untyped-call]
            except Exception:
                _log.exception("closing the Slack Socket Mode connection failed")
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _start_socket(self) -> None:
        assert self._app_token is not None, "Socket Mode is configured with an app token"
        try:
            opened = await self._client.apps_connections_open(app_token=self._app_token)
        except SlackApiError as exc:
            raise PlatformSetupError(
                f"Slack refused SLACK_APP_TOKEN for Socket Mode ({api_error(exc)}): create an "
                "app-level token with connections:write and enable Socket Mode"
            ) from exc
        handler = AsyncSocketModeHandler(self._app, self._app_token, web_client=self._client)
        # The URL just issued is the one to use: asking again would open a second ticket.
        handler.client.wss_uri = str(opened["url"])
        self._socket = handler
        await handler.connect_async()  # type: ignore[no-untyped-call]

    async def _start_http(self) -> None:
        settings = self._settings
        runner = web.AppRunner(
            self._app.web_app(path=settings.http_path, port=settings.http_port),
            handle_signals=False,
            access_log=None,
        )
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        try:
            await site.start()
        except OSError as exc:
            raise PlatformSetupError(
                f"cannot listen on {settings.http_host}:{settings.http_port} for Slack ({exc}); "
                "change [slack].http_port"
            ) from exc
        host, port = runner.addresses[0][:2]
        self.http_url = f"http://{host}:{port}{settings.http_path}"
