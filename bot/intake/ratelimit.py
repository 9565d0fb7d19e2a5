"""Per-user token buckets: a steady rate of questions per minute plus a short burst.

A bucket holds at most ``burst`` tokens and refills at ``per_minute / 60`` tokens a second;
each question takes one. The clock is injectable so tests need no sleeps. Buckets of users
who have been quiet long enough to be full again are dropped, so memory stays bounded by
the number of recently active users.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bot.core.buckets import full_after_s, take_token


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    # Seconds until the next question would be allowed (0 when allowed now).
    retry_after_s: float = 0.0


class RateLimiter:
    """Token buckets keyed by whatever identifies a user (platform and author id)."""

    def __init__(
        self,
        *,
        per_minute: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be positive and burst at least 1")
        self._per_minute = per_minute
        self._burst = burst
        self._clock = clock
        # key -> (tokens, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._next_sweep = clock()

    def check(self, key: str) -> Verdict:
        """Take a token for ``key`` if there is one; otherwise say when there will be."""
        now = self._clock()
        self._sweep(now)
        tokens, then = self._buckets.get(key, (float(self._burst), now))
        left, wait = take_token(tokens, now - then, per_minute=self._per_minute, burst=self._burst)
        self._buckets[key] = (left, now)
        return Verdict(wait == 0.0, retry_after_s=wait)

    def _sweep(self, now: float) -> None:
        # A bucket idle for longer than a full refill is indistinguishable from a new one.
        if now < self._next_sweep:
            return
        full_after = full_after_s(per_minute=self._per_minute, burst=self._burst)
        self._buckets = {
            key: value for key, value in self._buckets.items() if now - value[1] < full_after
        }
        self._next_sweep = now + full_after


def describe_wait(seconds: float) -> str:
    """``"in 12 seconds"``, ``"in about 2 minutes"``: for the friendly refusal."""
    whole = max(1, math.ceil(seconds))
    if whole < 60:
        return f"in {whole} second{'s' if whole != 1 else ''}"
    minutes = round(whole / 60)
    return f"in about {minutes} minute{'s' if minutes != 1 else ''}"


class Buckets(Protocol):
    """Where the buckets live: in this process, or in a store every replica shares."""

    async def take(self, key: str, *, per_minute: float, burst: int) -> float:
        """Take a token from ``key``'s bucket: 0.0 when there was one, else the seconds
        until there is. Raises StoreError for a shared store that failed."""


class LocalBuckets:
    """:class:`Buckets` in this process: right for one process, wrong for several."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._limiters: dict[tuple[float, int], RateLimiter] = {}

    async def take(self, key: str, *, per_minute: float, burst: int) -> float:
        limiter = self._limiters.get((per_minute, burst))
        if limiter is None:
            limiter = RateLimiter(per_minute=per_minute, burst=burst, clock=self._clock)
            self._limiters[(per_minute, burst)] = limiter
        return limiter.check(key).retry_after_s
