"""An adapter with no platform behind it: messages in, posts and edits recorded.

It is real code, not a test double: end-to-end tests drive the whole intake and pipeline
through it exactly as a platform adapter would, and it is the reference for what an
adapter does. Like a chat platform it posts one reply per question (a progress line
first), edits it as the answer streams in, and shows users only the public notice lines.

The platform is a :class:`MemoryPlatform` (``service``) of its own, so it outlives the
adapter: a bot restarted on the same platform finds the posts of the one before (and edits
them).
``fail_next(n)`` makes its next ``n`` posts or edits fail, as a flaky platform would.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.adapters.base import IntakePort, Submission
from bot.adapters.render import render_reply
from bot.contract import Author, InboundMessage, Platform, Reply, conversation_key


class PlatformError(ConnectionError):
    """What the in-memory platform raises when told to fail."""


@dataclass(frozen=True, slots=True)
class MemoryTarget:
    """Where a reply goes: the channel and the message it answers."""

    channel: str
    message_id: str


@dataclass(slots=True)
class Post:
    id: str
    channel: str
    text: str
    in_reply_to: str | None = None
    private_to: str | None = None
    edits: int = 0
    history: list[str] = field(default_factory=list)


class MemoryPlatform:
    """The chat platform itself: channels of posts that can be edited, and can fail."""

    def __init__(self) -> None:
        # Ids are unique across platforms too, as a real platform's are across restarts
        # of the bot: the inbox dedupes on them.
        self._run = uuid.uuid4().hex[:8]
        self._ids = itertools.count(1)
        self._failures = 0
        self.posts: dict[str, Post] = {}
        # Set by tests: the platform refuses the adapter's credentials, as a bad token would.
        self.rejects_credentials = False
        self._changed: asyncio.Event | None = None

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}-{self._run}"

    def fail_next(self, count: int) -> None:
        self._failures = count

    def post(
        self, channel: str, text: str, in_reply_to: str | None = None, private_to: str | None = None
    ) -> Post:
        self._maybe_fail()
        post = Post(self.new_id("m"), channel, text, in_reply_to, private_to)
        self.posts[post.id] = post
        self._touched()
        return post

    def edit(self, post_id: str, text: str) -> None:
        self._maybe_fail()
        post = self.posts[post_id]
        post.history.append(post.text)
        post.text = text
        post.edits += 1
        self._touched()

    async def wait_until(self, done: Callable[[], bool]) -> None:
        """Until ``done()`` holds, checked after every post and edit (no polling)."""
        while not done():
            self._changed = self._changed or asyncio.Event()
            await self._changed.wait()
            self._changed.clear()

    def _touched(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def in_channel(self, channel: str) -> list[Post]:
        return [p for p in self.posts.values() if p.channel == channel]

    def _maybe_fail(self) -> None:
        if self._failures:
            self._failures -= 1
            raise PlatformError("the in-memory platform is failing on purpose")


class MemoryReply:
    """The reply to one message: a post that is edited as the turn goes on."""

    def __init__(self, platform: MemoryPlatform, target: MemoryTarget, reply_id: str | None):
        self._platform = platform
        self._target = target
        self._id = reply_id
        self.steps: list[str] = []
        self.chunks: list[str] = []
        self.final: Reply | None = None

    @property
    def reply_id(self) -> str | None:
        return self._id

    async def on_progress(self, step: str) -> None:
        self.steps.append(step)
        self._show(f"… {step}")

    async def on_text(self, text: str) -> None:
        self.chunks.append(text)
        self._show("".join(self.chunks))

    async def on_reply(self, reply: Reply) -> None:
        self._show(render_reply(reply, operator=False))
        self.final = reply

    def _show(self, text: str) -> None:
        if self._id is None:
            self._id = self._platform.post(self._target.channel, text, self._target.message_id).id
        else:
            self._platform.edit(self._id, text)


class InMemoryAdapter:
    platform: Platform = "inmemory"
    admins = "the channel's admins"
    command_prefix = "/"
    own_commands: tuple[str, ...] = ()
    recovers = True

    def __init__(
        self,
        *,
        service: MemoryPlatform | None = None,
        rate_limit_per_minute: float | None = 0,
    ) -> None:
        self._intake: IntakePort | None = None
        self.service = service or MemoryPlatform()
        self.rate_limit_per_minute = rate_limit_per_minute
        self._alive = False
        self._stopped = asyncio.Event()
        self.replies: list[MemoryReply] = []

    @property
    def is_alive(self) -> bool:
        return self._alive

    async def check(self) -> str | None:
        """What a real adapter's token check reports, when the service rejects it."""
        if self.service.rejects_credentials:
            return "the memory platform rejected its token: set MEMORY_TOKEN to a valid one"
        return None

    async def start(self, intake: IntakePort) -> None:
        self._intake = intake
        self._alive = True

    async def close(self) -> None:
        self._alive = False
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # ------------------------------------------------------------------ Adapter

    def open_reply(
        self, message: InboundMessage[MemoryTarget], *, reply_id: str | None = None
    ) -> MemoryReply:
        reply = MemoryReply(self.service, message.target, reply_id)
        self.replies.append(reply)
        return reply

    async def notify(
        self, message: InboundMessage[MemoryTarget], text: str, *, private: bool
    ) -> None:
        target = message.target
        self.service.post(
            target.channel, text, target.message_id, message.author.id if private else None
        )

    def encode_target(self, target: MemoryTarget) -> Mapping[str, Any]:
        return {"channel": target.channel, "message_id": target.message_id}

    def decode_target(self, data: Mapping[str, Any]) -> MemoryTarget:
        try:
            return MemoryTarget(str(data["channel"]), str(data["message_id"]))
        except KeyError as exc:
            raise ValueError(f"not an in-memory target: {data!r}") from exc

    # ------------------------------------------------------------------ inbound

    def message(
        self,
        text: str,
        *,
        channel: str = "general",
        author: str = "tester",
        event_id: str | None = None,
        is_admin: bool = False,
        is_bot: bool = False,
        is_self: bool = False,
    ) -> InboundMessage[MemoryTarget]:
        """A message as the platform would hand it in (a new message id each time)."""
        message_id = self.service.new_id("in")
        return InboundMessage(
            text=text,
            author=Author(author, author, is_bot=is_bot, is_self=is_self, is_admin=is_admin),
            conversation=conversation_key("inmemory", channel),
            platform=self.platform,
            event_id=event_id or message_id,
            sent_at=datetime.now(UTC),
            target=MemoryTarget(channel, message_id),
        )

    async def deliver(self, text: str, **details: Any) -> Submission:
        """Hand a message to the intake as if it arrived; see :meth:`message`."""
        return await self.submit(self.message(text, **details))

    async def submit(self, message: InboundMessage[MemoryTarget]) -> Submission:
        if not self._alive or self._intake is None:
            raise RuntimeError("the adapter is not started")
        return await self._intake.submit(message)

    async def ask(self, text: str, **details: Any) -> Reply:
        """Deliver a question and wait for its answer to be delivered."""
        submission = await self.deliver(text, **details)
        if submission.done is None:
            raise RuntimeError(f"no turn was started: {submission.outcome}")
        return await submission.done
