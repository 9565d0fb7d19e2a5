"""Background tasks that are kept, logged and drained: :class:`TaskTracker`.

The event loop keeps only weak references to tasks, so an untracked task can be
garbage-collected mid-flight, and nobody hears of its failure. A tracker keeps a strong
reference to each task it spawns, logs failures, and drains them all at shutdown. Every
part of the bot that starts work in the background (the intake's turns, the pipeline's
saves and summaries, an adapter's handlers) owns one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
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


class Periodic:
    """Runs ``work`` every ``interval_s`` (with a little jitter, so replicas started
    together do not act in lockstep) until :meth:`stop`. A failing round is logged and the
    next one comes all the same: housekeeping must not die of one bad moment."""

    def __init__(
        self,
        name: str,
        interval_s: float,
        work: Callable[[], Awaitable[object]],
        *,
        jitter: float = 0.1,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("a period is a positive number of seconds")
        self.name = name
        self._interval = interval_s
        self._work = work
        self._jitter = jitter
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Stop; a round under way is cancelled. Safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            spread = self._interval * self._jitter
            await asyncio.sleep(self._interval + random.uniform(-spread, spread))
            try:
                await self._work()
            except Exception:
                _log.exception("%s failed; trying again in %.1f s", self.name, self._interval)
