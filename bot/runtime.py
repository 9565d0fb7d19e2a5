"""Builds every long-lived resource once, hands them to the pipeline, closes them in reverse.

Start-up, cheap checks first: the HTTP session and LLM client are built, then at once, and
concurrently: the LLM server (Ollama, or an OpenAI-compatible one) is asked for its
models, the store is opened (is the database writable?), the embedding model is looked
for (no process started yet), and every chat adapter checks its token
(:meth:`~bot.adapters.base.Adapter.check`). Every problem found is reported together
(:class:`~bot.errors.StartupError`), so one run names them all. Only then the slow step
begins: the embedding pool loads the model in the background while the
analysis agent, fetch agent, memory, pipeline and intake are built, and the first turn
runs its keyword and fetch steps meanwhile (the pipeline waits for the model at its embed
step). The intake joins the other replicas (when the store is shared) and starts keeping
its leases; with ``[metrics].port`` set, /healthz, /readyz and /metrics are served from
then on (:mod:`bot.ops`; not ready until every platform is connected). Then each adapter
is started with the intake (:meth:`Runtime.add_adapter`), then the events a crash left
unanswered are recovered (:meth:`Runtime.recover`).

Shutdown (SIGTERM, Ctrl-C, the end of the command): the intake stops taking events; turns
in flight get ``[intake].shutdown_grace_s`` to finish, and the rest stay pending in the
inbox for the next start; then everything closes in reverse order of creation (one
:class:`~contextlib.AsyncExitStack`): the adapters first, then the background saves and
summaries are drained (they still need the store and the LLM), then the analysis agent,
the embedding pool (it flushes vectors into the store), the store, the LLM's clients and
the HTTP session. Each step is isolated: a failure is logged and the rest still close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
from langchain_core.language_models import BaseChatModel

from bot.adapters.base import Adapter, IntakePort
from bot.agents.analysis import AnalysisAgent
from bot.agents.embeddings import EmbeddingAgent
from bot.agents.fetch import FetchAgent
from bot.config import Settings, is_database_url
from bot.core import metrics
from bot.core.tasks import TaskTracker
from bot.errors import StartupError, StoreError
from bot.intake import Intake
from bot.ops import OpsServer
from bot.pipeline.llm import build_chat_model, check_llm, close_chat_model
from bot.pipeline.memory import Memory
from bot.pipeline.orchestrator import Pipeline
from bot.pipeline.relevance import Relevance
from bot.store import Store, open_store

_log = logging.getLogger(__name__)

DRAIN_GRACE_S = 30.0


@dataclass(slots=True)
class Runtime:
    """The resources of one running process. Use ``async with await Runtime.start(s)``."""

    settings: Settings
    pipeline: Pipeline
    http: aiohttp.ClientSession
    llm: BaseChatModel
    store: Store
    embeddings: EmbeddingAgent
    analysis: AnalysisAgent | None
    intake: Intake
    llm_warning: str | None = None
    # The chat adapters given to ``start``, checked but not started yet.
    adapters: list[Adapter[Any]] = field(default_factory=list)
    # Lines for the operator's terminal: warnings, and what is loading in the background.
    notices: list[str] = field(default_factory=list)
    # What /readyz and /metrics read (also without a server: tests and the CLI ask them).
    probes: Probes | None = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    _closed: bool = False

    @classmethod
    async def start(cls, settings: Settings, *, adapters: Sequence[Adapter[Any]] = ()) -> Runtime:
        """Check everything cheap, then create everything; on failure, close what was made.

        ``adapters`` are checked (bad token) with the rest, then left for
        :meth:`add_adapter` to start. The embedding model is still loading when this
        returns (see :attr:`notices`).

        Raises:
            StartupError: every problem the checks found, one line each.
        """
        stack = contextlib.AsyncExitStack()
        try:
            http = aiohttp.ClientSession(raise_for_status=False)
            _closing(stack, "http session", http.close)
            llm = build_chat_model(settings.llm)
            _closing(stack, "llm client", lambda: close_chat_model(llm, settings.llm))
            embeddings = EmbeddingAgent(
                settings.embeddings, log_file=settings.logging.file, onnx_dir=_onnx_dir(settings)
            )
            (llm_warning, opened, embedding_problem), adapter_problems = await asyncio.gather(
                asyncio.gather(
                    check_llm(http, settings.llm),
                    _open_store(settings, serving=bool(adapters)),
                    embeddings.check(),
                ),
                asyncio.gather(*(_check_adapter(adapter) for adapter in adapters)),
            )
            if not isinstance(opened, str):
                _closing(stack, "store", opened.close)
            # After the store: the pool flushes its cached vectors into the store on close.
            _closing(stack, "embedding pool", embeddings.close)
            problems = [
                p
                for p in (opened if isinstance(opened, str) else None, embedding_problem)
                if p is not None
            ] + [p for p in adapter_problems if p is not None]
            if problems:
                raise StartupError(problems, warnings=[llm_warning] if llm_warning else [])
            assert not isinstance(opened, str)
            store = opened
            embeddings.attach_store(store.vectors)  # vectors cached across restarts
            embeddings.begin()
            notices = [llm_warning] if llm_warning else []
            if settings.embeddings.backend != "hashing":
                notices.append(
                    f"Loading the embedding model ({embeddings.label}) in the background "
                    "(a few seconds; the first answer waits for it if needed)."
                )
            analysis = AnalysisAgent(settings.analysis) if settings.analysis.enabled else None
            if analysis is not None:
                _closing(stack, "analysis agent", analysis.close)
            memory = Memory(
                store=store.conversations,
                llm=llm,
                llm_settings=settings.llm,
                settings=settings.memory,
                tasks=TaskTracker(),
            )
            _closing(stack, "background tasks", lambda: memory.drain(DRAIN_GRACE_S))
            pipeline = Pipeline(
                settings=settings,
                llm=llm,
                fetcher=FetchAgent(http, settings.sources),
                memory=memory,
                relevance=Relevance(
                    embeddings,
                    ranking_settings=settings.ranking,
                    citation_settings=settings.citations,
                ),
                analysis=analysis,
            )
            intake = Intake(pipeline=pipeline, store=store, settings=settings.intake)
            # Closed by drain() in close(), before the stack: turns in flight keep
            # their leases until they are done.
            await intake.start()
            # At a failed start only; close() drains the intake before the stack unwinds.
            _closing(stack, "intake's leases", intake.stop)
            probes = Probes(store=store, intake=intake, embeddings=embeddings, expected=adapters)
            if settings.metrics.port:
                ops = OpsServer(settings.metrics, readiness=probes.problems, refresh=probes.refresh)
                await ops.start()
                # Last in, first out: the probes stop answering before anything closes.
                _closing(stack, "health and metrics server", ops.close)
        except BaseException as exc:
            if isinstance(exc, StartupError):
                for line in exc.lines:
                    _log.error("cannot start: %s", line)
            else:
                _log.exception("start-up failed")
            await stack.aclose()
            raise
        return cls(
            settings=settings,
            pipeline=pipeline,
            http=http,
            llm=llm,
            store=store,
            embeddings=embeddings,
            analysis=analysis,
            intake=intake,
            llm_warning=llm_warning,
            adapters=list(adapters),
            notices=notices,
            probes=probes,
            _stack=stack,
        )

    async def add_adapter(self, adapter: Adapter[Any], *, port: IntakePort | None = None) -> None:
        """Register and start ``adapter`` with the intake; it is closed before the rest.

        ``port`` is what the adapter talks to instead of the intake itself: a wrapper that
        observes or counts what the adapter submits and passes it on.

        Raises whatever the adapter's ``start`` raises (bad credentials, say); the
        runtime stays usable and closes what it has.
        """
        self.intake.register(adapter)
        await adapter.start(port or self.intake)
        _closing(self._stack, f"{adapter.platform} adapter", adapter.close)
        if self.probes is not None:
            self.probes.started.append(adapter)

    def abandon(self) -> None:
        """For a forced exit (a second Ctrl-C): kill the child processes at once, so none
        outlives the process; nothing else is closed."""
        self.embeddings.kill_workers()
        if self.analysis is not None:
            self.analysis.kill_children()

    async def recover(self) -> int:
        """Answer the events a crash left unanswered, through the adapters added so far."""
        return await self.intake.recover()

    async def close(self) -> None:
        """Finish or park turns in flight, then close resources in reverse order. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.probes is not None:
            self.probes.closing = True
        try:
            await self.intake.drain(self.settings.intake.shutdown_grace_s)
        except Exception:
            _log.exception("draining the turns in flight failed; closing the rest anyway")
        await self._stack.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@dataclass(slots=True)
