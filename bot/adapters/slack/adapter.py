"""The Slack adapter: slack-bolt's ``AsyncApp`` translated onto the shared intake.

    Slack ──(Socket Mode websocket | signed HTTP POST)──► AsyncApp listeners
        │ translate the event, spawn its handling in a tracked task, return: Bolt acks
        ▼
    intake.submit ──► commands / rate limit / inbox / queue / turn ──► SlackReply

What it answers: an ``app_mention`` in a channel or thread; later messages in a thread the
bot answered in (``follow_up_in_threads``: handed in as follow-ups, which the intake answers
only where the bot has a conversation); direct messages (``respond_to_dms``); and the
assistant side panel (Bolt's ``AsyncAssistant``: suggested prompts when a thread starts,
the thread's status while a turn runs). The answer always goes to the thread: the
message's ``thread_ts``, or its own ``ts`` when it starts one. Each thread is its own
conversation, ``conversation_key("slack", team, channel, thread_ts)``.

Ack at once: the app runs with ``process_before_response=True``, so Bolt acks when the
listener returns, and the listener only translates the payload and spawns the rest in
this adapter's own :class:`~bot.pipeline.sessions.TaskTracker` (Bolt's default would run
listeners in tasks nobody owns). Nothing that waits on the network happens before the ack.

Exactly once: the inbox dedupes on the message, ``"{channel}:{ts}"``, rather than on the
``event_id`` of the envelope. A retry (``X-Slack-Retry-Num``, ``retry_attempt``) carries
the same message, and so does the ``message`` event Slack sends next to an ``app_mention``
for the same text, so neither is answered twice, while a retry whose first copy never
arrived is the first claim and is answered. Nothing is dropped for carrying a retry header.

Replies (:class:`SlackReply`): native streaming through the SDK's ``chat_stream`` helper
(``chat.startStream`` / ``appendStream`` / ``stopStream``), the progress step first as a
task chunk; where the workspace refuses it, a placeholder reply updated with
``chat.update``. Either way updates are paced, the final message carries the answer, the
numbered Sources and Slack's feedback buttons, unfurls are off, and an answer longer than
one message continues in further thread replies. The client has the SDK's
``AsyncRateLimitErrorRetryHandler``, so a 429 waits for ``Retry-After``.

Errors: start-up raises :class:`~bot.errors.PlatformSetupError` with one line naming the
fix (a revoked token, an uninstalled app, a missing scope); a listener never lets an
exception reach Bolt (logged, and the user sees nothing or a fixed line).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, Self

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp, AsyncAssistant
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.base import IntakePort
from bot.adapters.slack.api import (
    WarnOnce,
    api_error,
    describe_api_error,
    post_ephemeral,
    post_message,
    web_client,
)
from bot.adapters.slack.feedback import FEEDBACK_ACTION
from bot.adapters.slack.render import escape, unescape
from bot.adapters.slack.reply import NativeStreaming, SlackReply
from bot.adapters.slack.target import COMMAND_THREAD, SlackTarget
from bot.config import Settings, SlackSettings
from bot.contract import Author, InboundMessage, Platform, Rating, conversation_key
from bot.core.tasks import TaskTracker
from bot.errors import ConfigError, PlatformSetupError

_log = logging.getLogger(__name__)

# Every mode needs these; the others are checked where they are used.
CORE_SCOPES = ("app_mentions:read", "chat:write")
DM_SCOPES = ("im:history",)
THREAD_SCOPES = ("channels:history",)
ADMIN_CACHE_S = 300.0
SHUTDOWN_GRACE_S = 5.0
RESET_SHORTCUT = "reset_thread"
SUGGESTED_PROMPTS = (
    ("What is it?", "What is the transformer architecture in deep learning?"),
    ("Compare", "How do GPT and BERT differ?"),
    ("Latest", "What is new in Rust on Hacker News?"),
)
_PERMALINK = re.compile(r"/archives/(?P<channel>[A-Z0-9]+)/p(?P<sec>\d{10})(?P<frac>\d{6})")
_THREAD_PARAM = re.compile(r"[?&]thread_ts=(?P<ts>\d+\.\d+)")


class SlackAdapter:
    """Slack, as the intake sees it. Build with :meth:`from_settings`; ``start`` connects."""

    platform: Platform = "slack"
    admins = "workspace admins and owners"
    command_prefix = "/research "
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
        self._intake: IntakePort | None = None
        self._bot_token = bot_token
        self._app_token = app_token
        self._signing_secret = signing_secret
        self._clock = clock
        self._tasks = tasks if tasks is not None else TaskTracker()
        self._stopped = asyncio.Event()
        self._alive = False
        self._closed = False
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self._admins: dict[str, tuple[bool, float]] = {}
        self._warn_once = WarnOnce()
        self._streaming = NativeStreaming()
        self.bot_user_id = ""
        self.bot_id = ""
        self.team_id = ""
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

    # ------------------------------------------------------------------ lifecycle

    @property
    def client(self) -> AsyncWebClient:
        if self._client is None:
            raise RuntimeError("the Slack adapter is not started")
        return self._client

    @property
    def streaming(self) -> bool:
        """Whether replies stream natively (until the workspace refuses it once)."""
        return self._streaming.on

    @property
    def is_alive(self) -> bool:
        return self._alive and not self._closed

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def check(self) -> str | None:
        """A rejected token, an uninstalled app or a missing scope, as one line, or None.

        Runs with the other start-up checks, before :meth:`start`, on a client of its own
        that it closes, so a start-up that fails leaves nothing open.
        """
        async with aiohttp.ClientSession() as session:
            self._client = web_client(
                self._bot_token, base_url=self.settings.api_url, session=session, retrying=False
            )
            try:
                await self._check_identity()
            except PlatformSetupError as exc:
                return f"Slack: {exc}"
            finally:
                self._client = None
        return None

    async def start(self, intake: IntakePort) -> None:
        """Check the token and scopes, then listen (Socket Mode or HTTP); ready on return.

        Raises:
            PlatformSetupError: a rejected token, an uninstalled app, a missing scope, or
                an app token Slack refuses; one line naming the fix.
        """
        self._intake = intake
        self._session = aiohttp.ClientSession()
        try:
            self._client = web_client(
                self._bot_token,
                base_url=self.settings.api_url,
                session=self._session,
                retrying=True,
            )
            await self._check_identity()
            app = self._build_app()
            if self.settings.mode == "socket":
                await self._start_socket(app)
            else:
                await self._start_http(app)
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
        socket, self._socket = self._socket, None
        if socket is not None:
            try:
                await socket.close_async()  # type: ignore[no-untyped-call]
            except Exception:
                _log.exception("closing the Slack Socket Mode connection failed")
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _release(self) -> None:
        await self._stop_listening()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _check_identity(self) -> None:
        try:
            auth = await self.client.auth_test()
        except SlackApiError as exc:
            raise PlatformSetupError(describe_api_error("auth.test", exc)) from exc
        except (SlackClientError, aiohttp.ClientError, OSError) as exc:
            raise PlatformSetupError(
                f"cannot reach Slack at {self.settings.api_url} ({exc}); check the network "
                "or [slack].api_url"
            ) from exc
        self.bot_user_id = str(auth.get("user_id", ""))
        self.bot_id = str(auth.get("bot_id", ""))
        self.team_id = str(auth.get("team_id", ""))
        granted = auth.headers.get("x-oauth-scopes") or auth.headers.get("X-OAuth-Scopes")
        if granted is None:
            _log.debug("Slack sent no x-oauth-scopes header; scopes are checked on use")
            return
        have = {s.strip() for s in str(granted).split(",")}
        wanted = list(CORE_SCOPES)
        if self.settings.respond_to_dms:
            wanted += DM_SCOPES
        if self.settings.follow_up_in_threads:
            wanted += THREAD_SCOPES
        missing = [scope for scope in wanted if scope not in have]
        if missing:
            raise PlatformSetupError(
                f"the Slack app lacks the {', '.join(missing)} scope"
                f"{'s' if len(missing) > 1 else ''}: add "
                f"{'them' if len(missing) > 1 else 'it'} under OAuth & Permissions (or create "
                "the app from slack-manifest.yaml) and reinstall the app"
            )

    async def _start_socket(self, app: AsyncApp) -> None:
        assert self._app_token is not None
        try:
            opened = await self.client.apps_connections_open(app_token=self._app_token)
        except SlackApiError as exc:
            raise PlatformSetupError(
                f"Slack refused SLACK_APP_TOKEN for Socket Mode ({api_error(exc)}): create an "
                "app-level token with connections:write and enable Socket Mode"
            ) from exc
        handler = AsyncSocketModeHandler(app, self._app_token, web_client=self.client)
        # The URL just issued is the one to use: asking again would open a second ticket.
        handler.client.wss_uri = str(opened["url"])
        self._socket = handler
        await handler.connect_async()  # type: ignore[no-untyped-call]

    async def _start_http(self, app: AsyncApp) -> None:
        settings = self.settings
        runner = web.AppRunner(
            app.web_app(path=settings.http_path, port=settings.http_port),
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

    # ------------------------------------------------------------------ Bolt wiring

    def _build_app(self) -> AsyncApp:
        http = self.settings.mode == "http"
        app = AsyncApp(
            client=self.client,
            signing_secret=self._signing_secret if http else None,
            request_verification_enabled=http,
            # See the module docstring: listeners return at once, and Bolt acks then.
            process_before_response=True,
            logger=logging.getLogger("slack_bolt"),
        )
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.command("/research")(self._on_command)
        app.shortcut(RESET_SHORTCUT)(self._on_reset_shortcut)
        app.action(FEEDBACK_ACTION)(self._on_feedback)
        assistant = AsyncAssistant()
        assistant.thread_started(self._on_assistant_started)
        assistant.user_message(self._on_assistant_message)
        app.assistant(assistant)
        app.error(self._on_error)
        return app

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            self._tasks.spawn(self._guarded(work, name), name=f"slack:{name}")
        except RuntimeError:
            _log.info("Slack %s arrived while shutting down; not taken", name)

    async def _guarded(self, work: Awaitable[None], name: str) -> None:
        # The one error boundary per inbound payload, after the ack.
        try:
            await work
        except SlackApiError as exc:
            _log.error("Slack %s: %s", name, describe_api_error("a call", exc))
        except Exception:
            _log.exception("handling the Slack %s failed", name)

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        _log.error("Slack listener failed on a %s payload", body.get("type"), exc_info=error)

    async def _on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        self._spawn(self._take(event, body, follow_up=False), f"mention {event.get('ts')}")

    async def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        if event.get("subtype") not in (None, "file_share", "thread_broadcast"):
            return  # edits, deletions, joins: not questions
        mention = f"<@{self.bot_user_id}>"
        if event.get("channel_type") == "im":
            if self.settings.respond_to_dms:
                self._spawn(self._take(event, body, follow_up=False), f"dm {event.get('ts')}")
            return
        if mention in str(event.get("text", "")):
            return  # the app_mention event for the same message answers it
        if event.get("thread_ts") and self.settings.follow_up_in_threads:
            self._spawn(self._take(event, body, follow_up=True), f"follow-up {event.get('ts')}")

    async def _on_assistant_started(self, event: dict[str, Any]) -> None:
        thread = event.get("assistant_thread", {})
        self._spawn(
            self._suggest(str(thread.get("channel_id", "")), str(thread.get("thread_ts", ""))),
            "assistant thread start",
        )

    async def _on_assistant_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        self._spawn(
            self._take(event, body, follow_up=False, assistant=True),
            f"assistant message {event.get('ts')}",
        )

    async def _suggest(self, channel: str, thread_ts: str) -> None:
        await self.client.assistant_threads_setSuggestedPrompts(
            channel_id=channel,
            thread_ts=thread_ts,
            title="Ask me a research question",
            prompts=[{"title": title, "message": text} for title, text in SUGGESTED_PROMPTS],
        )

    async def _on_command(self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any]) -> None:
        await ack()
        self._spawn(self._command(body), f"command {body.get('trigger_id')}")

    async def _on_reset_shortcut(
        self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any]
    ) -> None:
        await ack()
        self._spawn(self._reset_thread(body), f"shortcut {body.get('trigger_id')}")

    async def _on_feedback(self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any]) -> None:
        await ack()
        self._spawn(self._store_feedback(body), "feedback")

    # ------------------------------------------------------------------ inbound

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
            await self._submit(message)

    async def _translate(
        self,
        event: Mapping[str, Any],
        body: Mapping[str, Any],
        *,
        follow_up: bool,
        assistant: bool,
    ) -> InboundMessage[SlackTarget] | None:
        channel, ts = str(event.get("channel", "")), str(event.get("ts", ""))
        if not channel or not ts:
            return None
        user = str(event.get("user", "") or event.get("bot_id", ""))
        team = str(event.get("team") or body.get("team_id") or self.team_id)
        thread_ts = str(event.get("thread_ts") or ts)
        is_bot = bool(event.get("bot_id")) or event.get("subtype") == "bot_message"
        is_self = user == self.bot_user_id or (
            bool(self.bot_id) and event.get("bot_id") == self.bot_id
        )
        text = unescape(str(event.get("text", "")).replace(f"<@{self.bot_user_id}>", " "))
        return InboundMessage(
            text=" ".join(text.split()),
            author=Author(
                id=user,
                name=user,
                is_bot=is_bot,
                is_self=is_self,
                is_admin=False if is_bot else await self.is_admin(user),
            ),
            conversation=conversation_key("slack", team, channel, thread_ts),
            platform=self.platform,
            event_id=f"{channel}:{ts}",
            sent_at=_slack_time(ts),
            target=SlackTarget(team, channel, thread_ts, user, assistant=assistant),
            follow_up=follow_up,
        )

    async def _submit(self, message: InboundMessage[SlackTarget]) -> None:
        assert self._intake is not None, "events arrive only once started"
        # The turn, if one started, is the intake's to run and drain.
        await self._intake.submit(message)

    async def _command(self, body: Mapping[str, Any]) -> None:
        """``/research reset|sources|session|help [thread link]``, via the shared commands.

        Slash commands cannot be typed in a thread, so one that concerns a thread's
        conversation takes a link to the thread; without one only ``help`` makes sense.
        """
        words = str(body.get("text", "")).split()
        word = (words[0] if words else "help").lower()
        channel, user = str(body.get("channel_id", "")), str(body.get("user_id", ""))
        team = str(body.get("team_id") or self.team_id)
        link = " ".join(words[1:])
        thread = _thread_from_link(link)
        if thread is not None:
            channel, thread_ts = thread
        elif word in ("reset", "sources", "session"):
            await self._ephemeral(
                channel,
                user,
                None,
                f"Slash commands cannot be used inside a thread, so tell me which one: "
                f"`/research {word} <link to the thread>` (Copy link on its first message), "
                f"or mention me in the thread with `{word}`.",
            )
            return
        else:
            thread_ts = COMMAND_THREAD  # help: about no conversation in particular
        await self._submit(
            await self._synthetic(
                word,
                team,
                channel,
                thread_ts,
                user,
                event_id=str(body.get("trigger_id", "")),
                private=True,
            )
        )

    async def _reset_thread(self, body: Mapping[str, Any]) -> None:
        message = body.get("message", {})
        channel = str(body.get("channel", {}).get("id", ""))
        user = str(body.get("user", {}).get("id", ""))
        team = str(body.get("team", {}).get("id") or self.team_id)
        thread_ts = str(message.get("thread_ts") or message.get("ts", ""))
        if not channel or not thread_ts:
            return
        await self._submit(
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
            author=Author(user, user, is_admin=await self.is_admin(user)),
            conversation=conversation_key("slack", team, channel, thread_ts),
            platform=self.platform,
            event_id=event_id or f"{channel}:{thread_ts}:{text}:{time.time()}",
            sent_at=datetime.now(UTC),
            target=SlackTarget(team, channel, thread_ts, user, private=private),
        )

    async def _store_feedback(self, body: Mapping[str, Any]) -> None:
        assert self._intake is not None, "actions arrive only once started"
        user = str(body.get("user", {}).get("id", ""))
        for action in body.get("actions", []):
            rating, _, event_id = str(action.get("value", "")).partition(":")
            if action.get("action_id") != FEEDBACK_ACTION or rating not in ("up", "down"):
                continue
            verdict: Rating = "up" if rating == "up" else "down"
            await self._intake.feedback(self.platform, event_id, user, verdict)

    async def is_admin(self, user: str) -> bool:
        """Whether ``user`` may reset: a configured id, or a workspace admin or owner.

        ``users.info`` answers are cached for :data:`ADMIN_CACHE_S`; when it fails the user
        is not an admin (the refusal is polite, and the log says why).
        """
        if not user:
            return False
        if user in self.settings.admin_user_ids:
            return True
        cached = self._admins.get(user)
        now = self._clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            info = await self.client.users_info(user=user)
        except SlackApiError as exc:
            self._warn_once("users.info", describe_api_error("users.info", exc))
            return False
        profile = info.get("user") or {}
        verdict = bool(
            profile.get("is_admin") or profile.get("is_owner") or profile.get("is_primary_owner")
        )
        self._admins[user] = (verdict, now + ADMIN_CACHE_S)
        return verdict

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
            await self._ephemeral(target.channel, target.user, target.thread, text)
            return
        await post_message(
            self.client, channel=target.channel, thread_ts=target.thread_ts, text=escape(text)
        )

    async def _ephemeral(self, channel: str, user: str, thread_ts: str | None, text: str) -> None:
        await post_ephemeral(
            self.client, channel=channel, user=user, thread_ts=thread_ts, text=escape(text)
        )

    def encode_target(self, target: SlackTarget) -> Mapping[str, Any]:
        return target.encode()

    def decode_target(self, data: Mapping[str, Any]) -> SlackTarget:
        return SlackTarget.decode(data)


def _slack_time(ts: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(ts), UTC)
    except ValueError:
        return datetime.now(UTC)


def _thread_from_link(link: str) -> tuple[str, str] | None:
    """``(channel, thread_ts)`` from a message link (``.../archives/C1/p1700000000000100``)."""
    match = _PERMALINK.search(link)
    if match is None:
        return None
    thread = _THREAD_PARAM.search(link)
    ts = thread.group("ts") if thread else f"{match.group('sec')}.{match.group('frac')}"
    return match.group("channel"), ts
