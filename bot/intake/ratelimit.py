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
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        # key -> (tokens, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._next_sweep = clock()

    def check(self, key: str) -> Verdict:
        """Take a token for ``key`` if there is one; otherwise say when there will be."""
        now = self._clock()
        self._sweep(now)
        tokens, then = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return Verdict(True)
        self._buckets[key] = (tokens, now)
        return Verdict(False, retry_after_s=(1.0 - tokens) / self._rate)

    def _sweep(self, now: float) -> None:
        # A bucket idle for longer than a full refill is indistinguishable from a new one.
        if now < self._next_sweep:
            return
        full_after = self._burst / self._rate
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
