"""The embedding agent: texts in, L2-normalised float32 vectors out, computed off the event loop."""

from __future__ import annotations

from bot.agents.embeddings.agent import MAX_TEXT_CHARS, EmbeddingAgent
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
