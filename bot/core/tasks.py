"""Background tasks that are kept, logged and drained: :class:`TaskTracker`.

The event loop keeps only weak references to tasks, so an untracked task can be
garbage-collected mid-flight, and nobody hears of its failure. A tracker keeps a strong
reference to each task it spawns, logs failures, and drains them all at shutdown. Every
part of the bot that starts work in the background (the intake's turns, the pipeline's
saves and summaries, an adapter's handlers) owns one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

_log = logging.getLogger(__name__)


class TaskTracker:
    """Keeps, logs and drains background tasks."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Start ``coro`` in the background and keep it until it finishes.

        Raises:
            RuntimeError: after a ``final`` :meth:`drain` has finished (shutdown).
        """
        if self._closed:
            coro.close()
            raise RuntimeError("the task tracker is shut down")
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            _log.warning("background task %s was cancelled", task.get_name())
        elif (exc := task.exception()) is not None:
            _log.error("background task %s failed", task.get_name(), exc_info=exc)

    async def drain(self, *, grace_s: float | None = None, final: bool = False) -> bool:
        """Wait for every task, including ones spawned while draining.

        With ``final`` no new task may be spawned once the drain is over (a save that
        starts a summary while draining is still fine). Tasks still running when
        ``grace_s`` runs out are cancelled (rather than raising, as ``asyncio.timeout``
        would: shutdown must go on). Returns True when everything finished.
        """
        try:
            return await self._drain(grace_s)
        finally:
            self._closed = self._closed or final

    async def _drain(self, grace_s: float | None) -> bool:
        loop = asyncio.get_running_loop()
        deadline = None if grace_s is None else loop.time() + grace_s
        while self._tasks:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            pending = set(self._tasks)
            _done, still = await asyncio.wait(pending, timeout=remaining)
            if still and deadline is not None and loop.time() >= deadline:
                for task in still:
                    task.cancel()
                await asyncio.gather(*still, return_exceptions=True)
                _log.error("cancelled %d background task(s) still running at shutdown", len(still))
                return False
        return True
