"""The worker-process side of the embedding pool: load the model once, then embed batches.

Each worker process loads the model once, in the pool's initializer (:func:`init_worker`),
into a module-level global, so a turn never pays for loading. The pool's tasks
(:func:`init_worker`, :func:`warm_worker`, :func:`embed_batch`, :func:`worker_pid`) run in
the workers, never in the bot's process; the pool pickles them by qualified name into its
forkserver workers, so they must stay importable module-level functions.

Backends (``[embeddings].backend``):

* ``"sentence-transformers"``: a SentenceTransformer model on the CPU, from the directory or
  hub name :func:`~bot.agents.embeddings.model.find_model` found; the packaged model's
  weights are checked against their recorded sha256 before they are loaded.
* ``"onnx"`` (opt-in): the same model files, exported once to ONNX and run by ONNX Runtime
  (:mod:`bot.agents.embeddings.onnx`), its weights int8-quantised unless
  ``[embeddings].onnx_quantize = false``. The export is built by the first worker that
  needs it, into ``<database directory>/onnx/<hash of source and quantisation>/``, and
  reused on later starts. Needs ``pip install onnx onnxruntime`` (not requirements of the
  bot); :meth:`EmbeddingAgent.check` says so when they are missing.
* ``"hashing"``: numpy-only feature hashing (:mod:`bot.agents.embeddings.hashing`).

Each worker sets its own thread counts from :class:`WorkerConfig` (how many is the pool's
choice, see :mod:`bot.agents.embeddings.pool`). Its stdout and stderr (library warnings, hub
retries, progress bars) go to the log file, never to the terminal the user chats in.

A model that fails to load is recorded, not raised, and the warm-up call
(:func:`warm_worker`) carries the reason back to the parent as :class:`WorkerLoadError`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bot.agents.embeddings.hashing import hashing_embed
from bot.agents.embeddings.model import weights_mismatch
from bot.agents.embeddings.vectors import FloatArray

# How long a worker waits at the warm-up barrier for its siblings to finish loading.
_WARM_TIMEOUT_S = 600.0

# Environment variables forwarded to the workers. Forkserver children inherit the
# environment of the fork server, which is frozen when the server first starts; forwarding
# these at pool creation makes later settings (HF_HUB_OFFLINE in tests, HF_HOME, a token for
# a gated model) reach the workers.
_FORWARDED_ENV_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "SENTENCE_TRANSFORMERS_")


def forwarded_env() -> dict[str, str]:
    """The bot's hub and model library variables, as they are now, for the workers' env."""
    return {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV_PREFIXES)}


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything a worker needs, pickled once into each worker at start-up."""

    backend: str
    model: str
    batch_size: int
    hashing_dim: int
    threads: int
    max_seq_length: int = 0
    env: dict[str, str] = field(default_factory=dict)
    # Set for the packaged model: the weights must hash to this before they are loaded.
    weights_sha256: str = ""
    # Where the worker's stdout and stderr go; "" means /dev/null.
    log_file: str = ""
    # The onnx backend: where exports are kept, and whether they are int8.
    onnx_dir: str = ""
    onnx_quantize: bool = True


class _WorkerState:
    """What the initializer leaves behind in each worker process."""

    def __init__(self, config: WorkerConfig, barrier: Any) -> None:
        self.config = config
        self.barrier = barrier
        self.model: Any = None
        self.dimension: int | None = None
        self.error: str | None = None


# Set by ``init_worker`` in each worker process; never set in the bot's main process.
_STATE: _WorkerState | None = None


class WorkerLoadError(RuntimeError):
    """Raised inside a worker whose model failed to load; carries the reason as text."""


def init_worker(config: WorkerConfig, barrier: Any) -> None:
    """Pool initializer: configure threads, then load the model once into ``_STATE``.

    A load failure is recorded rather than raised: an initializer that raises kills its
    worker and the parent only learns "the pool is broken". Recording it lets the warm-up
    call carry the reason back to :meth:`EmbeddingAgent.start`.
    """
    global _STATE  # noqa: PLW0603 - the per-process model lives here by design
    _route_output(config.log_file)
    # Ctrl-C in a terminal signals the whole foreground process group, workers included.
    # Their lifetime is the parent's to manage (it shuts the pool down on the way out);
    # left alone they would each print a KeyboardInterrupt traceback at the user.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    state = _WorkerState(config, barrier)
    _STATE = state
    os.environ.update(config.env)
    # The tokenizers library warns (and may deadlock) if it used its thread pool before a
    # fork; workers never fork, but keep it single-threaded so torch owns the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(config.threads)
    if config.backend == "hashing":
        state.dimension = config.hashing_dim
        return
    if config.backend == "onnx":
        _load_onnx(state)
        return
    try:
        import torch  # noqa: PLC0415 - heavy; only workers of this backend import it

        torch.set_num_threads(config.threads)
        torch.set_num_interop_threads(1)
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415

        if config.weights_sha256:
            mismatch = weights_mismatch(Path(config.model), config.weights_sha256)
            if mismatch:
                state.error = mismatch
                return
        model = SentenceTransformer(config.model, device="cpu")
        if config.max_seq_length:
            model.max_seq_length = config.max_seq_length
        dimension = model.get_embedding_dimension()
    except Exception as exc:  # reported to the parent by warm_worker
        state.error = f"{type(exc).__name__}: {exc}"
        return
    state.model = model
    state.dimension = int(dimension) if dimension is not None else None


