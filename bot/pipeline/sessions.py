"""Concurrency bookkeeping for conversations: who runs when, and what runs after.

* :class:`ConversationLocks` gives each conversation key its own ``asyncio.Lock``, so turns
  of one conversation run one at a time while different conversations run concurrently.
* :class:`TaskTracker` owns every background task (saving answers, summarising). It keeps
  a strong reference to each (the event loop only keeps weak ones, so an untracked task can
  be garbage-collected mid-flight), logs failures, and drains them all at shutdown.
* :class:`RecentTurns` is a small in-process memory of the last exchanges per conversation.
  Keyword extraction runs *before* the conversation is restored from SQLite (the two then
  run in parallel with the fetch), so this is what lets "and its successor?" resolve.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import OrderedDict, deque
from collections.abc import Coroutine
from typing import Any

_log = logging.getLogger(__name__)


class ConversationLocks:
    """One lock per conversation key; unused locks disappear with their last reference."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock


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


class RecentTurns:
    """The last few (question, answer) pairs of the most recently active conversations.

    Each conversation's pairs carry the generation they belong to (the session's start
    time in the store). A conversation reset elsewhere, by another process, comes back
    with a new generation, and its old pairs are then dropped instead of served.
    """

    def __init__(self, *, per_conversation: int = 2, conversations: int = 1024) -> None:
        self._per = per_conversation
        self._max = conversations
        self._turns: OrderedDict[str, tuple[str | None, deque[tuple[str, str]]]] = OrderedDict()

    def add(self, key: str, question: str, answer: str, *, generation: str | None = None) -> None:
        old = self._turns.pop(key, None)
        turns = old[1] if old is not None and old[0] == generation else deque(maxlen=self._per)
        turns.append((question, answer))
        self._turns[key] = (generation, turns)
        while len(self._turns) > self._max:
            self._turns.popitem(last=False)

    def get(self, key: str, *, generation: str | None = None) -> list[tuple[str, str]]:
        entry = self._turns.get(key)
        if entry is None:
            return []
        if entry[0] != generation:
            del self._turns[key]
            return []
        return list(entry[1])

    def forget(self, key: str) -> None:
        self._turns.pop(key, None)