class Probes:
    """What the health endpoints ask of a running process (see :mod:`bot.ops`)."""

    store: Store
    intake: Intake
    embeddings: EmbeddingAgent
    # The chat platforms this process is to serve, and those connected so far.
    expected: Sequence[Adapter[Any]]
    started: list[Adapter[Any]] = field(default_factory=list)
    closing: bool = False

    async def problems(self) -> list[str]:
        """Why this process should not get traffic now; empty when it should."""
        found = ["shutting down"] if self.closing else []
        store = await self.store.health()
        if store is not None:
            found.append(f"store {self.store.location}: {store}")
        for adapter in self.expected:
            if adapter not in self.started:
                found.append(f"{adapter.platform}: not started yet")
            elif not adapter.is_alive:
                found.append(f"{adapter.platform}: not connected")
        return found

    async def refresh(self) -> None:
        """Set the metrics that are levels, not counts, to what they are now."""
        for adapter in self.started:
            metrics.PLATFORM_CONNECTED.labels(adapter.platform).set(1 if adapter.is_alive else 0)
        metrics.REPLICAS.set(self.intake.cluster.replicas)
        stats = self.embeddings.cache_stats
        metrics.EMBEDDING_CACHE.update(
            memory_hits=stats.memory_hits, store_hits=stats.store_hits, misses=stats.misses
        )
        backlog = await self.store.inbox.backlog()
        metrics.INBOX_PENDING.set(backlog.events)
        age = (
            0.0 if backlog.oldest is None else (datetime.now(UTC) - backlog.oldest).total_seconds()
        )
        metrics.INBOX_OLDEST_AGE.set(max(0.0, age))