def _load_onnx(state: _WorkerState) -> None:
    """The onnx backend's part of :func:`init_worker`: find or build the export, load it."""
    config = state.config
    try:
        from bot.agents.embeddings import onnx  # noqa: PLC0415 - only this backend needs it

        if config.weights_sha256:
            mismatch = weights_mismatch(Path(config.model), config.weights_sha256)
            if mismatch:
                state.error = mismatch
                return
        directory = onnx.ensure_export(
            config.model, Path(config.onnx_dir), quantize=config.onnx_quantize
        )
        encoder = onnx.OnnxEncoder.load(
            directory,
            batch_size=config.batch_size,
            threads=config.threads,
            max_seq_length=config.max_seq_length,
        )
    except Exception as exc:  # reported to the parent by warm_worker
        state.error = f"{type(exc).__name__}: {exc}"
        return
    state.model = encoder
    state.dimension = encoder.dimension or None


def _route_output(log_file: str) -> None:
    """Point this worker's stdout and stderr at the log file (or /dev/null).

    torch, transformers and the hub client write warnings, retry notices and progress bars
    straight to stderr (transformers and huggingface_hub install their own stderr handlers),
    and stdout may carry ``ask --json``. Redirecting the descriptors catches all of it, C
    level included; records are appended, so they interleave with the bot's own.
    """
    target = log_file or os.devnull
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [embedding worker]: %(message)s")
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)


def _require_state() -> _WorkerState:
    if _STATE is None:
        raise WorkerLoadError("this process is not an embedding worker")
    if _STATE.error is not None:
        raise WorkerLoadError(_STATE.error)
    return _STATE


def _encode(state: _WorkerState, texts: list[str]) -> FloatArray:
    config = state.config
    if config.backend == "hashing":
        return hashing_embed(texts, config.hashing_dim)
    if config.backend == "onnx":
        return np.ascontiguousarray(state.model.embed(texts), dtype=np.float32)
    vectors = state.model.encode(
        texts,
        batch_size=config.batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def warm_worker() -> tuple[int, int]:
    """Run one embedding, then wait for every sibling to do the same; ``(pid, dimension)``.

    The start-up submits exactly one of these per worker. A worker blocked at the barrier
    cannot take a second one, so each worker runs exactly one and the replies name every pid.
    """
    state = _STATE
    if state is None:
        raise WorkerLoadError("this process is not an embedding worker")
    failure = state.error
    if failure is None:
        try:
            # Shaped like a turn: the question alone, then a full batch of article-sized
            # texts. The first calls at a new shape pay for allocations and kernel choices;
            # paid here, the first turn after start-up runs as fast as later ones.
            _encode(state, ["warm-up: what is the question about?"])
            _encode(state, warm_up_texts(min(state.config.batch_size, 16)))
        except Exception as exc:  # reported after the barrier
            failure = f"warm-up embedding failed: {type(exc).__name__}: {exc}"
    # Wait even after a failure so healthy siblings are not left waiting for the timeout.
    try:
        state.barrier.wait(_WARM_TIMEOUT_S)
    except threading.BrokenBarrierError as exc:
        raise WorkerLoadError("another embedding worker failed to start") from exc
    if failure is not None:
        raise WorkerLoadError(failure)
    if state.dimension is None:
        raise WorkerLoadError("the model does not report an embedding dimension")
    return os.getpid(), state.dimension


def warm_up_texts(count: int, chars: int = 3000) -> list[str]:
    """``count`` article-sized texts of varied words (the real ones are cut to ~3000 chars)."""
    words = (
        "the model reads each article and its title before the turn ranks them by meaning "
        "history science river planet language engine company island music war energy city"
    ).split()
    texts = []
    for i in range(count):
        rotated = words[i % len(words) :] + words[: i % len(words)]
        text = " ".join(rotated)
        texts.append((text + " ") * (chars // (len(text) + 1) + 1))
    return [t[:chars] for t in texts]


def embed_batch(texts: list[str]) -> FloatArray:
    """Pool task: embed one batch in this worker."""
    return _encode(_require_state(), texts)


def worker_pid() -> int:
    """Pool task: the worker's pid (a health check that also proves which process answered)."""
    _require_state()
    return os.getpid()
