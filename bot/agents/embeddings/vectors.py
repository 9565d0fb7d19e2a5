"""The vectors the embedding agent returns: their array type, and ranking them by cosine."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def top_k(query: FloatArray, docs: FloatArray, k: int) -> list[tuple[int, float]]:
    """Return up to ``k`` ``(row index, cosine similarity)`` pairs, best first.

    ``query`` has shape ``(dim,)`` or ``(1, dim)``; ``docs`` has shape ``(n, dim)``. Both are
    expected to be L2-normalised (as :meth:`EmbeddingAgent.embed` returns them), so the cosine
    is a dot product. Equal scores keep their document order; ``k`` larger than ``n`` returns
    all ``n`` rows.

    Raises:
        ValueError: ``k`` is negative or the shapes do not match.
    """
    if k < 0:
        raise ValueError(f"k must not be negative, not {k}")
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    d = np.asarray(docs, dtype=np.float32)
    if d.ndim != 2 or (d.shape[0] and d.shape[1] != q.shape[0]):
        raise ValueError(f"cannot score a query of shape {q.shape} against docs of shape {d.shape}")
    if k == 0 or d.shape[0] == 0:
        return []
    scores = d @ q
    # A stable sort of the negated scores keeps equal scores in document order.
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i), float(scores[i])) for i in order]
