"""One budget for every post and edit the bot makes, shared by all conversations.

Discord allows about 5 message creates and 5 edits per 5 s in one channel (a thread is a
channel of its own) and 50 requests a second per bot. :class:`SendBudget` keeps the bot
under both with a margin: a sliding window per channel and kind, and one per second for
everything. A request waits for its slot (:meth:`SendBudget.acquire`) instead of being
sent and refused; a 429 that arrives anyway closes the channel for its ``retry_after``
(:meth:`SendBudget.hold`).

The per-second budget is the bot's (its token's), not a process's: replicas sharing a
store each take an equal part of it (``replicas``, live replicas as their heartbeats
count them), so together they stay under Discord's limit.

Every 429 Discord sends is counted (``PLATFORM_429``): those our code sees
(:func:`note_429`), and those discord.py waits out and retries by itself, which only its
log tells of (:class:`RetriedLimits`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Literal

import discord

from bot.core.metrics import PLATFORM_429

Kind = Literal["create", "edit"]


# Requests per second for the whole bot: under Discord's 50, leaving room for what
# discord.py sends on its own (gateway-driven REST calls, retries).
GLOBAL_BUDGET = 40


class SendBudget:
    def __init__(
        self,
        *,
        per_channel: int = 5,
        window_s: float = 5.0,
        per_second: int = GLOBAL_BUDGET,
        # Requests arrive later than they leave: a margin so arrivals stay in the window.
        margin_s: float = 0.25,
        # How many replicas share the bot's budget (1 alone).
        replicas: Callable[[], int] = lambda: 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_channel = per_channel
        self._window_s = window_s + margin_s
        self._per_second = per_second
        self._second_s = 1.0 + margin_s / 5
        self._replicas = replicas
        self._clock = clock
        self._windows: dict[tuple[int, Kind], deque[float]] = defaultdict(deque)
        self._all: deque[float] = deque()
        self._held: dict[int, float] = {}
        self.waits = 0

    @property
    def per_second(self) -> int:
        """This replica's part of the bot's requests a second."""
        return max(1, self._per_second // max(1, self._replicas()))

    def _spare(self, spare: int) -> int:
        """``spare`` slots of the whole budget, as a part of this replica's."""
        return math.ceil(spare * self.per_second / self._per_second)

    def delay(self, channel: int, kind: Kind, *, spare: int = 0) -> float:
        """Seconds until a request of ``kind`` in ``channel`` may go (0: now).

        ``spare`` slots of the channel's window are left for others: progress updates
        leave one, so the final edit of an answer need not wait for the window.
        """
        now = self._clock()
        window = self._windows[(channel, kind)]
        while window and now - window[0] >= self._window_s:
            window.popleft()
        while self._all and now - self._all[0] >= self._second_s:
            self._all.popleft()
        wait = max(0.0, self._held.get(channel, 0.0) - now)
        over = len(window) - (self._per_channel - spare)
        if over >= 0:
            wait = max(wait, window[over] + self._window_s - now)
        if len(self._all) >= self.per_second:
            wait = max(wait, self._all[0] + self._second_s - now)
        return wait

    def take(self, channel: int, kind: Kind, *, spare: int = 0) -> bool:
        """Take a slot now if there is one."""
        if self.delay(channel, kind, spare=spare) > 0:
            return False
        now = self._clock()
        self._windows[(channel, kind)].append(now)
        self._all.append(now)
        return True

    def take_global(self, *, spare: int) -> bool:
        """A slot of the per-second budget only, for requests that can be skipped (typing
        indicators), leaving ``spare`` slots (of the whole bot's budget; as much of this
        replica's part) for posts and edits."""
        now = self._clock()
        while self._all and now - self._all[0] >= self._second_s:
            self._all.popleft()
        if len(self._all) >= self.per_second - self._spare(spare):
            return False
        self._all.append(now)
        return True

    async def acquire_global(self) -> None:
        """Wait for a slot of the per-second budget (reads such as channel history)."""
        while not self.take_global(spare=0):
            self.waits += 1
            await asyncio.sleep(max(0.01, self._all[0] + self._second_s - self._clock()))

    async def acquire(self, channel: int, kind: Kind, *, spare: int = 0) -> None:
        """Wait for a slot and take it."""
        while not self.take(channel, kind, spare=spare):
            self.waits += 1
            await asyncio.sleep(self.delay(channel, kind, spare=spare))

    def hold(self, channel: int, retry_after_s: float) -> None:
        """Discord said 429: nothing goes to ``channel`` for ``retry_after_s``."""
        until = self._clock() + retry_after_s
        self._held[channel] = max(self._held.get(channel, 0.0), until)


def note_429(exc: BaseException) -> None:
    """Count ``exc`` if it is Discord's 429 (one discord.py did not retry)."""
    if isinstance(exc, discord.RateLimited) or (
        isinstance(exc, discord.HTTPException) and exc.status == 429
    ):
        PLATFORM_429.labels("discord").inc()


# What discord.py logs (discord/http.py, HTTPClient.request) for each 429 it waits out and
# retries itself. One it gives up on ("... too long, erroring instead") raises
# RateLimited, counted where it is caught.
RETRIED_429 = "responded with 429. Retrying in"
HTTP_LOGGER = "discord.http"


class RetriedLimits(logging.Handler):
    """Counts the 429s discord.py retries by itself, from its log records: nothing else
    tells of them. Attached to its ``discord.http`` logger while the adapter runs; the
    records exist only while that logger lets WARNING through (the default level does)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and RETRIED_429 in record.msg:
            PLATFORM_429.labels("discord").inc()

    def attach(self) -> None:
        logging.getLogger(HTTP_LOGGER).addHandler(self)

    def detach(self) -> None:
        """Safe to call twice."""
        logging.getLogger(HTTP_LOGGER).removeHandler(self)
