"""The contract every platform adapter keeps.

An adapter is a small lifecycle object: :meth:`Adapter.start` connects and returns once it
is ready, :meth:`Adapter.close` is safe to call twice, :meth:`Adapter.send` posts a message
into a conversation, :attr:`Adapter.is_alive` reports health. Inbound messages become
:class:`~bot.domain.InboundMessage` and go to the :data:`MessageSink` the application hands
in (the pipeline's ``handle``); the adapter passes a listener that posts the streamed answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from bot.domain import InboundMessage
from bot.pipeline.orchestrator import TurnListener, TurnResult

MessageSink = Callable[[InboundMessage, TurnListener], Awaitable[TurnResult]]


class Adapter(Protocol):
    name: str

    async def start(self) -> None:
        """Connect; return when messages can flow. Raises on bad credentials."""

    async def close(self) -> None:
        """Stop intake and disconnect. Safe to call more than once."""

    async def send(self, conversation: str, text: str) -> None:
        """Post ``text`` into the conversation with that key."""

    @property
    def is_alive(self) -> bool:
        """True while connected and accepting messages."""
