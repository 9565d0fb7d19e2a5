"""Builds every long-lived resource once, hands them to the pipeline, closes them in reverse.

Start-up, cheap checks first: the HTTP session and LLM client are built, then at once, and
concurrently: Ollama is asked for its models, the memory store is opened (is the database
writable?), the embedding model is looked for (no process started yet), and every chat
adapter checks its token (its optional ``check``). Every problem found is reported together
(:class:`~bot.errors.StartupError`), so one run names them all. Only then the slow step
begins: the embedding pool loads the model in the background while the analysis agent,
fetch agent, pipeline and intake are built, and the first turn runs its keyword and fetch
steps meanwhile (the pipeline waits for the model at its embed step). Then each adapter is
started (:meth:`Runtime.add_adapter`), then the events a crash left unanswered are
recovered (:meth:`Runtime.recover`).

Shutdown (SIGTERM, Ctrl-C, the end of the command): the intake stops taking events; turns
in flight get ``[intake].shutdown_grace_s`` to finish, and the rest stay pending in the
inbox for the next start; then everything closes in reverse order: the adapters first,
then the pipeline's background saves and summaries are drained (they still need the store
and the LLM), then the agents and clients. Each step is isolated: a failure is logged and
the remaining resources are still closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
from langchain_ollama import ChatOllama

from bot.adapters.base import Adapter, IntakePort, Rating, Submission
from bot.agents.analysis import AnalysisAgent
from bot.agents.embeddings import EmbeddingAgent
from bot.agents.fetch import FetchAgent
from bot.agents.memory import MemoryStore
from bot.config import Settings
from bot.contract import InboundMessage, Platform
from bot.errors import MemoryStoreError, StartupError
from bot.intake import Intake
from bot.pipeline.llm import build_chat_model, check_llm, close_chat_model
from bot.pipeline.orchestrator import Pipeline
from bot.pipeline.sessions import TaskTracker

_log = logging.getLogger(__name__)

DRAIN_GRACE_S = 30.0

# Builds the chat adapters from the intake they will talk to.
AdapterFactory = Callable[[IntakePort], Sequence[Adapter[Any]]]


class _LateIntake:
    """The intake, for adapters built (and checked) before it exists."""

    def __init__(self) -> None:
        self.intake: Intake | None = None

    async def submit(self, message: InboundMessage[Any]) -> Submission:
        return await self._started().submit(message)

    async def has_answered(self, conversation: str) -> bool:
        return await self._started().has_answered(conversation)

    async def feedback(
        self, platform: Platform, event_id: str, user_id: str, rating: Rating
    ) -> bool:
        return await self._started().feedback(platform, event_id, user_id, rating)

    def _started(self) -> Intake:
        if self.intake is None:
            raise RuntimeError("a message arrived before the runtime was started")
        return self.intake


@dataclass(slots=True)
class Runtime:
    """The resources of one running process. Use ``async with await Runtime.start(s)``."""

    settings: Settings
    pipeline: Pipeline
    http: aiohttp.ClientSession
    llm: ChatOllama
    memory: MemoryStore
    embeddings: EmbeddingAgent
    analysis: AnalysisAgent | None
    intake: Intake
    llm_warning: str | None = None
    # The chat adapters built by ``start(adapters=...)``, checked but not started yet.
    adapters: list[Adapter[Any]] = field(default_factory=list)
    # Lines for the operator's terminal: warnings, and what is loading in the background.
    notices: list[str] = field(default_factory=list)
    _closers: list[tuple[str, Callable[[], Awaitable[object]]]] = field(default_factory=list)
    _closed: bool = False

    @classmethod
    async def start(cls, settings: Settings, *, adapters: AdapterFactory | None = None) -> Runtime:
        """Check everything cheap, then create everything; on failure, close what was made.

        ``adapters`` builds the chat adapters; each is checked (bad token) with the rest,
        then left for :meth:`add_adapter` to start. The embedding model is still loading
        when this returns (see :attr:`notices`).

        Raises:
            StartupError: every problem the checks found, one line each.
        """
        closers: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        try:
            http = aiohttp.ClientSession(raise_for_status=False)
            closers.append(("http session", http.close))
            llm = build_chat_model(settings.llm)
            closers.append(("llm client", lambda: close_chat_model(llm)))
            embeddings = EmbeddingAgent(
                settings.embeddings, log_file=settings.logging.file, onnx_dir=_onnx_dir(settings)
            )
            closers.append(("embedding pool", embeddings.close))
            sink = _LateIntake()
            chat = list(adapters(sink)) if adapters is not None else []
            core = asyncio.gather(
                check_llm(http, settings.llm), _open_store(settings), embeddings.check()
            )
            per_adapter = asyncio.gather(*(_check_adapter(adapter) for adapter in chat))
            (llm_warning, opened, embedding_problem), adapter_problems = await asyncio.gather(
                core, per_adapter
            )
            if isinstance(opened, MemoryStore):
                # Before the embedding pool: closers run in reverse, and the pool goes first.
                closers.insert(-1, ("memory store", opened.close))
            problems = [
                p
                for p in (
                    None if isinstance(opened, MemoryStore) else opened,
                    embedding_problem,
                    *adapter_problems,
                )
                if p is not None
            ]
            if problems:
                raise StartupError(problems, warnings=[llm_warning] if llm_warning else [])
            assert isinstance(opened, MemoryStore)
            memory = opened
            embeddings.attach_store(memory)  # vectors cached across restarts
            embeddings.begin()
            notices = [llm_warning] if llm_warning else []
            if settings.embeddings.backend != "hashing":
                notices.append(
                    f"Loading the embedding model ({embeddings.label}) in the background "
                    "(a few seconds; the first answer waits for it if needed)."
                )
            analysis = AnalysisAgent(settings.analysis) if settings.analysis.enabled else None
            if analysis is not None:
                closers.append(("analysis agent", analysis.close))
            tasks = TaskTracker()
            pipeline = Pipeline(
                settings=settings,
                llm=llm,
                fetcher=FetchAgent(http, settings.sources),
                memory=memory,
                embeddings=embeddings,
                analysis=analysis,
                tasks=tasks,
            )
            closers.append(("background tasks", lambda: pipeline.drain(DRAIN_GRACE_S)))
            intake = Intake(pipeline=pipeline, store=memory, settings=settings.intake)
            sink.intake = intake
        except BaseException as exc:
            if isinstance(exc, StartupError):
                for line in exc.lines:
                    _log.error("cannot start: %s", line)
            else:
                _log.exception("start-up failed")
            await _close_all(closers)
            raise
        return cls(
            settings=settings,
            pipeline=pipeline,
            http=http,
            llm=llm,
            memory=memory,
            embeddings=embeddings,
            analysis=analysis,
            intake=intake,
            llm_warning=llm_warning,
            adapters=chat,
            notices=notices,
            _closers=closers,
        )

    async def add_adapter(self, adapter: Adapter[Any]) -> None:
        """Register and start ``adapter``; it is closed before everything else.

        Raises whatever the adapter's ``start`` raises (bad credentials, say); the
        runtime stays usable and closes what it has.
        """
        self.intake.register(adapter)
        await adapter.start()
        self._closers.append((f"{adapter.platform} adapter", adapter.close))

    async def recover(self) -> int:
        """Answer the events a crash left unanswered, through the adapters added so far."""
        return await self.intake.recover()

    async def close(self) -> None:
        """Finish or park turns in flight, then close resources in reverse order. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.intake.drain(self.settings.intake.shutdown_grace_s)
        except Exception:
            _log.exception("draining the turns in flight failed; closing the rest anyway")
        await _close_all(self._closers)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _onnx_dir(settings: Settings) -> str:
    """The onnx backend's exports: ``onnx/`` beside the database ("": the user's cache)."""
    database = settings.memory.database
    return "" if database == ":memory:" else str(Path(database).parent / "onnx")


async def _open_store(settings: Settings) -> MemoryStore | str:
    """The store, or why the database cannot be used, as one line with the fix."""
    database = settings.memory.database
    try:
        return await MemoryStore.open(database)
    except MemoryStoreError as exc:
        return (
            f"the memory database {database} cannot be opened for writing ({exc}): make its "
            "directory writable, or set [memory].database to a writable path"
        )


async def _check_adapter(adapter: Adapter[Any]) -> str | None:
    """The adapter's own cheap check (is the token accepted?), when it has one.

    ``check`` is optional so that an adapter without credentials need not write one; an
    adapter whose check itself crashes is reported, not allowed to stop the other checks.
    """
    check: Callable[[], Awaitable[str | None]] | None = getattr(adapter, "check", None)
    if check is None:
        return None
    try:
        return await check()
    except Exception as exc:
        _log.exception("the %s adapter's start-up check failed", adapter.platform)
        return f"the {adapter.platform} adapter could not check its settings ({type(exc).__name__})"


async def _close_all(closers: list[tuple[str, Callable[[], Awaitable[object]]]]) -> None:
    for name, close in reversed(closers):
        try:
            await close()
        except Exception:
            _log.exception("closing the %s failed; closing the rest anyway", name)
    closers.clear()
