"""A small fake chat platform over HTTP, for bot processes that tests start and kill.

It is shaped like the platforms the bot serves (Slack above all), cut down to what crash
recovery needs:

* ``GET /events?after=N&wait=S``: the inbound events queued after cursor ``N``, as
  ``{"events": [...], "cursor": M}``; with ``wait``, the request is held up to ``S``
  seconds until there is one (a long poll, so the bot needs no polling interval). Each
  event is ``{"seq", "event_id", "channel", "user", "text", "sent_at"}``: ``seq`` is its
  place in the stream, ``event_id`` the platform's id, which a redelivery keeps (as Slack
  does when it saw no ack).
* ``POST /acks`` ``{"seq", "event_id", "outcome"}``: the bot took an event, and says what
  the intake did with it (``turn``, ``duplicate``, ...).
* ``POST /messages`` ``{"channel", "text", "in_reply_to"}`` answers ``{"id"}``;
  ``PATCH /messages/{id}`` ``{"text"}`` edits it (404 for an unknown id).

Every request is recorded (:attr:`FakeServer.requests`), so tests assert on the wire;
:attr:`FakeChat.messages` and :attr:`FakeChat.acks` hold the resulting state, and
:meth:`FakeChat.wait_until` waits on it without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer

__all__ = ["Ack", "ChatMessage", "Event", "FakeChat"]

# A long poll is held at most this long, whatever the client asks: a poll left behind by a
# killed bot must not keep the fake from closing for long.
MAX_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    event_id: str
    channel: str
    user: str
    text: str
    sent_at: str

    def json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "channel": self.channel,
            "user": self.user,
            "text": self.text,
            "sent_at": self.sent_at,
        }


@dataclass(slots=True)
class ChatMessage:
    id: str
    channel: str
    text: str
    in_reply_to: str | None
    # Every earlier text, oldest first: the edits as the reader saw them.
    history: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    event_id: str
    outcome: str


class FakeChat(FakeServer):
    """The platform: an event stream tests feed, and messages the bot posts and edits."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []
        self.messages: dict[str, ChatMessage] = {}
        self.acks: list[Ack] = []
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._closing = False

    # -- what tests do ---------------------------------------------------------------------

    async def queue(
        self, text: str, *, channel: str = "C1", user: str = "U1", event_id: str | None = None
    ) -> Event:
        """A user writes ``text``; the event waits for the bot's next poll."""
        seq = len(self.events)
        event = Event(
            seq=seq,
            event_id=event_id or f"Ev{seq}",
            channel=channel,
            user=user,
            text=text,
            sent_at=datetime.now(UTC).isoformat(),
        )
        await self._append(event)
        return event

    async def redeliver(self, event: Event) -> Event:
        """The platform sends ``event`` again: same event id, a new place in the stream."""
        again = Event(
            len(self.events), event.event_id, event.channel, event.user, event.text, event.sent_at
        )
        await self._append(again)
        return again

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; it is checked after every change of state."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    def acked(self, event: Event) -> Ack | None:
        """The bot's ack of this very delivery of ``event``, if it sent one."""
        return next((a for a in self.acks if a.seq == event.seq), None)

    def posts(self) -> list[dict[str, Any]]:
        """The bodies of every ``POST /messages``, in order."""
        return [r.json() for r in self.requests if r.method == "POST" and r.path == "/messages"]

    def edits(self) -> list[tuple[str, dict[str, Any]]]:
        """``(message id, body)`` of every ``PATCH /messages/{id}``, in order."""
        return [
            (r.path.rsplit("/", 1)[-1], r.json())
            for r in self.requests
            if r.method == "PATCH" and r.path.startswith("/messages/")
        ]

    async def close(self) -> None:
        # Release the long polls first, or shutting the server down waits for them.
        self._closing = True
        await self._notify()
        await super().close()

    # -- routes ----------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/events", self._events)
        app.router.add_post("/acks", self._ack)
        app.router.add_post("/messages", self._post)
        app.router.add_patch("/messages/{id}", self._edit)

    async def _events(self, request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
            wait = min(float(request.query.get("wait", "0")), MAX_WAIT_S)
        except ValueError:
            return web.json_response({"error": "after and wait are numbers"}, status=400)

        def ready() -> bool:
            return self._closing or len(self.events) > after

        if wait > 0:
            async with self._changed:
                # Nothing new within the wait is an empty batch, as a long poll answers.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(ready), wait)
        batch = self.events[after:]
        return web.json_response(
            {"events": [e.json() for e in batch], "cursor": after + len(batch)}
        )

    async def _ack(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.acks.append(Ack(int(body["seq"]), str(body["event_id"]), str(body["outcome"])))
        await self._notify()
        return web.json_response({})

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        message = ChatMessage(
            id=f"m{next(self._ids)}",
            channel=str(body["channel"]),
            text=str(body["text"]),
            in_reply_to=body.get("in_reply_to"),
        )
        self.messages[message.id] = message
        await self._notify()
        return web.json_response({"id": message.id})

    async def _edit(self, request: web.Request) -> web.Response:
        message = self.messages.get(request.match_info["id"])
        if message is None:
            return web.json_response({"error": "message_not_found"}, status=404)
        body = await request.json()
        message.history.append(message.text)
        message.text = str(body["text"])
        await self._notify()
        return web.json_response({"id": message.id})

    async def _append(self, event: Event) -> None:
        self.events.append(event)
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
