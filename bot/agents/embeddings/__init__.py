"""The embedding agent: texts in, L2-normalised float32 vectors out, computed off the event loop.

The public face is :class:`EmbeddingAgent`: :meth:`~EmbeddingAgent.check` finds the model
without starting any process, :meth:`~EmbeddingAgent.begin` (or
:meth:`~EmbeddingAgent.start`, which waits) loads it in a pool of worker processes,
:meth:`~EmbeddingAgent.embed` returns vectors, from the cache where it can,
:meth:`~EmbeddingAgent.ping` is the pool's health check and :meth:`~EmbeddingAgent.close`
shuts it all down. Runtime failures surface as :class:`~bot.errors.EmbeddingError`.

Backends (``[embeddings].backend``): ``"sentence-transformers"`` (the default: the packaged
all-MiniLM-L6-v2 unless configured otherwise), ``"onnx"`` (opt-in: the same model files in
ONNX Runtime) and ``"hashing"`` (numpy only, rougher ranking). All three run in the same
worker pool, with one lifecycle, one error path and one crash-recovery path.

The modules, one job each:

* :mod:`~bot.agents.embeddings.agent`: the public face, its start-up and its errors;
* :mod:`~bot.agents.embeddings.model`: finding and verifying the model before any worker
  starts (the packaged model and its recorded sha256, the hub cache and probe);
* :mod:`~bot.agents.embeddings.pool`: the process pool, its threads and its crash recovery;
* :mod:`~bot.agents.embeddings.worker`: what runs in each worker process (loading the model
  once, warming up, embedding batches);
* :mod:`~bot.agents.embeddings.hashing`: the numpy-only hashing backend;
* :mod:`~bot.agents.embeddings.onnx`: the onnx backend's export and encoder;
* :mod:`~bot.agents.embeddings.cache`: vectors already computed, in memory and in the store;
* :mod:`~bot.agents.embeddings.vectors`: the vector type, and top-k by cosine.
"""

from __future__ import annotations

from bot.agents.embeddings.agent import MAX_TEXT_CHARS, EmbeddingAgent
from bot.agents.embeddings.cache import CacheStats
from bot.agents.embeddings.hashing import hashing_embed
from bot.agents.embeddings.model import (
    FIXES,
    HUB_ENDPOINT,
    PACKAGED_DIST,
    PACKAGED_MODEL,
    PACKAGED_VERSION,
    PACKAGED_WEIGHTS,
    PACKAGED_WEIGHTS_SHA256,
    default_onnx_dir,
    onnx_packages_problem,
    weights_mismatch,
)
from bot.agents.embeddings.vectors import FloatArray, top_k
from bot.agents.embeddings.worker import WorkerLoadError, warm_up_texts

__all__ = [
    "FIXES",
    "HUB_ENDPOINT",
    "MAX_TEXT_CHARS",
    "PACKAGED_DIST",
    "PACKAGED_MODEL",
    "PACKAGED_VERSION",
    "PACKAGED_WEIGHTS",
    "PACKAGED_WEIGHTS_SHA256",
    "CacheStats",
    "EmbeddingAgent",
    "FloatArray",
    "WorkerLoadError",
    "default_onnx_dir",
    "hashing_embed",
    "onnx_packages_problem",
    "top_k",
    "warm_up_texts",
    "weights_mismatch",
]
