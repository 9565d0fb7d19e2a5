"""A fake Discord: the REST routes and the gateway the bot uses, over real sockets.

The real discord.py client is pointed at it with ``[discord].api_url`` (``fake.api_url``)
and ``[discord].gateway_url`` (``fake.gateway_url``). It keeps what Discord keeps for these
routes (guilds, channels and threads, messages with their edits, registered commands,
interaction responses), records every REST request (``requests``) and every gateway frame
the client sent (``received``), and behaves the way discord.py relies on:

* login: ``GET /users/@me`` (401 for a wrong token), ``GET /oauth2/applications/@me``;
* gateway: ``GET /gateway/bot`` (the URL, the recommended ``shards`` and the
  ``session_start_limit`` with its ``max_concurrency``); HELLO, heartbeat ACKs, IDENTIFY
  answered with READY and one GUILD_CREATE per guild of its shard, or closed with 4004
  (bad token) or 4014 (the Message Content intent requested but not enabled for the
  application); RESUME answered with RESUMED;
* shards as Discord routes them: each connection is a :class:`Connection` holding the
  ``shard: [id, count]`` its IDENTIFY named (``[0, 1]`` when it named none), and a
  guild's events go only to the connection of shard ``(guild_id >> 22) % count``, a DM's
  to shard 0; each IDENTIFY's arrival is recorded, and :meth:`FakeDiscord.too_early`
  lists those that came within ``identify_window_s`` of another of the same rate-limit
  key (``shard_id % max_concurrency``);
* messages: create (with ``nonce`` + ``enforce_nonce`` returning the first message for a
  repeated nonce), edit, delete, history (``after`` / ``before`` / ``limit``, newest
  first), typing, threads from a message (error 160004 when one exists); the bot's own
  posts come back as MESSAGE_CREATE, as they do on Discord;
* rate limits as Discord enforces them: at most 5 creates and 5 edits per 5 s per channel
  and 50 requests per second; over that, or when told to (``rate_limit_next`` for one
  request, ``rate_limit_for`` for every matching request during a while), a 429 with
  ``Via`` and a JSON ``retry_after`` (``rate_limited`` counts them);
* permissions: ``cannot_send`` and ``cannot_create_threads`` channel ids get 403 / 50013.

JSON is served with a Content-Type of exactly ``application/json`` (discord.py ignores
bodies with a charset suffix).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.base import FakeServer

TOKEN = "fake-token.discord"
DISCORD_EPOCH_MS = 1_420_070_400_000
MESSAGE_CONTENT = 1 << 15
TEXT, DM, PUBLIC_THREAD = 0, 1, 11
EVERYONE_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 16) | (1 << 35) | (1 << 38)  # view, send,
# read history, create public threads, send in threads
MANAGE_GUILD = 1 << 5

Json = dict[str, Any]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def user(user_id: int, name: str, *, bot: bool = False) -> Json:
    return {
        "id": str(user_id),
        "username": name,
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
    }


@dataclass(slots=True, eq=False)
class Connection:
    """One gateway connection as the fake saw it: whose shard, since when, what it got."""

    socket: web.WebSocketResponse
    # The client's port: which process holds it can be read in /proc (tests/processes.py).
    port: int
    shard: tuple[int, int] | None = None  # [id, count] of its IDENTIFY (or its session's)
    identified_at: float | None = None  # time.monotonic() of its IDENTIFY's arrival
    session: str | None = None
    ready: bool = False  # READY or RESUMED sent: events flow
    closed_at: float | None = None
    # The names of the dispatches it was sent, with the guild each was about.
    events: list[tuple[str, int | None]] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.closed_at is None and not self.socket.closed

    def serves(self, guild_id: int | None) -> bool:
        """Whether Discord would send this guild's events (None: a DM's) down here."""
        shard_id, count = self.shard or (0, 1)
        return shard_of(guild_id, count) == shard_id


def shard_of(guild_id: int | None, count: int) -> int:
    """The shard a guild's events go to (DMs go to shard 0)."""
    return 0 if guild_id is None else (guild_id >> 22) % count


@dataclass(slots=True)
class Storm:
    """429s for every request matching ``method`` and ``path`` until ``until``."""

    method: str
    path: re.Pattern[str]
    until: float
    retry_after: float


