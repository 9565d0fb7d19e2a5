"""Builds every long-lived resource once, hands them to the pipeline, closes them in reverse.

Start-up order: HTTP session → LLM client → memory store → embedding pool → analysis agent
→ fetch agent → pipeline → intake, then each adapter (:meth:`Runtime.add_adapter`), then
the recovery of events a crash left unanswered (:meth:`Runtime.recover`).

Shutdown (SIGTERM, Ctrl-C, the end of the command): the intake stops taking events; turns
in flight get ``[intake].shutdown_grace_s`` to finish, and the rest stay pending in the
inbox for the next start; then everything closes in reverse order: the adapters first,
then the pipeline's background saves and summaries are drained (they still need the store
and the LLM), then the agents and clients. Each step is isolated: a failure is logged and
the remaining resources are still closed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
from langchain_ollama import ChatOllama

from bot.adapters.base import Adapter
from bot.agents.analysis import AnalysisAgent
from bot.agents.embeddings import EmbeddingAgent
from bot.agents.fetch import FetchAgent
from bot.agents.memory import MemoryStore
from bot.config import Settings
from bot.intake import Intake
from bot.pipeline.llm import build_chat_model, check_llm, close_chat_model
from bot.pipeline.orchestrator import Pipeline
from bot.pipeline.sessions import TaskTracker

_log = logging.getLogger(__name__)

DRAIN_GRACE_S = 30.0


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
    _closers: list[tuple[str, Callable[[], Awaitable[object]]]] = field(default_factory=list)
    _closed: bool = False

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        """Create everything; if one step fails, what was already created is closed.

        Raises:
            EmbeddingError: the embedding model could not be loaded.
            MemoryStoreError: the database could not be opened.
        """
        closers: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        try:
            http = aiohttp.ClientSession(raise_for_status=False)
            closers.append(("http session", http.close))
            llm = build_chat_model(settings.llm)
            closers.append(("llm client", lambda: close_chat_model(llm)))
            llm_warning = await check_llm(http, settings.llm)
            memory = await MemoryStore.open(settings.memory.database)
            closers.append(("memory store", memory.close))
            embeddings = EmbeddingAgent(settings.embeddings, store=memory)
            closers.append(("embedding pool", embeddings.close))
            await embeddings.start()
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
        except BaseException:
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


async def _close_all(closers: list[tuple[str, Callable[[], Awaitable[object]]]]) -> None:
    for name, close in reversed(closers):
        try:
            await close()
        except Exception:
            _log.exception("closing the %s failed; closing the rest anyway", name)
    closers.clear()
