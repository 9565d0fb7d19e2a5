"""Delivery: posting a turn's reply through an adapter without letting the post fail the turn.

The pipeline streams into a :class:`GuardedReply`, which forwards to the adapter's
:class:`~bot.adapters.base.ReplyStream`. A failed progress or text update is logged and
skipped (the final reply carries everything anyway), so a platform hiccup never turns a
good answer into "something went wrong". The final reply is retried with exponential
backoff a bounded number of times, then given up and logged. The first time the stream
reports the platform id of its message, it is handed to ``on_reply_id`` (the inbox records
it, so a turn recovered after a crash edits that message instead of posting again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.adapters.base import ReplyStream
from bot.contract import Reply

_log = logging.getLogger(__name__)


class GuardedReply:
    """A :class:`~bot.contract.TurnListener` that survives its adapter failing."""

    def __init__(
        self,
        stream: ReplyStream,
        *,
        label: str,
        retries: int,
        backoff_s: float,
        on_reply_id: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._stream = stream
        self._label = label
        self._retries = retries
        self._backoff_s = backoff_s
        self._on_reply_id = on_reply_id
        self._known_id = stream.reply_id
        self._update_failures = 0

    @property
    def reply_id(self) -> str | None:
        """The platform's id of the reply message, once one was posted."""
        return self._stream.reply_id

    async def on_progress(self, step: str) -> None:
        await self._update("progress", self._stream.on_progress(step))

    async def on_text(self, text: str) -> None:
        await self._update("text", self._stream.on_text(text))

    async def on_reply(self, reply: Reply) -> None:
        await self.deliver(reply)

    async def deliver(self, reply: Reply) -> bool:
        """Post the final reply, retrying; True when it got through."""
        for attempt in range(self._retries + 1):
            try:
                await self._stream.on_reply(reply)
            except Exception:
                if attempt == self._retries:
                    _log.exception(
                        "giving up delivering the reply of %s after %d attempts; "
                        "the answer is saved",
                        self._label,
                        attempt + 1,
                    )
                    return False
                delay = self._backoff_s * 2**attempt
                _log.warning(
                    "delivering the reply of %s failed (attempt %d); retrying in %.2f s",
                    self._label,
                    attempt + 1,
                    delay,
                    exc_info=True,
                )
                await asyncio.sleep(delay)
            else:
                await self._note_reply_id()
                return True
        return False  # pragma: no cover - the loop always returns

    async def _update(self, what: str, call: Awaitable[None]) -> None:
        try:
            await call
        except Exception:
            self._update_failures += 1
            # One traceback per turn is enough; the rest are counted.
            if self._update_failures == 1:
                _log.warning("a %s update of %s failed; going on", what, self._label, exc_info=True)
            else:
                _log.warning("a %s update of %s failed again; going on", what, self._label)
            return
        await self._note_reply_id()

    async def _note_reply_id(self) -> None:
        reply_id = self._stream.reply_id
        if reply_id is None or reply_id == self._known_id:
            return
        self._known_id = reply_id
        if self._on_reply_id is not None:
            await self._on_reply_id(reply_id)