@dataclass(slots=True)
class Limit:
    """One forced 429 for the next request matching ``method`` and ``path``."""

    method: str
    path: re.Pattern[str]
    retry_after: float
    is_global: bool = False


class FakeDiscord(FakeServer):
    """One application with its bot user, in the guilds added with :meth:`add_guild`."""

    def __init__(self, *, token: str = TOKEN) -> None:
        super().__init__()
        self.token = token
        self.bot_id = self._snowflake()
        self.bot_user = user(self.bot_id, "research-bot", bot=True)
        self.message_content_enabled = True
        self.enforce_limits = True
        self.guilds: dict[int, Json] = {}
        self.channels: dict[int, Json] = {}
        self.messages: dict[int, dict[int, Json]] = defaultdict(dict)
        self.edits: dict[int, list[str]] = defaultdict(list)
        self.commands: dict[str, list[Json]] = {}
        self.interaction_callbacks: dict[str, Json] = {}
        self.originals: dict[str, Json] = {}
        self.followups: dict[str, list[Json]] = defaultdict(list)
        self.interactions: dict[str, Json] = {}
        self.identifies: list[Json] = []
        # GET /gateway/bot: the shards Discord recommends, and how many may IDENTIFY at once
        # (one per ``identify_window_s`` per key ``shard_id % max_concurrency``).
        self.recommended_shards = 1
        self.max_concurrency = 1
        self.identify_window_s = 5.0
        self.connections: list[Connection] = []
        self._sessions: dict[str, tuple[int, int]] = {}
        self.received: list[Json] = []
        self.cannot_send: set[int] = set()
        self._storms: list[Storm] = []
        self.cannot_create_threads: set[int] = set()
        self.rate_limited: list[tuple[str, str, float]] = []
        # time.monotonic() of each bot message's creation and of each of its edits.
        self.posted_at: dict[int, float] = {}
        self.edited_at: dict[int, list[float]] = defaultdict(list)
        # (when it arrived, method, path, status) of every REST request.
        self.timeline: list[tuple[float, str, str, int]] = []
        self._limits: deque[Limit] = deque()
        self._windows: dict[tuple[str, int], deque[float]] = defaultdict(deque)
        self._second: deque[float] = deque()
        self._nonces: dict[tuple[int, str], Json] = {}
        self.gateway_connections = 0
        self._seq = 0
        self._session = 0
        self._changed = asyncio.Condition()

    # ------------------------------------------------------------------ set-up

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/gateway/"

    def _snowflake(self) -> int:
        self._seq_ids = getattr(self, "_seq_ids", 0) + 1
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (self._seq_ids & 0x3FFFFF)

    def new_id(self) -> int:
        return self._snowflake()

    def add_guild(
        self,
        name: str = "Research",
        *,
        channels: tuple[str, ...] = ("general",),
        shard: tuple[int, int] | None = None,
    ) -> int:
        """A guild the bot is in; ``shard=(id, count)``: one whose events go to that shard."""
        guild_id = self._snowflake()
        if shard is not None:
            # A guild's shard is its snowflake's timestamp modulo the count: move the
            # timestamp (by less than ``count`` ms) onto the wanted shard.
            index, count = shard
            guild_id += ((index - shard_of(guild_id, count)) % count) << 22
        self.guilds[guild_id] = {
            "id": str(guild_id),
            "name": name,
            "icon": None,
            "owner_id": str(self._snowflake()),
            "roles": [
                {
                    "id": str(guild_id),
                    "name": "@everyone",
                    "permissions": str(EVERYONE_PERMISSIONS),
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "emojis": [],
            "stickers": [],
            "features": [],
            "member_count": 2,
            "large": False,
            "unavailable": False,
            "joined_at": now_iso(),
            "members": [self.member(self.bot_user)],
            "channels": [],
            "threads": [],
            "voice_states": [],
            "presences": [],
        }
        for name_ in channels:
            self.add_channel(guild_id, name_)
        return guild_id

    def add_channel(self, guild_id: int, name: str) -> int:
        channel_id = self._snowflake()
        channel = {
            "id": str(channel_id),
            "type": TEXT,
            "guild_id": str(guild_id),
            "name": name,
            "position": len(self.guilds[guild_id]["channels"]),
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
        }
        self.channels[channel_id] = channel
        self.guilds[guild_id]["channels"].append(channel)
        return channel_id

    def add_role(self, guild_id: int, name: str, permissions: int = 0) -> int:
        role_id = self._snowflake()
        self.guilds[guild_id]["roles"].append(
            {
                "id": str(role_id),
                "name": name,
                "permissions": str(permissions),
                "position": len(self.guilds[guild_id]["roles"]),
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": True,
                "flags": 0,
            }
        )
        return role_id

    def add_thread(self, channel_id: int, name: str, *, owner: int | None = None) -> int:
        """A thread someone else started (its GUILD_CREATE lists it while it is active)."""
        return int(
            self._thread(channel_id, self._snowflake(), name, owner or self._snowflake())["id"]
        )

    def _thread(self, channel_id: int, thread_id: int, name: str, owner: int) -> Json:
        parent = self.channels[channel_id]
        thread = {
            "id": str(thread_id),
            "type": PUBLIC_THREAD,
            "guild_id": parent["guild_id"],
            "parent_id": str(channel_id),
            "owner_id": str(owner),
            "name": name,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": now_iso(),
                "locked": False,
            },
        }
        self.channels[thread_id] = thread
        self.guilds[int(parent["guild_id"])]["threads"].append(thread)
        return thread

    def member(self, who: Json, roles: tuple[int, ...] = ()) -> Json:
        return {
            "user": who,
            "roles": [str(r) for r in roles],
            "joined_at": now_iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
        }

    # ------------------------------------------------------------------ what tests look at

    def in_channel(self, channel_id: int) -> list[Json]:
        """Messages of a channel, oldest first."""
        return sorted(self.messages[channel_id].values(), key=lambda m: int(m["id"]))

    def bot_messages(self, channel_id: int) -> list[Json]:
        return [m for m in self.in_channel(channel_id) if m["author"]["id"] == str(self.bot_id)]

    def live(self) -> dict[int, list[Connection]]:
        """The live, identified connections by shard id."""
        found: dict[int, list[Connection]] = defaultdict(list)
        for connection in self.connections:
            if connection.live and connection.shard is not None:
                found[connection.shard[0]].append(connection)
        return dict(found)

    def identified(self) -> list[Connection]:
        """The connections that sent an IDENTIFY, in the order they sent it."""
        done = [c for c in self.connections if c.identified_at is not None]
        return sorted(done, key=lambda c: c.identified_at or 0.0)

    def too_early(self) -> list[tuple[Connection, Connection]]:
        """Pairs of IDENTIFYs of one rate-limit key closer than ``identify_window_s``."""
        last: dict[int, tuple[float, Connection]] = {}
        found = []
        for connection in self.identified():
            assert connection.shard is not None and connection.identified_at is not None
            key = connection.shard[0] % self.max_concurrency
            at, before = last.get(key, (-float("inf"), connection))
            if connection.identified_at - at < self.identify_window_s:
                found.append((before, connection))
            last[key] = (connection.identified_at, connection)
        return found

    def writes(self) -> list[Any]:
        """Message creates and edits, in the order they arrived (429s included)."""
        return [
            r
            for r in self.requests
            if r.method in {"POST", "PATCH"}
            and ("/messages" in r.path or "/webhooks/" in r.path)
            and not r.path.endswith("/threads")
        ]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; it is checked after every request and frame."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def rate_limit_next(
        self, method: str, path: str, *, retry_after: float, is_global: bool = False
    ) -> None:
        """The next request matching ``method`` and the ``path`` regex gets a 429."""
        self._limits.append(Limit(method, re.compile(path), retry_after, is_global))

    def rate_limit_for(self, method: str, path: str, *, seconds: float, retry_after: float) -> None:
        """Every request matching ``method`` and the ``path`` regex gets a 429 (asking
        for ``retry_after``) for the next ``seconds``: a long run of rate limits."""
        until = time.monotonic() + seconds
        self._storms.append(Storm(method, re.compile(path), until, retry_after))

    # ------------------------------------------------------------------ gateway side

    async def dispatch(self, event: str, data: Json) -> None:
        """Send ``event`` down the connection(s) of the shard its guild belongs to."""
        self._seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": self._seq, "d": data})
        guild = data.get("guild_id")
        guild_id = int(guild) if guild is not None else None
        for connection in list(self.connections):
            if connection.live and connection.ready and connection.serves(guild_id):
                connection.events.append((event, guild_id))
                await connection.socket.send_str(frame)

    def message_payload(
        self,
        channel_id: int,
        content: str,
        *,
        author: Json,
        mentions: tuple[Json, ...] = (),
        mention_roles: tuple[int, ...] = (),
        roles: tuple[int, ...] = (),
        message_id: int | None = None,
        kind: int = 0,
        reference: Json | None = None,
    ) -> Json:
        channel = self.channels.get(channel_id, {"guild_id": None})
        message: Json = {
            "id": str(message_id or self._snowflake()),
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": list(mentions),
            "mention_roles": [str(r) for r in mention_roles],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": kind,
            "flags": 0,
            "components": [],
        }
        if channel.get("guild_id"):
            message["guild_id"] = channel["guild_id"]
            member = self.member(author, roles)
            del member["user"]
            message["member"] = member
        if reference is not None:
            message["message_reference"] = reference
        return message

    async def send_message(
        self, channel_id: int, content: str, *, author: Json, store: bool = True, **details: Any
    ) -> Json:
        """Someone posts: stored in the channel's history and dispatched as MESSAGE_CREATE."""
        message = self.message_payload(channel_id, content, author=author, **details)
        if store:
            self.messages[channel_id][int(message["id"])] = message
        await self.dispatch("MESSAGE_CREATE", message)
        return message

    def post_while_offline(self, channel_id: int, content: str, *, author: Json) -> Json:
        """A message sent while the bot was not connected: in the history only."""
        message = self.message_payload(channel_id, content, author=author)
        self.messages[channel_id][int(message["id"])] = message
        return message

    async def interact(
        self,
        name: str,
        *,
        channel_id: int,
        who: Json,
        options: dict[str, str] | None = None,
        permissions: int = EVERYONE_PERMISSIONS,
        roles: tuple[int, ...] = (),
    ) -> str:
        """A slash command used in ``channel_id``; returns the interaction id."""
        channel = self.channels[channel_id]
        interaction_id = str(self._snowflake())
        member = self.member(who, roles)
        member["permissions"] = str(permissions)
        data: Json = {
            "id": interaction_id,
            "application_id": str(self.bot_id),
            "type": 2,
            "token": f"itoken-{interaction_id}",
            "version": 1,
            "data": {
                "id": str(self._snowflake()),
                "name": name,
                "type": 1,
                "options": [
                    {"name": key, "type": 3, "value": value}
                    for key, value in (options or {}).items()
                ],
            },
            "guild_id": channel["guild_id"],
            "channel_id": str(channel_id),
            "channel": channel,
            "member": member,
            "app_permissions": str(EVERYONE_PERMISSIONS),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": channel["guild_id"]},
            "context": 0,
            "attachment_size_limit": 8 << 20,
        }
        self.interactions[interaction_id] = data
        await self.dispatch("INTERACTION_CREATE", data)
        return interaction_id

    async def kick(self) -> None:
        """Drop every gateway connection (the client reconnects and resumes)."""
        for connection in list(self.connections):
            if connection.live:
                await connection.socket.close(code=4000, message=b"unknown error")

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.gateway_connections += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        connection = Connection(socket, port=int(peer[1]) if peer else 0)
        self.connections.append(connection)
        try:
            await socket.send_json({"op": 10, "d": {"heartbeat_interval": 41250}})
            async for frame in socket:
                if frame.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(frame.data)
                self.received.append(payload)
                await self._on_frame(connection, payload)
                await self._notify()
        finally:
            connection.closed_at = time.monotonic()
            await self._notify()
        return socket

    async def _on_frame(self, connection: Connection, payload: Json) -> None:
        op = payload.get("op")
        if op == 1:
            await connection.socket.send_json({"op": 11})
        elif op == 2:
            await self._identify(connection, payload["d"])
        elif op == 6:
            session = str(payload["d"].get("session_id"))
            connection.session, connection.shard = session, self._sessions.get(session)
            connection.ready = True
            await self._send_dispatch(connection, "RESUMED", {})

    async def _identify(self, connection: Connection, data: Json) -> None:
        self.identifies.append(data)
        shard_id, count = (int(n) for n in data.get("shard") or (0, 1))
        connection.shard, connection.identified_at = (shard_id, count), time.monotonic()
        socket = connection.socket
        if data.get("token") != self.token:
            await socket.close(code=4004, message=b"Authentication failed.")
            return
        if int(data.get("intents", 0)) & MESSAGE_CONTENT and not self.message_content_enabled:
            await socket.close(code=4014, message=b"Disallowed intent(s).")
            return
        if not 0 <= shard_id < count:
            await socket.close(code=4010, message=b"Invalid shard.")
            return
        self._session += 1
        connection.session = f"session-{self._session}"
        self._sessions[connection.session] = connection.shard
        guilds = [g for gid, g in self.guilds.items() if connection.serves(gid)]
        ready = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": g["id"], "unavailable": True} for g in guilds],
            "session_id": connection.session,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.bot_id), "flags": 1 << 19},
            "private_channels": [],
            "relationships": [],
            "shard": [shard_id, count],
        }
        await self._send_dispatch(connection, "READY", ready)
        connection.ready = True
        for guild in guilds:
            await self._send_dispatch(connection, "GUILD_CREATE", guild)

    async def _send_dispatch(self, connection: Connection, event: str, data: Json) -> None:
        self._seq += 1
        guild = data.get("id") if event == "GUILD_CREATE" else data.get("guild_id")
        connection.events.append((event, int(guild) if guild is not None else None))
        await connection.socket.send_json({"op": 0, "t": event, "s": self._seq, "d": data})

    # ------------------------------------------------------------------ REST side

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/gateway/", self._gateway)
        api = "/api/v10"
        app.router.add_get(f"{api}/users/@me", self._me)
        app.router.add_get(f"{api}/oauth2/applications/@me", self._application)
        app.router.add_get(f"{api}/gateway/bot", self._gateway_bot)
        app.router.add_get(f"{api}/channels/{{cid}}", self._get_channel)
        app.router.add_post(f"{api}/channels/{{cid}}/messages", self._create_message)
        app.router.add_get(f"{api}/channels/{{cid}}/messages", self._history)
        app.router.add_patch(f"{api}/channels/{{cid}}/messages/{{mid}}", self._edit_message)
        app.router.add_delete(f"{api}/channels/{{cid}}/messages/{{mid}}", self._delete_message)
        app.router.add_post(f"{api}/channels/{{cid}}/messages/{{mid}}/threads", self._start_thread)
        app.router.add_post(f"{api}/channels/{{cid}}/typing", self._typing)
        app.router.add_put(f"{api}/applications/{{app}}/commands", self._sync)
        app.router.add_put(f"{api}/applications/{{app}}/guilds/{{gid}}/commands", self._sync)
        app.router.add_post(f"{api}/interactions/{{iid}}/{{token}}/callback", self._callback)
        hook = f"{api}/webhooks/{{app}}/{{token}}"
        app.router.add_post(hook, self._followup)
        app.router.add_patch(f"{hook}/messages/@original", self._edit_original)
        app.router.add_delete(f"{hook}/messages/@original", self._delete_original)
        app.router.add_patch(f"{hook}/messages/{{mid}}", self._edit_followup)
        app.router.add_delete(f"{hook}/messages/{{mid}}", self._delete_original)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/gateway"):
            socket: web.StreamResponse = await handler(request)
            return socket
        try:
            response = await super()._middleware(request, self._guarded(handler))
        finally:
            await self._notify()
        return response

    def _guarded(self, handler: Any) -> Any:
        async def serve(request: web.Request) -> web.StreamResponse:
            arrived = time.monotonic()
            response = await answer(request)
            self.timeline.append((arrived, request.method, request.path, response.status))
            return response

        async def answer(request: web.Request) -> web.StreamResponse:
            # Interaction callbacks and webhooks are authorised by the token in their URL.
            by_url = request.path.startswith(("/api/v10/interactions/", "/api/v10/webhooks/"))
            if not by_url and request.headers.get("Authorization") != f"Bot {self.token}":
                return _json({"message": "401: Unauthorized", "code": 0}, status=401)
            limited = self._rate_limit(request)
            if limited is not None:
                return limited
            response: web.StreamResponse = await handler(request)
            return response

        return serve

    def _rate_limit(self, request: web.Request) -> web.Response | None:
        for storm in self._storms:
            if (
                storm.method == request.method
                and storm.path.search(request.path)
                and time.monotonic() < storm.until
            ):
                return self._too_many(request, storm.retry_after, False)
        for limit in list(self._limits):
            if limit.method == request.method and limit.path.search(request.path):
                self._limits.remove(limit)
                return self._too_many(request, limit.retry_after, limit.is_global)
        if not self.enforce_limits:
            return None
        now = time.monotonic()
        while self._second and now - self._second[0] >= 1.0:
            self._second.popleft()
        if len(self._second) >= 50:
            return self._too_many(request, 1.0 - (now - self._second[0]), True)
        self._second.append(now)
        match = re.search(r"/channels/(\d+)/messages(/\d+)?$", request.path)
        if match is None or request.method not in {"POST", "PATCH"}:
            return None
        window = self._windows[(request.method, int(match.group(1)))]
        while window and now - window[0] >= 5.0:
            window.popleft()
        if len(window) >= 5:
            return self._too_many(request, 5.0 - (now - window[0]), False)
        window.append(now)
        return None

    def _too_many(self, request: web.Request, retry_after: float, is_global: bool) -> web.Response:
        self.rate_limited.append((request.method, request.path, retry_after))
        body = {"message": "You are being rate limited.", "retry_after": retry_after,
                "global": is_global}  # fmt: skip
        headers = {"Via": "1.1 google", "Retry-After": str(max(1, round(retry_after)))}
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        return _json(body, status=429, headers=headers)

    async def _me(self, request: web.Request) -> web.Response:
        return _json(self.bot_user)

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(self.bot_id),
                "name": "research-bot",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": user(self._snowflake(), "owner"),
                "verify_key": "0" * 64,
                "flags": (1 << 19) if self.message_content_enabled else 0,
            }
        )

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        return _json(
            {
                "url": self.gateway_url.rstrip("/"),
                "shards": self.recommended_shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000 - len(self.identifies),
                    "reset_after": 86_400_000,
                    "max_concurrency": self.max_concurrency,
                },
            }
        )

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self.channels.get(int(request.match_info["cid"]))
        if channel is None:
            return _json({"message": "Unknown Channel", "code": 10003}, status=404)
        return _json(channel)

    async def _create_message(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["cid"])
        if channel_id in self.cannot_send:
            return _json({"message": "Missing Permissions", "code": 50013}, status=403)
        body = await request.json()
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            first = self._nonces.get((channel_id, str(nonce)))
            if first is not None:
                return _json(first)
        message = self._bot_message(channel_id, body)
        if nonce is not None:
            message["nonce"] = nonce
            self._nonces[(channel_id, str(nonce))] = message
        await self.dispatch("MESSAGE_CREATE", message)
        return _json(message)

    def _bot_message(self, channel_id: int, body: Json) -> Json:
        reference = body.get("message_reference")
        if reference is not None:
            # Discord answers with snowflakes as strings, whatever the client sent.
            reference = {k: str(v) if k.endswith("_id") else v for k, v in reference.items()}
        message = self.message_payload(
            channel_id,
            body.get("content") or "",
            author=self.bot_user,
            kind=19 if reference else 0,
            reference=reference,
        )
        message["flags"] = body.get("flags", 0)
        message["allowed_mentions"] = body.get("allowed_mentions")
        self.messages[channel_id][int(message["id"])] = message
        self.posted_at[int(message["id"])] = time.monotonic()
        return message

    async def _edit_message(self, request: web.Request) -> web.Response:
        channel_id, message_id = int(request.match_info["cid"]), int(request.match_info["mid"])
        message = self.messages[channel_id].get(message_id)
        if message is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        return _json(self._apply_edit(message, await request.json()))

    def _apply_edit(self, message: Json, body: Json) -> Json:
        self.edited_at[int(message["id"])].append(time.monotonic())
        if "content" in body:
            self.edits[int(message["id"])].append(message["content"])
            message["content"] = body["content"] or ""
        if "flags" in body:
            message["flags"] = body["flags"]
        message["allowed_mentions"] = body.get("allowed_mentions")
        message["edited_timestamp"] = now_iso()
        return message

    async def _delete_message(self, request: web.Request) -> web.Response:
        self.messages[int(request.match_info["cid"])].pop(int(request.match_info["mid"]), None)
        return web.Response(status=204)

    async def _history(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["cid"])
        limit = int(request.query.get("limit", "50"))
        found = self.in_channel(channel_id)
        if "after" in request.query:
            after = int(request.query["after"])
            found = [m for m in found if int(m["id"]) > after][:limit]
        else:
            before = int(request.query.get("before", str(1 << 63)))
            found = [m for m in found if int(m["id"]) < before][-limit:]
        return _json(list(reversed(found)))

    async def _start_thread(self, request: web.Request) -> web.Response:
        channel_id, message_id = int(request.match_info["cid"]), int(request.match_info["mid"])
        if channel_id in self.cannot_create_threads:
            return _json({"message": "Missing Permissions", "code": 50013}, status=403)
        if message_id in self.channels:
            body = {"message": "A thread has already been created for this message",
                    "code": 160004}  # fmt: skip
            return _json(body, status=400)
        name = (await request.json()).get("name", "thread")
        thread = self._thread(channel_id, message_id, name, self.bot_id)
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return _json(thread, status=201)

    async def _typing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _sync(self, request: web.Request) -> web.Response:
        scope = request.match_info.get("gid", "global")
        commands = [
            {**c, "id": str(self._snowflake()), "application_id": str(self.bot_id), "version": "1"}
            for c in await request.json()
        ]
        self.commands[scope] = commands
        return _json(commands)

    async def _callback(self, request: web.Request) -> web.Response:
        interaction_id = request.match_info["iid"]
        body = await request.json()
        self.interaction_callbacks[interaction_id] = {**body, "at": time.monotonic()}
        kind = body["type"]
        data = body.get("data") or {}
        ephemeral = bool(int(data.get("flags", 0)) & 64)
        interaction = self._interaction(interaction_id)
        message = self.message_payload(
            int(interaction["channel_id"]), data.get("content") or "", author=self.bot_user, kind=20
        )
        message["flags"] = int(data.get("flags", 0)) | (128 if kind == 5 else 0)
        self.originals[request.match_info["token"]] = message
        return _json(
            {
                "interaction": {
                    "id": interaction_id,
                    "type": 2,
                    "response_message_id": message["id"],
                    "response_message_loading": kind == 5,
                    "response_message_ephemeral": ephemeral,
                },
                "resource": {"type": kind, "message": message},
            }
        )

    def _interaction(self, interaction_id: str) -> Json:
        return self.interactions[interaction_id]

    async def _edit_original(self, request: web.Request) -> web.Response:
        message = self.originals.get(request.match_info["token"])
        if message is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        message["flags"] = int(message["flags"]) & ~128
        return _json(self._apply_edit(message, await request.json()))

    async def _delete_original(self, request: web.Request) -> web.Response:
        self.originals.pop(request.match_info["token"], None)
        return web.Response(status=204)

    async def _followup(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        body = await request.json()
        interaction = self._interaction(token.removeprefix("itoken-"))
        message = self.message_payload(
            int(interaction["channel_id"]), body.get("content") or "", author=self.bot_user
        )
        message["flags"] = int(body.get("flags", 0))
        message["webhook_id"] = str(self.bot_id)
        self.followups[token].append(message)
        return _json(message)

    async def _edit_followup(self, request: web.Request) -> web.Response:
        token, message_id = request.match_info["token"], request.match_info["mid"]
        for message in self.followups[token]:
            if message["id"] == message_id:
                return _json(self._apply_edit(message, await request.json()))
        return _json({"message": "Unknown Message", "code": 10008}, status=404)


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )
