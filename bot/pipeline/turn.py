"""The scratchpad of one turn: what its steps learn and add as it goes, and its stopwatch.

Only the pipeline and its steps see a :class:`Turn`; what leaves the pipeline is the
:class:`~bot.contract.Reply` built from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bot.contract import InboundMessage, Neutralised, Notice, Source, TurnListener
from bot.errors import LLMError
from bot.store import Claim, ConversationState

_T = TypeVar("_T")

Numbered = tuple[Source, str]
"""A numbered source and the text the model reads of it."""


class Stopwatch:
    """How long each step of a turn took, by name (``ask --json``'s ``timings``)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}

    async def time(self, name: str, awaitable: Awaitable[_T]) -> _T:
        start = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.laps[name] = time.perf_counter() - start


@dataclass(slots=True)
class Turn:
    """One question on its way through the pipeline."""

    message: InboundMessage[Any]
    question: str
    listener: TurnListener
    claim: Claim | None
    # When the turn must be over (a loop time); set when it starts running.
    deadline: float = math.inf
    notices: list[Notice] = field(default_factory=list)
    # Set once the language model failed: later steps fall back at once.
    llm_error: LLMError | None = None
    state: ConversationState | None = None
    clock: Stopwatch = field(default_factory=Stopwatch)
    # The body as streamed so far, so a turn that fails half-way keeps what was shown.
    streamed: list[str] = field(default_factory=list)
    neutralised: Neutralised = field(default_factory=Neutralised)

    @property
    def conversation(self) -> str:
        return self.message.conversation

    @property
    def shown(self) -> str:
        """The body the listener has received so far."""
        return "".join(self.streamed).strip()

    async def emit(self, text: str) -> None:
        """Stream body text to the listener (and keep it)."""
        if text:
            await self.listener.on_text(text)
            self.streamed.append(text)
