"""An adapter with no platform behind it: messages in, replies recorded.

It is real code, not a test double: end-to-end tests drive the whole pipeline through it
exactly as a platform adapter would, and it is the reference for what an adapter must do.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from bot.adapters.base import MessageSink
from bot.domain import InboundMessage, conversation_key
from bot.pipeline.orchestrator import TurnResult


@dataclass(slots=True)
class RecordingListener:
    steps: list[str] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)

    async def on_progress(self, step: str) -> None:
        self.steps.append(step)

    async def on_text(self, text: str) -> None:
        self.chunks.append(text)


class InMemoryAdapter:
    name = "memory"

    def __init__(self, sink: MessageSink) -> None:
        self._sink = sink
        self._alive = False
        self.sent: dict[str, list[str]] = defaultdict(list)
        self.listeners: dict[str, list[RecordingListener]] = defaultdict(list)

    @property
    def is_alive(self) -> bool:
        return self._alive

    async def start(self) -> None:
        self._alive = True

    async def close(self) -> None:
        self._alive = False

    async def send(self, conversation: str, text: str) -> None:
        self.sent[conversation].append(text)

    async def deliver(
        self, text: str, *, channel: str = "general", author: str = "tester"
    ) -> TurnResult:
        """Hand a message to the pipeline as if it arrived on ``channel``; post the answer."""
        if not self._alive:
            raise RuntimeError("the adapter is not started")
        key = conversation_key("memory", channel)
        listener = RecordingListener()
        self.listeners[key].append(listener)
        result = await self._sink(InboundMessage(text, author, key, "memory"), listener)
        await self.send(key, "".join(listener.chunks))
        return result
