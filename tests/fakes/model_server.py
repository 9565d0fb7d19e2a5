"""What the two fake LLM servers share: the scripted model and the switches on it.

:class:`~tests.fakes.ollama.FakeOllama` and :class:`~tests.fakes.openai.FakeOpenAI` speak
different wire protocols but play the same model (``responder``, by default
:func:`~tests.fakes.scripted.default_responder`) and take the same switches: pacing a
prompt's replies, breaking replies midstream, answering busy. Each subclass says where its
chat endpoint is (``chat_path``) and what its midstream error says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from tests.fakes.base import FakeServer
from tests.fakes.scripted import Responder, default_responder


class ModelServer(FakeServer):
    """A fake LLM server playing a scripted model; subclasses add the wire protocol.

    Attributes tests may set or read at any time: ``models``, ``responder``,
    ``chunk_delay_s``, ``replies`` (the full text of every reply started, in order),
    ``aborted_streams`` and the event ``stream_aborted`` (streams the client hung up on),
    and the base class's ``latency_s``, ``faults``, ``always_fail``, ``requests``.
    """

    chat_path: ClassVar[str]
    midstream_error: ClassVar[str]

    def __init__(
        self,
        *,
        models: Iterable[str],
        responder: Responder | None = None,
        chunk_delay_s: float = 0.0,
        latency_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.models: list[str] = list(models)
        self.responder: Responder = responder or default_responder
        self.chunk_delay_s = chunk_delay_s
        self.latency_s = latency_s
        self.replies: list[str] = []
        self.aborted_streams = 0
        self.stream_aborted = asyncio.Event()
        # None means "every request from now on"; an int counts down.
        self._midstream_left: int | None = 0
        self._midstream_after = 2
        self._midstream_error = self.midstream_error
        self._busy_left: int | None = 0
        self._closing = asyncio.Event()
        self._paces: dict[str, float] = {}

    # -- switches ------------------------------------------------------------------------

    def pace(self, marker: str, chunk_delay_s: float) -> None:
        """Stream the replies to prompts whose system message holds ``marker`` with
        ``chunk_delay_s`` before each chunk but the first (others keep ``chunk_delay_s``)."""
        self._paces[marker] = chunk_delay_s

    def fail_midstream(
        self, times: int | None = 1, *, after_chunks: int = 2, error: str | None = None
    ) -> None:
        """Make the next ``times`` replies (``None``: all of them) break after
        ``after_chunks`` chunks with the server's error (HTTP 500 when not streaming)."""
        self._midstream_left = times
        self._midstream_after = after_chunks
        self._midstream_error = self.midstream_error if error is None else error

    def server_busy(self, times: int | None = 1) -> None:
        """Answer the next ``times`` model requests (``None``: all) with 503."""
        self._busy_left = times

    def reset_faults(self) -> None:
        """Clear every fault: the model's and the base class's."""
        self._midstream_left = self._busy_left = 0
        self.faults.clear()
        self.always_fail = None

    def chat_bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of every request to the chat endpoint so far."""
        return [r.json() for r in self.requests_to(self.chat_path)]

    async def close(self) -> None:
        self._closing.set()  # let slow streams finish now, so cleanup does not wait
        await super().close()

    # -- helpers of the subclasses -------------------------------------------------------

    def _delay_for(self, body: Mapping[str, Any]) -> float:
        messages = body.get("messages") or [{}]
        system = str(messages[0].get("content", "")) if isinstance(messages[0], dict) else ""
        for marker, delay in self._paces.items():
            if marker in system:
                return delay
        return self.chunk_delay_s

    @staticmethod
    def _take(left: int | None) -> tuple[bool, int | None]:
        """Consume one use of a counted fault: (fires now, uses left)."""
        if left is None:
            return True, None
        if left > 0:
            return True, left - 1
        return False, 0

    async def _pause(self, delay_s: float) -> bool:
        """Sleep ``delay_s``; True when the fake is closing and the stream should end."""
        if delay_s <= 0:
            return self._closing.is_set()
        try:
            await asyncio.wait_for(self._closing.wait(), delay_s)
        except TimeoutError:
            return False
        return True
