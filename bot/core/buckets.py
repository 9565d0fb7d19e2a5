"""Token-bucket arithmetic, shared by the in-process limiter and the store's buckets.

A bucket holds at most ``burst`` tokens and refills at ``per_minute / 60`` tokens a
second; each take costs one token.
"""

from __future__ import annotations


def take_token(
    tokens: float, elapsed_s: float, *, per_minute: float, burst: int
) -> tuple[float, float]:
    """The bucket after one attempt to take a token: ``(tokens left, wait)``.

    ``tokens`` were counted ``elapsed_s`` ago. ``wait`` is 0.0 when a token was taken,
    else the seconds until one will be there (and nothing was taken).

    Raises:
        ValueError: ``per_minute`` is not positive or ``burst`` is below 1.
    """
    if per_minute <= 0 or burst < 1:
        raise ValueError("per_minute must be positive and burst at least 1")
    rate = per_minute / 60.0
    # A clock stepping backwards (another replica's) must not drain the bucket.
    now_tokens = min(float(burst), tokens + max(0.0, elapsed_s) * rate)
    if now_tokens >= 1.0:
        return now_tokens - 1.0, 0.0
    return now_tokens, (1.0 - now_tokens) / rate


def full_after_s(*, per_minute: float, burst: int) -> float:
    """How long an untouched bucket takes to be full again (then it can be forgotten)."""
    return burst / (per_minute / 60.0)
