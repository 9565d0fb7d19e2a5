"""The ``hashing`` backend: texts embedded by feature hashing of their words, with numpy only.

It needs no model and no download; its ranking is rougher than a model's. It still runs in
the worker pool, as a model would: hashing a turn's articles is pure-Python CPU work (tens
of milliseconds for a few dozen articles) that would otherwise hold the event loop's GIL;
running it in the pool also gives it the model backends' lifecycle, error path and
crash-recovery path, which the tests then exercise cheaply.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from bot.agents.embeddings.vectors import FloatArray

_WORD_RE = re.compile(r"\w+")


@lru_cache(maxsize=1 << 16)
def _feature_slot(feature: str, dim: int) -> tuple[int, float]:
    """The bucket and sign of one feature, from a stable (unsalted) hash."""
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    # The low bits pick the bucket; the top bit (independent of them) picks the sign, so
    # colliding features cancel out on average instead of piling up.
    return value % dim, (1.0 if value >> 63 else -1.0)


def hashing_embed(texts: Sequence[str], dim: int) -> FloatArray:
    """Embed ``texts`` by feature hashing, with numpy only; shape ``(len(texts), dim)``.

    Features are the lowercase word unigrams and bigrams of each text, hashed with BLAKE2b
    (stable across processes and runs, unlike the salted built-in ``hash``) into ``dim``
    signed buckets. Each distinct feature weighs ``1 + log(count)`` (sublinear term
    frequency). Rows are L2-normalised; a text with no words gives a zero row.

    Raises:
        ValueError: ``dim`` is less than 1.
    """
    if dim < 1:
        raise ValueError(f"dim must be at least 1, not {dim}")
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        words = _WORD_RE.findall(text.lower())
        counts = Counter(words)
        counts.update(f"{a} {b}" for a, b in itertools.pairwise(words))
        vec = out[row]
        for feature, count in counts.items():
            bucket, sign = _feature_slot(feature, dim)
            vec[bucket] += sign * (1.0 + math.log(count))
        norm = float(np.linalg.norm(vec))
        if norm > 0.0:
            vec /= norm
    return out
