"""A fake Slack: the Web API methods the bot calls, a Socket Mode websocket, signed delivery.

Point the real ``AsyncWebClient`` at ``fake.api_url`` (``http://127.0.0.1:P/api/``, with
the trailing slash the SDK needs). The fake keeps the workspace's messages, so tests read
what a user would see: ``fake.in_thread(channel, thread_ts)``.

* Web API (``POST|GET /api/<method>``, form, query or JSON arguments): ``auth.test``
  (sends ``x-oauth-scopes``), ``apps.connections.open`` (xapp- tokens only),
  ``chat.postMessage``, ``chat.update`` (``uneditable`` holds the ts of messages it refuses
  with ``cant_update_message``), ``chat.delete``, ``chat.postEphemeral``, ``chat.startStream`` /
  ``appendStream`` / ``stopStream`` (``refuse_streaming = "error_code"`` refuses them),
  ``users.info`` (``users``), ``assistant.threads.setStatus`` / ``setSuggestedPrompts`` /
  ``setTitle`` (``surface``: the app's AI panel, ``"agent"`` for ``features.agent_view`` or
  ``"assistant"`` for ``features.assistant_view``, which refuses prompts set with no
  thread with ``not_agent_app``). Errors are HTTP 200 with ``{"ok": false, "error": ...}``
  as Slack's are; ``rate_limit("chat.update", retry_after=1)`` answers that method's next
  call with 429, ``server_error(method)`` with a 500, ``drop(method)`` resets the
  connection instead.
  ``revoked = True`` makes every bot-token call answer ``account_inactive``.
* Socket Mode (``GET /link``): sends ``hello``; :meth:`push` sends an ``events_api`` (or
  other) envelope and :meth:`wait_ack` waits for the client's ``{"envelope_id"}``.
* Events: :meth:`user_says` (a message), :meth:`dm_root` (one typed in the agent view),
  :meth:`home_opened` (``app_home_opened``, the agent view's panel opened),
  :meth:`assistant_thread_started` (the assistant view's), wrapped by :meth:`callback`
  into the Events API body.
* HTTP mode: :meth:`post_signed` delivers a payload to the bot's endpoint signed as Slack
  signs (``v0=HMAC-SHA256(secret, "v0:{ts}:{body}")``), with retry headers when asked.

Every API call is also in ``calls`` (method, arguments, loop time) for assertions on the
wire, and :meth:`until` waits for a condition on the state without sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

from tests.fakes.base import FakeServer

# Markers in a method's queue of faults (else a number: a 429's Retry-After).
_SERVER_ERROR = -1
_DROP = -2

TEAM = "T0FAKE"
BOT_USER = "UBOT"
BOT_ID = "BBOT"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ALL_SCOPES = frozenset(
    {
        "app_mentions:read",
        "assistant:write",
        "channels:history",
        "chat:write",
        "commands",
        "groups:history",
        "im:history",
        "mpim:history",
        "users:read",
    }
)


@dataclass
class Message:
    channel: str
    ts: str
    user: str
    text: str
    thread_ts: str | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)
    ephemeral_to: str | None = None
    # Native streaming: True between startStream and stopStream.
    streaming: bool = False
    streamed: bool = False
    chunks: list[dict[str, Any]] = field(default_factory=list)
    edits: list[str] = field(default_factory=list)

    @property
    def by_bot(self) -> bool:
        return self.user == BOT_USER

    def shown(self) -> str:
        """What a reader sees: the section texts when there are blocks, else the text."""
        sections = [
            str(b["text"]["text"])
            for b in self.blocks
            if b.get("type") == "section" and isinstance(b.get("text"), dict)
        ]
        return "\n".join(sections) if sections else self.text

    def has_feedback(self) -> bool:
        return any(
            element.get("type") == "feedback_buttons"
            for block in self.blocks
            if block.get("type") == "context_actions"
            for element in block.get("elements", [])
        )


@dataclass(frozen=True)
class Call:
    method: str
    args: dict[str, Any]
    at: float
    token: str


class FakeSlack(FakeServer):
    """Slack's Web API, Socket Mode and event delivery, on one local port."""

    def __init__(self) -> None:
        super().__init__()
        self.scopes: set[str] = set(ALL_SCOPES)
        self.refuse_streaming: str | None = None
        self.uneditable: set[str] = set()
        self.revoked = False
        self.surface: Literal["agent", "assistant"] = "agent"
        self.users: dict[str, dict[str, Any]] = {}
        self.messages: list[Message] = []
        self.calls: list[Call] = []
        self.acks: dict[str, float] = {}
        self._limits: dict[str, deque[int]] = {}
        self._clock = itertools.count(1)
        self._tickets = itertools.count(1)
        self._sockets: set[web.WebSocketResponse] = set()
        # Which open connection gets an envelope; seeded, so a run can be repeated.
        self._pick = random.Random(0)
        self._changed = asyncio.Condition()
        self._client: aiohttp.ClientSession | None = None

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link", self._socket)

    async def start(self) -> FakeSlack:
        await super().start()
        self._client = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._client is not None:
            await self._client.close()
        await super().close()

    # ------------------------------------------------------------------ test controls

    def rate_limit(self, method: str, *, retry_after: int = 1, times: int = 1) -> None:
        self._limits.setdefault(method, deque()).extend([retry_after] * times)

    def server_error(self, method: str, *, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer HTTP 500."""
        self._limits.setdefault(method, deque()).extend([_SERVER_ERROR] * times)

    def drop(self, method: str, *, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` get their connection reset, no answer."""
        self._limits.setdefault(method, deque()).extend([_DROP] * times)

    def new_ts(self) -> str:
        n = next(self._clock)
        return f"{1_700_000_000 + n}.{n:06d}"

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def in_thread(self, channel: str, thread_ts: str, *, bot: bool = True) -> list[Message]:
        """The thread's visible replies (ephemeral ones excluded), by the bot by default."""
        return [
            m
            for m in self.messages
            if m.channel == channel
            and m.thread_ts == thread_ts
            and m.ephemeral_to is None
            and (m.by_bot or not bot)
            and m.ts != thread_ts
        ]

    def finished_at(self, thread_ts: str) -> list[float]:
        """When answers in the thread were finished: the loop times of the calls that
        stopped a stream or put the feedback buttons on (the benches time answers so)."""
        times = []
        for call in self.calls:
            final = call.method == "chat.stopStream" or (
                call.method in ("chat.update", "chat.postMessage")
                and "feedback_buttons" in str(call.args.get("blocks", ""))
            )
            if not final:
                continue
            message = self._find(str(call.args.get("channel", "")), str(call.args.get("ts", "")))
            thread = call.args.get("thread_ts") or (message.thread_ts if message else None)
            if thread == thread_ts:
                times.append(call.at)
        return times

    def ephemeral(self, user: str) -> list[Message]:
        return [m for m in self.messages if m.ephemeral_to == user]

    async def until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds; re-checked after every call and every ack."""
        async with self._changed:
            await self._changed.wait_for(condition)

    async def _touch(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ what users do

    def user_says(
        self,
        text: str,
        *,
        channel: str = "C0GENERAL",
        user: str = "UALICE",
        thread_ts: str | None = None,
        mention: bool = True,
        channel_type: str = "channel",
    ) -> dict[str, Any]:
        """A user posts ``text``; returns the event Slack sends for it.

        With ``mention`` the text starts with the bot's mention and the event is an
        ``app_mention``; otherwise it is a ``message`` event.
        """
        ts = self.new_ts()
        body = f"<@{BOT_USER}> {text}" if mention else text
        self.messages.append(Message(channel, ts, user, body, thread_ts=thread_ts))
        event: dict[str, Any] = {
            "type": "app_mention" if mention else "message",
            "user": user,
            "text": body,
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
            "team": TEAM,
        }
        if not mention:
            event["channel_type"] = channel_type
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        return event

    def dm_root(self, text: str, *, channel: str, user: str = "UALICE") -> dict[str, Any]:
        """A message typed in the agent view's composer: a root that Slack threads on its
        own, so its ``thread_ts`` is its own ``ts``."""
        event = self.user_says(text, channel=channel, user=user, mention=False, channel_type="im")
        event["thread_ts"] = event["ts"]
        self.messages[-1].thread_ts = event["ts"]
        return event

    def home_opened(
        self, *, channel: str, user: str = "UALICE", tab: str = "messages"
    ) -> dict[str, Any]:
        """The ``app_home_opened`` event of ``user`` opening a tab of the app (the agent
        view's panel is its Messages tab); ``channel`` is their DM with the bot."""
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user,
            "channel": channel,
            "tab": tab,
            "event_ts": self.new_ts(),
        }
        if tab == "home":
            event["view"] = {"id": "V0HOME", "team_id": TEAM, "type": "home", "blocks": []}
        return event

    def assistant_thread_started(self, *, channel: str, user: str = "UALICE") -> dict[str, Any]:
        """The assistant view's panel opened: a new assistant thread in the DM ``channel``."""
        thread_ts = self.new_ts()
        return {
            "type": "assistant_thread_started",
            "assistant_thread": {
                "user_id": user,
                "context": {"channel_id": "C0GENERAL", "team_id": TEAM},
                "channel_id": channel,
                "thread_ts": thread_ts,
            },
            "event_ts": thread_ts,
        }

    @staticmethod
    def callback(event: Mapping[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        """The Events API body that carries ``event``."""
        return {
            "token": "legacy",
            "team_id": TEAM,
            "api_app_id": "A0FAKE",
            "event": dict(event),
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "team_id": TEAM,
                    "user_id": BOT_USER,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }

    @staticmethod
    def command(text: str, *, user: str = "UALICE", channel: str = "C0GENERAL") -> dict[str, str]:
        return {
            "token": "legacy",
            "team_id": TEAM,
            "channel_id": channel,
            "user_id": user,
            "command": "/research",
            "text": text,
            "response_url": "https://hooks.slack.invalid/commands/1",
            "trigger_id": f"trig-{uuid.uuid4().hex[:8]}",
        }

    @staticmethod
    def shortcut(message: Message, callback_id: str, *, user: str = "UALICE") -> dict[str, Any]:
        return {
            "type": "message_action",
            "callback_id": callback_id,
            "trigger_id": f"trig-{uuid.uuid4().hex[:8]}",
            "team": {"id": TEAM},
            "user": {"id": user},
            "channel": {"id": message.channel},
            "message": {"ts": message.ts, "thread_ts": message.thread_ts, "text": message.text},
            "response_url": "https://hooks.slack.invalid/actions/1",
        }

    @staticmethod
    def click(message: Message, *, positive: bool, user: str = "UALICE") -> dict[str, Any]:
        """The ``block_actions`` payload of a click on ``message``'s feedback buttons."""
        for block in message.blocks:
            for element in block.get("elements", []):
                if element.get("type") == "feedback_buttons":
                    button = element["positive_button" if positive else "negative_button"]
                    action = {
                        "type": "feedback_buttons",
                        "action_id": element["action_id"],
                        "block_id": block.get("block_id", "fb"),
                        "value": button["value"],
                        "action_ts": str(time.time()),
                    }
                    return {
                        "type": "block_actions",
                        "team": {"id": TEAM},
                        "user": {"id": user},
                        "channel": {"id": message.channel},
                        "container": {"type": "message", "message_ts": message.ts},
                        "message": {"ts": message.ts, "thread_ts": message.thread_ts},
                        "trigger_id": f"trig-{uuid.uuid4().hex[:8]}",
                        "actions": [action],
                    }
        raise AssertionError("the message has no feedback buttons")

    # ------------------------------------------------------------------ delivery

    async def post_signed(
        self,
        url: str,
        payload: Mapping[str, Any],
        *,
        kind: str = "event",
        retry_num: int | None = None,
        timestamp: float | None = None,
        secret: str = SIGNING_SECRET,
    ) -> tuple[int, float]:
        """POST ``payload`` to the bot as Slack would; returns (status, seconds to the ack).

        ``kind``: ``"event"`` (JSON), ``"command"`` (form fields) or ``"interaction"``
        (a form with one ``payload`` field holding JSON).
        """
        assert self._client is not None
        if kind == "event":
            body, content_type = json.dumps(payload).encode(), "application/json"
        elif kind == "command":
            body, content_type = urlencode(payload).encode(), "application/x-www-form-urlencoded"
        else:
            body = urlencode({"payload": json.dumps(payload)}).encode()
            content_type = "application/x-www-form-urlencoded"
        stamp = str(int(time.time() if timestamp is None else timestamp))
        digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": f"v0={digest.hexdigest()}",
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        start = time.perf_counter()
        async with self._client.post(url, data=body, headers=headers) as response:
            await response.read()
            return response.status, time.perf_counter() - start

    async def push(
        self,
        payload: Mapping[str, Any],
        *,
        kind: str = "events_api",
        retry_attempt: int = 0,
    ) -> str:
        """Send one Socket Mode envelope; returns its envelope id.

        Like Slack with several open connections (an app may hold up to 10), each
        envelope goes to one of them, picked at random, and a retry may land on another.
        """
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._sockets))
        envelope_id = uuid.uuid4().hex
        envelope = {
            "envelope_id": envelope_id,
            "payload": dict(payload),
            "type": kind,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        }
        socket = self._pick.choice(sorted(self._sockets, key=id))
        await socket.send_str(json.dumps(envelope))
        return envelope_id

    async def wait_ack(self, envelope_id: str) -> None:
        await self.until(lambda: envelope_id in self.acks)

    @property
    def connected(self) -> int:
        return len(self._sockets)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        await self._touch()
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "connection_info": {"app_id": "A0FAKE"},
                }
            )
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(frame.data)
                    if "envelope_id" in data:
                        self.acks[data["envelope_id"]] = asyncio.get_running_loop().time()
                        await self._touch()
        finally:
            self._sockets.discard(ws)
            await self._touch()
        return ws

    # ------------------------------------------------------------------ the Web API

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _arguments(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        token = token or str(args.get("token", ""))
        self.calls.append(Call(method, args, asyncio.get_running_loop().time(), token))
        try:
            limits = self._limits.get(method)
            if limits:
                wait = limits.popleft()
                if wait == _DROP:
                    assert request.transport is not None
                    request.transport.abort()
                    return web.Response(status=500)
                if wait == _SERVER_ERROR:
                    return web.Response(status=500, text="Internal Server Error")
                return web.json_response(
                    {"ok": False, "error": "ratelimited"},
                    status=429,
                    headers={"Retry-After": str(wait)},
                )
            return self._answer(method, args, token)
        finally:
            await self._touch()

    def _answer(self, method: str, args: dict[str, Any], token: str) -> web.Response:
        if method == "apps.connections.open":
            if not token.startswith("xapp-"):
                return _error("not_allowed_token_type")
            return _ok({"url": f"ws://127.0.0.1:{self._port}/link?ticket={next(self._tickets)}"})
        if self.revoked:
            return _error("account_inactive")
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return _error("unknown_method")
        response: web.Response = handler(args)
        response.headers["x-oauth-scopes"] = ",".join(sorted(self.scopes))
        return response

    def _auth_test(self, args: dict[str, Any]) -> web.Response:
        return _ok(
            {
                "url": "https://fake.slack.invalid/",
                "team": "Fake",
                "user": "research",
                "team_id": TEAM,
                "user_id": BOT_USER,
                "bot_id": BOT_ID,
            }
        )

    def _post(self, args: dict[str, Any], *, ephemeral_to: str | None = None) -> Message:
        message = Message(
            channel=str(args["channel"]),
            ts=self.new_ts(),
            user=BOT_USER,
            text=str(args.get("text", "")),
            thread_ts=args.get("thread_ts"),
            blocks=list(args.get("blocks") or []),
            ephemeral_to=ephemeral_to,
        )
        self.messages.append(message)
        return message

    def _find(self, channel: str, ts: str) -> Message | None:
        for message in self.messages:
            if message.channel == channel and message.ts == ts:
                return message
        return None

    def _chat_postMessage(self, args: dict[str, Any]) -> web.Response:
        if "chat:write" not in self.scopes:
            return _missing("chat:write")
        message = self._post(args)
        return _ok({"channel": message.channel, "ts": message.ts, "message": {"ts": message.ts}})

    def _chat_postEphemeral(self, args: dict[str, Any]) -> web.Response:
        message = self._post(args, ephemeral_to=str(args["user"]))
        return _ok({"message_ts": message.ts})

    def _chat_update(self, args: dict[str, Any]) -> web.Response:
        message = self._find(str(args["channel"]), str(args["ts"]))
        if message is None:
            return _error("message_not_found")
        if message.ts in self.uneditable:
            return _error("cant_update_message")
        message.edits.append(message.text)
        message.text = str(args.get("text", message.text))
        if "blocks" in args:
            message.blocks = list(args["blocks"] or [])
        return _ok({"channel": message.channel, "ts": message.ts})

    def _chat_delete(self, args: dict[str, Any]) -> web.Response:
        message = self._find(str(args["channel"]), str(args["ts"]))
        if message is None:
            return _error("message_not_found")
        self.messages.remove(message)
        return _ok({"channel": message.channel, "ts": message.ts})

    def _chat_startStream(self, args: dict[str, Any]) -> web.Response:
        if self.refuse_streaming:
            return _error(self.refuse_streaming)
        if str(args["channel"]).startswith("C") and not (
            args.get("recipient_user_id") and args.get("recipient_team_id")
        ):
            return _error("missing_recipient_user_id")
        message = self._post({"channel": args["channel"], "thread_ts": args["thread_ts"]})
        message.streaming = message.streamed = True
        self._take_chunks(message, args)
        return _ok({"channel": message.channel, "ts": message.ts})

    def _chat_appendStream(self, args: dict[str, Any]) -> web.Response:
        message = self._find(str(args["channel"]), str(args["ts"]))
        if message is None or not message.streaming:
            return _error("message_not_in_streaming_state")
        self._take_chunks(message, args)
        return _ok({"channel": message.channel, "ts": message.ts})

    def _chat_stopStream(self, args: dict[str, Any]) -> web.Response:
        message = self._find(str(args["channel"]), str(args["ts"]))
        if message is None or not message.streaming:
            return _error("message_not_in_streaming_state")
        self._take_chunks(message, args)
        message.streaming = False
        message.blocks = list(args.get("blocks") or [])
        return _ok({"channel": message.channel, "ts": message.ts})

    @staticmethod
    def _take_chunks(message: Message, args: dict[str, Any]) -> None:
        if args.get("markdown_text"):
            message.text += str(args["markdown_text"])
        for chunk in args.get("chunks") or []:
            message.chunks.append(chunk)
            if chunk.get("type") == "markdown_text":
                message.text += str(chunk.get("text", ""))

    def _users_info(self, args: dict[str, Any]) -> web.Response:
        if "users:read" not in self.scopes:
            return _missing("users:read")
        user = str(args.get("user", ""))
        profile = self.users.get(user, {})
        return _ok({"user": {"id": user, "name": user.lower(), **profile}})

    def _assistant_threads_setStatus(self, args: dict[str, Any]) -> web.Response:
        return _ok({})

    def _assistant_threads_setSuggestedPrompts(self, args: dict[str, Any]) -> web.Response:
        if "assistant:write" not in self.scopes:
            return _missing("assistant:write")
        if not args.get("channel_id") or not args.get("prompts"):
            return _error("invalid_arguments")
        if not args.get("thread_ts") and self.surface == "assistant":
            return _error("not_agent_app")
        return _ok({})

    def _assistant_threads_setTitle(self, args: dict[str, Any]) -> web.Response:
        return _ok({})


def _ok(data: Mapping[str, Any]) -> web.Response:
    return web.json_response({"ok": True, **data})


def _error(code: str) -> web.Response:
    return web.json_response({"ok": False, "error": code})


def _missing(scope: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error": "missing_scope", "needed": scope, "provided": "chat:write"}
    )


async def _arguments(request: web.Request) -> dict[str, Any]:
    """The call's arguments, wherever the SDK put them: query, form or JSON body."""
    args: dict[str, Any] = dict(request.query)
    # The recording middleware has read the body already; read() returns it again.
    raw = await request.read() if request.method == "POST" else b""
    if raw and request.content_type == "application/json":
        args.update(json.loads(raw))
    elif raw:
        args.update(parse_qsl(raw.decode(), keep_blank_values=True))
    for key in ("blocks", "chunks", "prompts", "loading_messages"):
        if isinstance(args.get(key), str):
            args[key] = json.loads(args[key])
    return args
