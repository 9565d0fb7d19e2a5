"""The pool of embedding worker processes: built and warmed once, replaced when a worker dies.

One :class:`~concurrent.futures.ProcessPoolExecutor` serves every call. It uses the
``forkserver`` start method: the bot's main process has threads (the event loop's default
executor, aiosqlite's connection thread) and forking a threaded process can deadlock. Each
worker loads the model in the pool's initializer (:mod:`bot.agents.embeddings.worker`), and
start-up runs one warm-up embedding in every worker before the pool takes work.

Threads: each worker gets ``[embeddings].threads`` torch threads (ONNX Runtime intra-op
threads for the onnx backend), by default ``max(1, cpus // workers)``, and one inter-op
thread, so the pool as a whole never asks for more threads than the cores it may use; the
event loop's process is idle while it waits. Measured on the 2-core development machine with
all-MiniLM-L6-v2 and a turn of 21 article-sized texts: 1 worker x 2 threads took 1.3-1.9 s,
1 worker x 1 thread 2.0-2.6 s, and 2 workers x 1 thread 2.3 s (a 21-text turn is a single
batch of 32, so only one worker runs it). Hence the default of one worker using every core;
more workers pay off only when calls arrive concurrently or exceed one batch.

Crash recovery: if a worker dies (OOM killer, SIGKILL), the pool is broken. The first caller
to notice shuts it down and builds and warms a new one under a lock; a generation counter keeps
concurrent callers who saw the same breakage from building several pools. The call is then
retried once; a second failure raises :class:`~bot.errors.EmbeddingError`.

A worker that does not die but stops answering (SIGSTOP, a wedged library) would hold
every call behind it: a call has a deadline, and one that misses it kills the pool's
workers, so that the next call finds the pool broken and replaces it, and fails with
:class:`~bot.errors.EmbeddingError` (the turn ranks without vectors). Closing, too, gives
the workers :data:`CLOSE_GRACE_S` to stop, then kills them: shutdown never waits on a
stuck worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import forkserver, resource_tracker
from typing import Any, TypeVar

from bot.agents.embeddings.worker import WorkerConfig, init_worker, warm_worker, worker_pid
from bot.errors import EmbeddingError

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

# At close, running work gets this long to finish before the workers are killed.
CLOSE_GRACE_S = 5.0


class WorkerPool:
    """The embedding workers' process pool, with its crash recovery.

    :meth:`open` builds and warms the pool; :meth:`call` runs work on it, replacing a broken
    pool and retrying once; :meth:`close` shuts it down. ``make_config`` is called for
    every pool built (the environment it forwards may have changed since the last);
    ``label`` names the model in messages.
    """

    def __init__(
        self,
        workers: int,
        *,
        label: str,
        make_config: Callable[[], WorkerConfig],
        threads: int | None = None,
    ) -> None:
        self._workers = workers
        self._label = label
        self._make_config = make_config
        # The operator's number wins: several replicas on one machine each see every core.
        self._threads = threads or max(1, _cpu_count() // workers)
        self._executor: ProcessPoolExecutor | None = None
        self._generation = 0
        self._lock = asyncio.Lock()
        self._closed = False
        self._pids: frozenset[int] = frozenset()
        self._dimension: int | None = None

    @property
    def threads(self) -> int:
        """Threads each worker uses: the usable cores divided among the workers."""
        return self._threads

    @property
    def ready(self) -> bool:
        """True once a pool is built and warm (possibly broken, until the next call notices)."""
        return self._executor is not None

    @property
    def closed(self) -> bool:
        """True once :meth:`mark_closed` or :meth:`close` was called."""
        return self._closed

    @property
    def dimension(self) -> int | None:
        """The vector length the workers reported at the last warm-up; None before one."""
        return self._dimension

    @property
    def pids(self) -> frozenset[int]:
        """Pids of the current pool's workers, as they reported at warm-up."""
        return self._pids

    @property
    def restarts(self) -> int:
        """How many times a broken pool has been replaced since the first was built."""
        return max(0, self._generation - 1)

    async def open(self) -> None:
        """Build and warm the pool, unless one is already running.

        Raises:
            EmbeddingError: the model (named in the message) could not be loaded.
        """
        async with self._lock:
            if self._executor is None:
                await self._install_new_pool()

    async def call(
        self, work: Callable[[ProcessPoolExecutor], Awaitable[_T]], *, timeout_s: float
    ) -> _T:
        """Await ``work`` on the pool; if the pool broke, replace it and retry once.

        An attempt that takes longer than ``timeout_s`` kills the pool's workers (the next
        call replaces them) and fails.

        Raises:
            EmbeddingError: the pool is closed, broke twice in a row, or missed the deadline.
        """
        for attempt in (1, 2):
            pool, generation = self._executor, self._generation
            if pool is None:
                raise EmbeddingError("the embedding agent was closed during the call")
            try:
                async with asyncio.timeout(timeout_s) as window:
                    return await work(pool)
            except TimeoutError as exc:
                if not window.expired():
                    raise
                _log.error(
                    "an embedding call took longer than %g s ([embeddings].timeout_s): the "
                    "workers %s are stopped or stuck; killing them (they are replaced at the "
                    "next call)",
                    timeout_s,
                    sorted(self._pids),
                )
                _kill_workers(pool)
                raise EmbeddingError(
                    f"embedding took longer than {timeout_s:g} s; the workers were killed"
                ) from exc
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
            EmbeddingError: no pool, or the pool is broken (the next :meth:`call` replaces it).
        """
        pool = self._executor
        if pool is None:
            raise EmbeddingError("the embedding agent is not running (call start() first)")
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, worker_pid)
        except (BrokenProcessPool, RuntimeError) as exc:
            raise EmbeddingError(f"embedding pool health check failed: {exc}") from exc

    def kill(self) -> None:
        """SIGKILL the current pool's workers now (a forced exit; nothing is waited for)."""
        if self._executor is not None:
            _kill_workers(self._executor)

    def mark_closed(self) -> None:
        """Refuse to build a pool from now on: a call that finds its pool broken fails.

        The owner calls this first thing on closing, so no replacement pool is built while
        it winds down; :meth:`close` then shuts the current pool down.
        """
        self._closed = True

    async def close(self) -> None:
        """Shut the pool down; running work gets :data:`CLOSE_GRACE_S`, then the workers
        are killed. Safe to call more than once."""
        self._closed = True
        async with self._lock:
            pool, self._executor = self._executor, None
            self._pids = frozenset()
            if pool is not None:
                await _shut_down(pool, CLOSE_GRACE_S)
                _log.info("embedding workers stopped")

    async def _install_new_pool(self) -> None:
        """Build and warm a pool, then make it current. Call with ``self._lock`` held."""
        ctx = multiprocessing.get_context("forkserver")
        workers = self._workers
        config = self._make_config()
        _start_helpers(config.log_file)
        barrier = ctx.Barrier(workers)
        started = time.perf_counter()
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=init_worker,
            initargs=(config, barrier),
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
                    f"cannot load embedding {self._label}: {str(exc) or type(exc).__name__}"
                ) from exc
            raise
        self._executor = pool
        self._pids = frozenset(pid for pid, _ in replies)
        self._dimension = replies[0][1]
        self._generation += 1
        _log.info(
            "embedding workers ready: %s, %d worker(s) x %d thread(s), dim %d, pids %s, %.1f s",
            self._label,
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
            if self._generation != broken_generation or self._executor is None:
                return
            # self._executor keeps pointing at the broken pool until the new one is
            # installed: callers arriving meanwhile get BrokenProcessPool from it, queue on
            # the lock and then retry on the new pool. If the rebuild fails, the next call
            # tries again.
            self._pids = frozenset()
            # The broken pool's manager thread has already reaped its workers; this only
            # joins that thread, but it can still block, so it runs off the loop.
            await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
            await self._install_new_pool()


def _start_helpers(log_file: str) -> None:
    """Start multiprocessing's resource tracker and fork server with their stderr on the log.

    Both are started once per process and write to the stderr they were started with:
    the terminal the user chats in, where a forced exit (a second Ctrl-C) would print the
    tracker's warnings about the semaphores it then cleans up. Started here first, with
    the descriptor pointed at the log file for that moment, they write there instead.
    """
    if not log_file:
        return
    try:
        target = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return
    saved = os.dup(2)
    try:
        os.dup2(target, 2)
        resource_tracker.ensure_running()
        forkserver.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


async def _shut_down(pool: ProcessPoolExecutor, grace_s: float) -> None:
    """Shut ``pool`` down, giving its workers ``grace_s`` to finish; then kill them."""
    processes = _processes(pool)
    await asyncio.to_thread(pool.shutdown, wait=False, cancel_futures=True)
    if not await asyncio.to_thread(_joined, processes, grace_s):
        _log.warning(
            "embedding workers %s did not stop within %g s; killing them",
            sorted(p.pid for p in processes if p.is_alive()),
            grace_s,
        )
        _kill_workers(pool, processes)
    # Joins the executor's own thread, which is quick once its workers are gone.
    await asyncio.to_thread(pool.shutdown, wait=True)


def _joined(processes: list[Any], timeout_s: float) -> bool:
    """Whether every process ended within ``timeout_s`` (blocking: run it in a thread)."""
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    return not any(process.is_alive() for process in processes)


def _processes(pool: ProcessPoolExecutor) -> list[Any]:
    # Python 3.14 has ProcessPoolExecutor.kill_workers(); before it, only the private map.
    return list((getattr(pool, "_processes", None) or {}).values())


def _kill_workers(pool: ProcessPoolExecutor, processes: list[Any] | None = None) -> None:
    # SIGKILL ends a stopped process too.
    for process in processes if processes is not None else _processes(pool):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.kill()
