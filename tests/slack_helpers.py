"""The Slack adapter with a way to wait, without sleeping, for what it received to be answered.

:class:`SettlingSlackAdapter` is the production adapter, built the same way
(``from_settings``), plus :meth:`~SettlingSlackAdapter.settle`. It waits on the work
after each ack through the task tracker the adapter takes as a constructor argument, and
on the turns the intake started through a wrapper of the intake (like the ``port`` of
``Runtime.add_adapter``) that its ``start`` puts between the two. Only public seams: the
adapter keeps no bookkeeping for tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bot.adapters.base import Cluster, IntakePort, Submission
from bot.adapters.slack import SlackAdapter
from bot.config import SlackSettings
from bot.contract import InboundMessage, Platform, Rating, Reply
from bot.core.tasks import TaskTracker


class TurnsSeen:
    """The intake as the adapter sees it, keeping every turn it started until it ends."""

    def __init__(self, intake: IntakePort) -> None:
        self._intake = intake
        self._turns: set[asyncio.Task[Reply]] = set()

    async def submit(self, message: InboundMessage[Any]) -> Submission:
        submission: Submission = await self._intake.submit(message)
        if submission.done is not None:
            self._turns.add(submission.done)
            submission.done.add_done_callback(self._turns.discard)
        return submission

    async def feedback(
        self, platform: Platform, event_id: str, user_id: str, rating: Rating
    ) -> bool:
        return await self._intake.feedback(platform, event_id, user_id, rating)

    async def has_answered(self, conversation: str) -> bool:
        return await self._intake.has_answered(conversation)

    @property
    def cluster(self) -> Cluster:
        return self._intake.cluster

    async def delivered(self) -> None:
        """Wait until every turn started so far was delivered (or given up)."""
        while self._turns:
            await asyncio.gather(*list(self._turns), return_exceptions=True)


class SettlingSlackAdapter(SlackAdapter):
    """The Slack adapter, plus :meth:`settle` for tests and benchmarks."""

    def __init__(self, settings: SlackSettings, **options: Any) -> None:
        self._received = TaskTracker()
        self._seen: TurnsSeen | None = None
        super().__init__(settings, tasks=self._received, **options)

    async def start(self, intake: IntakePort) -> None:
        self._seen = TurnsSeen(intake)
        await super().start(self._seen)

    async def settle(self) -> None:
        """Wait until everything received so far was handed in and its turn delivered.

        The adapter stays open.
        """
        await self._received.drain()
        if self._seen is not None:
            await self._seen.delivered()
