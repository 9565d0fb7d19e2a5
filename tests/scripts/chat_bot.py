"""A bot process for tests: the real runtime, serving the fake chat of tests/fakes/chat.py.

Run from the repository root as ``python -m tests.scripts.chat_bot --config PATH
--chat-url URL``. It starts :class:`~bot.runtime.Runtime` from the config file, adds an
:class:`HttpChatAdapter` for the fake chat, recovers what a crash left unanswered, prints
``ready`` (with how many turns it recovered) and serves until SIGTERM. Records go to the
config's log file, as ``python -m bot`` sends them.

The adapter is test code, but a faithful one: it long-polls the platform for events,
hands each to the intake, acks it with the intake's outcome, and posts one reply per
question that it edits as the answer streams in (like
:class:`~bot.adapters.inmemory.InMemoryAdapter`, over HTTP).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from bot.adapters.base import IntakePort
from bot.adapters.render import render_reply
from bot.config import load_settings
from bot.contract import Author, InboundMessage, Platform, Reply, conversation_key
from bot.runtime import Runtime

_log = logging.getLogger("tests.scripts.chat_bot")

POLL_WAIT_S = 2.0
RETRY_S = 0.2


@dataclass(frozen=True, slots=True)
class ChatTarget:
    """Where a reply goes: the channel and the event's place in the stream it answers."""

    channel: str
    event_id: str


class HttpReply:
    """The reply to one event: posted once, then edited as the turn goes on."""

    def __init__(
        self, http: aiohttp.ClientSession, base_url: str, target: ChatTarget, reply_id: str | None
    ) -> None:
        self._http = http
        self._base_url = base_url
        self._target = target
        self._id = reply_id
        self._chunks: list[str] = []

    @property
    def reply_id(self) -> str | None:
        return self._id

    async def on_progress(self, step: str) -> None:
        await self._show(f"… {step}")

    async def on_text(self, text: str) -> None:
        self._chunks.append(text)
        await self._show("".join(self._chunks))

    async def on_reply(self, reply: Reply) -> None:
        await self._show(render_reply(reply, operator=False))

    async def _show(self, text: str) -> None:
        if self._id is None:
            body = {"channel": self._target.channel, "text": text}
            body["in_reply_to"] = self._target.event_id
            async with self._http.post(f"{self._base_url}/messages", json=body) as resp:
                resp.raise_for_status()
                self._id = str((await resp.json())["id"])
        else:
            url = f"{self._base_url}/messages/{self._id}"
            async with self._http.patch(url, json={"text": text}) as resp:
                resp.raise_for_status()


class HttpChatAdapter:
    """The fake chat platform as the intake sees it.

    It calls itself ``slack`` (the contract's platforms are a closed set) and behaves like
    a Slack-ish platform: events with ids that redeliveries keep, replies edited by id.
    """

    platform: Platform = "slack"
    admins = "the workspace admins"
    command_prefix = "/"
    own_commands: tuple[str, ...] = ()
    rate_limit_per_minute: float | None = 0
    recovers = True

    def __init__(self, *, http: aiohttp.ClientSession, base_url: str) -> None:
        self._intake: IntakePort | None = None
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._cursor = 0
        self._poller: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    @property
    def is_alive(self) -> bool:
        return self._poller is not None and not self._poller.done()

    async def check(self) -> str | None:
        return None

    async def start(self, intake: IntakePort) -> None:
        self._intake = intake
        # One poll that must succeed, so a wrong URL fails the start, not the first event.
        await self._poll(wait_s=0)
        self._poller = asyncio.create_task(self._poll_forever(), name="fake-chat poller")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def open_reply(
        self, message: InboundMessage[ChatTarget], *, reply_id: str | None = None
    ) -> HttpReply:
        return HttpReply(self._http, self._base_url, message.target, reply_id)

    async def notify(
        self, message: InboundMessage[ChatTarget], text: str, *, private: bool
    ) -> None:
        body = {"channel": message.target.channel, "text": text}
        body["in_reply_to"] = message.target.event_id
        async with self._http.post(f"{self._base_url}/messages", json=body) as resp:
            resp.raise_for_status()

    def encode_target(self, target: ChatTarget) -> Mapping[str, Any]:
        return {"channel": target.channel, "event_id": target.event_id}

    def decode_target(self, data: Mapping[str, Any]) -> ChatTarget:
        try:
            return ChatTarget(str(data["channel"]), str(data["event_id"]))
        except KeyError as exc:
            raise ValueError(f"not a fake-chat target: {data!r}") from exc

    # ------------------------------------------------------------------ inbound

    async def _poll_forever(self) -> None:
        try:
            while True:
                try:
                    await self._poll(wait_s=POLL_WAIT_S)
                except (aiohttp.ClientError, TimeoutError):
                    _log.warning("polling the fake chat failed; retrying", exc_info=True)
                    await asyncio.sleep(RETRY_S)
        finally:
            self._stopped.set()

    async def _poll(self, *, wait_s: float) -> None:
        params = {"after": str(self._cursor), "wait": str(wait_s)}
        async with self._http.get(f"{self._base_url}/events", params=params) as resp:
            resp.raise_for_status()
            batch = await resp.json()
        for event in batch["events"]:
            await self._take(event)
            self._cursor = int(event["seq"]) + 1

    async def _take(self, event: Mapping[str, Any]) -> None:
        message = InboundMessage(
            text=str(event["text"]),
            author=Author(str(event["user"]), str(event["user"])),
            conversation=conversation_key(self.platform, str(event["channel"])),
            platform=self.platform,
            event_id=str(event["event_id"]),
            sent_at=datetime.fromisoformat(str(event["sent_at"])),
            target=ChatTarget(str(event["channel"]), str(event["event_id"])),
        )
        assert self._intake is not None
        submission = await self._intake.submit(message)
        ack = {"seq": event["seq"], "event_id": event["event_id"], "outcome": submission.outcome}
        async with self._http.post(f"{self._base_url}/acks", json=ack) as resp:
            resp.raise_for_status()


async def serve(config: str, chat_url: str) -> int:
    settings = load_settings(config)
    logging.basicConfig(
        filename=settings.logging.file,
        level=settings.logging.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with await Runtime.start(settings) as runtime:
        # It serves a chat platform, as `python -m bot` does: the one process on its file.
        await runtime.store.take_ownership()
        adapter = HttpChatAdapter(http=runtime.http, base_url=chat_url)
        await runtime.add_adapter(adapter)
        recovered = await runtime.recover()
        print(f"ready recovered={recovered}", flush=True)
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(adapter.wait_stopped())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        # Leaving the block is the graceful shutdown: turns in flight get their grace.
    return 0 if stop.is_set() else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.scripts.chat_bot")
    parser.add_argument("--config", required=True)
    parser.add_argument("--chat-url", required=True)
    args = parser.parse_args()
    return asyncio.run(serve(args.config, args.chat_url))


if __name__ == "__main__":
    sys.exit(main())
