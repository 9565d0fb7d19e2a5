"""The package's public face, :class:`EmbeddingAgent`: its start-up, its calls and its errors.

The agent finds the model (:mod:`bot.agents.embeddings.model`), runs the work in a pool of
worker processes (:mod:`bot.agents.embeddings.pool`) and keeps the vectors it computed
(:mod:`bot.agents.embeddings.cache`).

Start-up in two speeds: :meth:`EmbeddingAgent.check` is the cheap part (is the model there,
can the hub be reached for one that is not cached; no process is started) and reports a
problem as one line naming the fixes. :meth:`EmbeddingAgent.begin` then loads the model in
the background (torch and the weights take seconds), and :meth:`EmbeddingAgent.embed` waits
for it, so a turn's keyword and fetch steps run meanwhile. :meth:`EmbeddingAgent.start` is
both, awaited.

Errors: every runtime failure (model will not load, workers keep dying, agent not running)
leaves this package as :class:`~bot.errors.EmbeddingError`; misuse (a bare string instead of
a list, a negative ``k``) raises ``TypeError``/``ValueError``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from bot.agents.embeddings.cache import CacheStats, VectorCache
from bot.agents.embeddings.model import ModelSource, default_onnx_dir, find_model, model_label
from bot.agents.embeddings.pool import WorkerPool
from bot.agents.embeddings.vectors import FloatArray
from bot.agents.embeddings.worker import WorkerConfig, embed_batch, forwarded_env
from bot.config import EmbeddingSettings
from bot.errors import EmbeddingError
from bot.store.protocols import VectorStore

_log = logging.getLogger(__name__)

# Texts are cut to this many characters before they are pickled to a worker. MiniLM-class
# models read at most 256-512 tokens (roughly 1-3k characters), so this loses nothing the
# model would have seen while capping what one call can push through the pipe.
MAX_TEXT_CHARS = 8192


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
        self._workers = WorkerPool(
            settings.workers,
            label=self.label,
            make_config=self._worker_config,
            threads=settings.threads or None,
        )

    # ----------------------------------------------------------------- public API

    @property
    def dimension(self) -> int | None:
        """Length of each vector; ``None`` until :meth:`start` has loaded the model.

        Known from the settings, before :meth:`start`, for the hashing backend.
        """
        if self._workers.dimension is not None:
            return self._workers.dimension
        return self._settings.hashing_dim if self._settings.backend == "hashing" else None

    @property
    def worker_pids(self) -> frozenset[int]:
        """Pids of the current pool's workers, as they reported at warm-up (read-only).

        For health checks and tests; empty before :meth:`start` and after :meth:`close`.
        """
        return self._workers.pids

    @property
    def restarts(self) -> int:
        """How many times a broken pool has been replaced since :meth:`start`."""
        return self._workers.restarts

    @property
    def ready(self) -> bool:
        """True once the model is loaded and the pool can take work."""
        return self._workers.ready

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
        return self._workers.threads

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
                if isinstance(found, str):
                    self._checked = found
                else:
                    self._model, self._checked = found, None
        assert self._checked is not True
        return self._checked

    def begin(self) -> None:
        """Load the model in the background; :meth:`embed` and :meth:`wait_ready` wait for it.

        Raises:
            EmbeddingError: the agent was already closed.
        """
        if self._workers.closed:
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
            EmbeddingError: not started, closed, the workers failed twice in a row, or the
                call took longer than ``[embeddings].timeout_s`` (its workers are killed).
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        if not self._workers.ready and self._loading is not None and not self._workers.closed:
            # A turn waits for a model still loading, but not past the call's deadline:
            # it can rank without vectors, and the load goes on for the turns after it.
            try:
                async with asyncio.timeout(self._settings.timeout_s):
                    await self.wait_ready()
            except TimeoutError as exc:
                raise EmbeddingError(
                    f"the embedding model was still loading after {self._settings.timeout_s:g} s"
                ) from exc
        dimension = self.dimension
        if not self._workers.ready or dimension is None:
            raise EmbeddingError("the embedding agent is not running (call start() first)")
        if not texts:
            return np.zeros((0, dimension), dtype=np.float32)
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

    async def ping(self) -> int:
        """The pool's health check: run a no-op in a worker and return that worker's pid.

        Cheap (no model call), so a readiness endpoint can poll it; it proves a worker
        process answers, and which one.

        Raises:
            EmbeddingError: not running, or the pool is broken (the next :meth:`embed`
                replaces it).
        """
        return await self._workers.ping()

    def kill_workers(self) -> None:
        """Kill the worker processes now, without waiting (a forced exit)."""
        self._workers.kill()

    async def close(self) -> None:
        """Shut the pool down, waiting for running batches; safe to call more than once."""
        # First, so that no pool is built or replaced while the rest winds down.
        self._workers.mark_closed()
        loading = self._loading
        if loading is not None and not loading.done():
            loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
        await self._cache.flush()
        await self._workers.close()

    # ----------------------------------------------------------------- internals

    async def _load(self) -> None:
        problem = await self.check()
        if problem is not None:
            raise EmbeddingError(problem)
        await self._workers.open()

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
            threads=self._workers.threads,
            max_seq_length=s.max_seq_length,
            env=env,
            weights_sha256=self._model.weights_sha256,
            log_file=self._log_file,
            onnx_dir=self._onnx_dir,
            onnx_quantize=s.onnx_quantize,
        )

    async def _compute(self, clipped: list[str]) -> FloatArray:
        # The lambda looks _run_batches up at each attempt (the tests swap it for one that
        # always finds the pool broken).
        return await self._workers.call(
            lambda pool: self._run_batches(pool, clipped), timeout_s=self._settings.timeout_s
        )

    async def _run_batches(self, pool: ProcessPoolExecutor, texts: list[str]) -> FloatArray:
        """One attempt of a call: its batches on ``pool`` at once, concatenated in order.

        Raises:
            BrokenProcessPool: a worker died (the pool replaces itself and retries).
            EmbeddingError: anything else, including close() during the call.
        """
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
            if self._workers.closed and task is not None and not task.cancelling():
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