def _closing(
    stack: contextlib.AsyncExitStack, name: str, close: Callable[[], Awaitable[object]]
) -> None:
    """Close ``name`` when the stack unwinds; a failure is logged and the rest still close."""

    async def isolated() -> None:
        try:
            await close()
        except Exception:
            _log.exception("closing the %s failed; closing the rest anyway", name)

    stack.push_async_callback(isolated)


def _onnx_dir(settings: Settings) -> str:
    """The onnx backend's exports: ``onnx/`` beside the database file ("": the user's
    cache, also when the database is a server)."""
    database = settings.memory.database
    if database == ":memory:" or is_database_url(database):
        return ""
    return str(Path(database).parent / "onnx")


async def _open_store(settings: Settings, *, serving: bool) -> Store | str:
    """The store, or why the database cannot be used, as one line with the fix.

    A process that serves chat platforms takes the store for itself: it recovers their
    events, which a second such process on the same database would answer again.
    """
    memory = settings.memory
    try:
        store = await open_store(
            memory.database, lease_s=memory.lease_s, pool_size=memory.pool_size
        )
    except StoreError as exc:
        if is_database_url(memory.database):
            # The store's message names the server without its password.
            return (
                f"{exc}: check that the PostgreSQL server runs and that DATABASE_URL (or "
                "[memory].database) names it, with the right user and password"
            )
        return (
            f"the memory database {memory.database} cannot be opened for writing ({exc}): "
            "make its directory writable, or set [memory].database to a writable path"
        )
    if serving:
        try:
            await store.take_ownership()
        except StoreError as exc:
            await store.close()
            return str(exc)
    return store


async def _check_adapter(adapter: Adapter[Any]) -> str | None:
    """The adapter's own cheap check; one whose check crashes is reported, not allowed to
    stop the other checks."""
    try:
        return await adapter.check()
    except Exception as exc:
        _log.exception("the %s adapter's start-up check failed", adapter.platform)
        return f"the {adapter.platform} adapter could not check its settings ({type(exc).__name__})"
