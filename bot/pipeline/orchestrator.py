"""One research turn, composed from the agents.

    question ─► keywords ─┬─► fetch: Wikipedia ∥ Hacker News ─┬─► analysis (subprocess) ─┬─► answer
                (LLM)     └─► restore conversation (SQLite) ──┘   embed + rank (pool) ─────┘  (LLM)
    then, in the background: save the answer ─► summarise older turns when the history is long

:meth:`Pipeline.handle` is the error boundary for one inbound message: whatever goes wrong,
the user gets a friendly line (never exception text) and the details go to the log.
Expected failures degrade the turn instead: a source that is down is named in the answer,
a failed analysis or memory is skipped, and an unreachable LLM turns the answer into a
list of the best sources with a hint on how to fix it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import Runnable

from bot.agents.analysis import AnalysisAgent
from bot.agents.embeddings import EmbeddingAgent, top_k
from bot.agents.fetch import FetchAgent
from bot.agents.memory import MemoryStore
from bot.config import Settings
from bot.domain import (
    AnalysisReport,
    Article,
    ConversationState,
    FetchResult,
    InboundMessage,
    RankedArticle,
    Source,
    source_label,
)
from bot.errors import (
    AnalysisError,
    EmbeddingError,
    LLMError,
    MemoryStoreError,
)
from bot.pipeline import prompts
from bot.pipeline.answer_filter import AnswerFilter
from bot.pipeline.keywords import parse_keywords
from bot.pipeline.llm import call_llm, stream_llm
from bot.pipeline.sessions import ConversationLocks, RecentTurns, TaskTracker
from bot.pipeline.wording import (
    EMPTY_HINT,
    FAILURE_LINE,
    _nothing_found,
    _unavailable,
    fallback_answer,
    sources_footer,
)

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_A = TypeVar("_A")
_B = TypeVar("_B")

# Exchanges shown to the keyword step, so "and its successor?" can be resolved.
RECENT_TURNS = 2


class TurnListener(Protocol):
    """Receives a turn's progress and the answer's text as it is produced.

    Everything in ``TurnResult.answer`` reaches :meth:`on_text`, in order, so an adapter
    that streams can post exactly what it was given.
    """

    async def on_progress(self, step: str) -> None: ...

    async def on_text(self, text: str) -> None: ...


class SilentListener:
    async def on_progress(self, step: str) -> None:
        return None

    async def on_text(self, text: str) -> None:
        return None


SILENT = SilentListener()


@dataclass(frozen=True, slots=True)
class TurnResult:
    """What one turn produced; ``answer`` is the complete text to post."""

    question: str
    answer: str
    session: str
    topics: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()
    unavailable: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()
    analysis: AnalysisReport | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    ok: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "topics": list(self.topics),
            "sources": [
                {"n": s.n, "title": s.title, "url": s.url, "source": s.source, "score": s.score}
                for s in self.sources
            ],
            "unavailable": list(self.unavailable),
            "notices": list(self.notices),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "session": self.session,
        }


class _Stopwatch:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}

    async def time(self, name: str, awaitable: Awaitable[_T]) -> _T:
        start = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.laps[name] = time.perf_counter() - start


@dataclass(slots=True)
class _Turn:
    """Mutable scratchpad of one turn; only :class:`Pipeline` sees it."""

    message: InboundMessage
    question: str
    listener: TurnListener
    notices: list[str] = field(default_factory=list)
    llm_error: LLMError | None = None
    turn_id: int | None = None
    state: ConversationState | None = None
    clock: _Stopwatch = field(default_factory=_Stopwatch)


class _Body(NamedTuple):
    text: str
    cited: list[int]
    lists_sources: bool = False


class Pipeline:
    """Answers questions; one instance serves every adapter and conversation."""

    def __init__(
        self,
        *,
        settings: Settings,
        llm: BaseChatModel,
        fetcher: FetchAgent,
        memory: MemoryStore,
        embeddings: EmbeddingAgent,
        analysis: AnalysisAgent | None,
        tasks: TaskTracker,
    ) -> None:
        self._settings = settings
        self._fetcher = fetcher
        self._memory = memory
        self._embeddings = embeddings
        self._analysis = analysis
        self._tasks = tasks
        self._locks = ConversationLocks()
        self._recent = RecentTurns(per_conversation=RECENT_TURNS)
        self._pending_saves: dict[str, asyncio.Task[Any]] = {}
        self._summarizing: set[str] = set()
        text: Runnable[Any, str] = StrOutputParser()
        self._topic_chain = prompts.TOPIC_PROMPT | llm | text
        # Streamed without StrOutputParser: its per-chunk overhead (~0.3 ms) was measured
        # to be most of the streaming cost; the chunk's ``.text`` is the same string.
        self._answer_chain = prompts.SYNTHESIS_PROMPT | llm
        self._summary_chain = prompts.SUMMARY_PROMPT | llm | text

    # ----------------------------------------------------------------- entry points

    async def handle(self, message: InboundMessage, listener: TurnListener = SILENT) -> TurnResult:
        """Answer one inbound message. Never raises except ``CancelledError``."""
        try:
            return await self._handle(message, listener)
        except Exception:
            _log.exception(
                "turn failed: conversation=%s platform=%s author=%s",
                message.conversation,
                message.platform,
                message.author,
            )
            await _emit_quietly(listener, FAILURE_LINE)
            return TurnResult(
                question=message.text, answer=FAILURE_LINE, session=message.conversation, ok=False
            )

    async def reset(self, key: str) -> bool:
        """Forget a conversation (admin command). Waits for its running turn to finish."""
        async with self._locks.lock(key):
            await self._wait_pending_save(key)
            self._recent.forget(key)
            return await self._memory.reset(key)

    async def settle(self) -> None:
        """Wait until no background save or summary is running (the pipeline stays open)."""
        await self._tasks.drain()

    async def drain(self, grace_s: float | None = None) -> bool:
        """Wait for background saves and summaries (shutdown calls this first)."""
        return await self._tasks.drain(grace_s=grace_s, final=True)

    # ----------------------------------------------------------------- the turn

    async def _handle(self, message: InboundMessage, listener: TurnListener) -> TurnResult:
        question = " ".join(message.text.split())
        if not question:
            await listener.on_text(EMPTY_HINT)
            return TurnResult(question="", answer=EMPTY_HINT, session=message.conversation)
        turn = _Turn(message, question, listener)
        limit = self._settings.chat.max_question_chars
        if len(question) > limit:
            turn.question = question[:limit].rstrip()
            turn.notices.append(
                f"Your message was {len(question):,} characters long; "
                f"I used only its first {limit:,}."
            )
        async with self._locks.lock(message.conversation):
            return await turn.clock.time("total_s", self._run(turn))

    async def _run(self, turn: _Turn) -> TurnResult:
        key = turn.message.conversation
        await self._wait_pending_save(key)
        await turn.listener.on_progress("Choosing search keywords")
        # The question is stored while the keywords are chosen: it only has to be safe
        # before the answer is generated, and this takes the write off the critical path.
        turn.turn_id, topics = await _both(
            self._begin(turn), turn.clock.time("topics_s", self._topics(turn))
        )

        await turn.listener.on_progress(
            f"Searching Wikipedia and Hacker News for: {', '.join(topics)}"
        )
        if self._analysis is not None:
            self._analysis.prepare()  # its interpreter starts while we wait on the network
        fetched, state = await turn.clock.time(
            "fetch_s", _both(self._fetcher.fetch(topics), self._restore(turn))
        )
        articles = list(fetched.articles)

        await turn.listener.on_progress(f"Analysing and ranking {len(articles)} articles")
        report, ranked = await _both(
            turn.clock.time("analysis_s", self._analyze(articles, topics)),
            turn.clock.time("embed_s", self._rank(turn.question, articles)),
        )
        sources = [
            (
                Source(i, r.article.title, r.article.url, _source_label(r.article), r.score),
                _prompt_text(r.article),
            )
            for i, r in enumerate(ranked[: self._settings.chat.max_sources_in_prompt], start=1)
        ]

        await turn.listener.on_progress("Writing the answer")
        body = await turn.clock.time(
            "synthesis_s", self._compose(turn, state, sources, fetched, report)
        )
        footer_sources = [] if body.lists_sources else [s for s, _ in sources]
        tail = _tail(footer_sources, body.cited, fetched.unavailable, turn.notices)
        await turn.listener.on_text(tail)
        answer = body.text + tail
        cited = body.cited

        self._after_turn(turn, answer)
        given = [s for s, _ in sources]
        shown = [s for s in given if s.n in cited] if cited else given
        return TurnResult(
            question=turn.question,
            answer=answer,
            session=key,
            topics=tuple(topics),
            sources=tuple(shown),
            unavailable=fetched.unavailable,
            notices=tuple(turn.notices),
            analysis=report,
            timings=turn.clock.laps,
        )

    # ----------------------------------------------------------------- steps

    async def _begin(self, turn: _Turn) -> int | None:
        """Store the question before anything else, so a crash cannot lose it."""
        try:
            return await self._memory.begin_turn(turn.message.conversation, turn.question)
        except MemoryStoreError:
            _log.exception("could not save the question of %s", turn.message.conversation)
            turn.notices.append("I could not save this exchange; it will not be remembered.")
            return None

    async def _topics(self, turn: _Turn) -> list[str]:
        """Keywords from the LLM; without it, from the question's own content words."""
        recent = self._recent.get(turn.message.conversation)
        if not recent:
            # A cold cache (a new conversation, or a restart): ask the store, so a
            # follow-up in a resumed conversation still resolves. Phase 1 reuses the state.
            state = await self._restore(turn)
            recent = [(t.question, t.answer or "") for t in state.turns[-RECENT_TURNS:]]
        context = prompts.format_history(recent, max_chars=1500) if recent else ""
        call = self._topic_chain.ainvoke({"question": turn.question, "context": context})
        try:
            raw = await call_llm(call, self._settings.llm)
        except LLMError as error:
            # Remembered so the answer step falls back at once instead of failing again.
            _log.warning("keyword extraction failed: %s", error)
            turn.llm_error = error
            raw = ""
        return parse_keywords(raw, turn.question)

    async def _restore(self, turn: _Turn) -> ConversationState:
        """The conversation from the store, loaded at most once per turn."""
        if turn.state is not None:
            return turn.state
        key = turn.message.conversation
        try:
            turn.state = await self._memory.load(key)
        except MemoryStoreError:
            _log.exception("could not restore conversation %s", key)
            turn.notices.append("I could not restore our earlier conversation for this answer.")
            turn.state = ConversationState(key=key)
        return turn.state

    async def _analyze(
        self, articles: Sequence[Article], topics: Sequence[str]
    ) -> AnalysisReport | None:
        if self._analysis is None or not articles:
            return None
        try:
            return await self._analysis.analyze(articles, topics)
        except AnalysisError:
            _log.warning("analysis skipped for this turn", exc_info=True)
            return None

    async def _rank(self, question: str, articles: Sequence[Article]) -> list[RankedArticle]:
        """Embed the question with the articles in one batch, then rank by cosine."""
        if not articles:
            return []
        texts = [question, *(f"{a.title}. {a.text}" for a in articles)]
        try:
            vectors = await self._embeddings.embed(texts)
        except EmbeddingError:
            _log.exception("embedding failed; keeping the sources' own order")
            order = sorted(range(len(articles)), key=lambda i: articles[i].rank)
            return [RankedArticle(articles[i], 0.0) for i in order]
        hits = top_k(vectors[0], np.asarray(vectors[1:]), len(articles))
        return [RankedArticle(articles[i], round(score, 4)) for i, score in hits]

    async def _compose(
        self,
        turn: _Turn,
        state: ConversationState,
        sources: Sequence[tuple[Source, str]],
        fetched: FetchResult,
        report: AnalysisReport | None,
    ) -> _Body:
        """Stream the answer body; returns it and the citation numbers it used."""
        if not sources:
            body = _nothing_found(fetched.unavailable)
            await turn.listener.on_text(body)
            return _Body(body, [])
        if turn.llm_error is None:
            streamed = await self._stream_answer(turn, state, sources, fetched, report)
            if streamed is not None:
                return streamed
        assert turn.llm_error is not None
        body = fallback_answer(sources, reason=turn.llm_error.user_message)
        await turn.listener.on_text(body)
        # The fallback is itself a list of the sources with their links.
        return _Body(body, [s.n for s, _ in sources], lists_sources=True)

    async def _stream_answer(
        self,
        turn: _Turn,
        state: ConversationState,
        sources: Sequence[tuple[Source, str]],
        fetched: FetchResult,
        report: AnalysisReport | None,
    ) -> _Body | None:
        """Returns None when the LLM failed before saying anything (caller falls back)."""
        notes = [_unavailable(name) for name in fetched.unavailable]
        notes += turn.notices
        inputs = {
            "question": turn.question,
            "summary": state.summary or "(none)",
            "history": prompts.format_history([(t.question, t.answer or "") for t in state.turns])
            or "(none)",
            "sources": prompts.format_sources(sources),
            "analysis": _describe_report(report),
            "notes": "\n".join(notes) or "(none)",
        }
        answer_filter = AnswerFilter([s.n for s, _ in sources])
        parts: list[str] = []

        async def emit(text: str) -> None:
            if text:
                parts.append(text)
                await turn.listener.on_text(text)

        try:
            chunks = (chunk.text async for chunk in self._answer_chain.astream(inputs))
            async for text in stream_llm(chunks, self._settings.llm):
                await emit(answer_filter.feed(text))
            await emit(answer_filter.flush())
        except LLMError as error:
            _log.warning("answer generation failed: %s", error)
            turn.llm_error = error
            if not "".join(parts).strip():
                return None
            await emit(answer_filter.flush())
            await emit(f"\n\n(The answer was cut off: {error.user_message})")
        body = "".join(parts).strip()
        if not body:
            # A model that streams only whitespace or a think block said nothing usable.
            body = "I could not write an answer from these sources; here they are."
            await turn.listener.on_text(body)
        return _Body(body, answer_filter.cited)

    # ----------------------------------------------------------------- background work

    def _after_turn(self, turn: _Turn, answer: str) -> None:
        key = turn.message.conversation
        self._recent.add(key, turn.question, answer)
        if turn.turn_id is None:
            return
        task = self._tasks.spawn(self._save(key, turn.turn_id, answer), name=f"save:{key}")
        self._pending_saves[key] = task
        task.add_done_callback(lambda t: self._forget_save(key, t))

    def _forget_save(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._pending_saves.get(key) is task:
            del self._pending_saves[key]

    async def _wait_pending_save(self, key: str) -> None:
        """The next turn must see the previous answer, so it waits for its save."""
        task = self._pending_saves.get(key)
        if task is not None:
            await asyncio.wait([task])

    async def _save(self, key: str, turn_id: int, answer: str) -> None:
        try:
            stored = await self._memory.finish_turn(turn_id, answer)
        except MemoryStoreError:
            _log.exception("could not save the answer of turn %s in %s", turn_id, key)
            return
        if stored and key not in self._summarizing:
            self._summarizing.add(key)
            self._tasks.spawn(self._summarize(key), name=f"summary:{key}")

    async def _summarize(self, key: str) -> None:
        """Fold older turns into the running summary once the history grows too long."""
        try:
            state = await self._memory.load(key)
            mem = self._settings.memory
            if 2 * len(state.turns) <= mem.summarize_after:
                return
            keep = (mem.keep_recent + 1) // 2
            older = state.turns[: len(state.turns) - keep] if keep else state.turns
            if not older:
                return
            transcript = prompts.format_history(
                [(t.question, t.answer or "") for t in older], max_chars=12_000
            )
            raw = await call_llm(
                self._summary_chain.ainvoke({"summary": state.summary, "transcript": transcript}),
                self._settings.llm,
            )
            # The summary goes back into prompts verbatim: no reasoning blocks, no citations.
            cleaner = AnswerFilter(())
            summary = (cleaner.feed(raw) + cleaner.flush()).strip()
            if summary:
                await self._memory.save_summary(key, summary, older[-1].id)
                _log.info("summarised %d turns of %s", len(older), key)
        except (MemoryStoreError, LLMError) as exc:
            _log.warning("summary of %s postponed: %r", key, exc)
        finally:
            self._summarizing.discard(key)


def _tail(
    sources: Sequence[Source],
    cited: Sequence[int],
    unavailable: Sequence[str],
    notices: Sequence[str],
) -> str:
    """The Sources list, then notices (sources down, question cut) in italics."""
    blocks: list[str] = []
    if sources:
        blocks.append(sources_footer(sources, cited))
    extra = [_unavailable(name) for name in unavailable]
    extra += notices
    if extra:
        blocks.append("\n".join(f"_{line}_" for line in extra))
    return "".join(f"\n\n{block}" for block in blocks)


async def _both(first: Awaitable[_A], second: Awaitable[_B]) -> tuple[_A, _B]:
    """Run two steps concurrently; if one fails, the other is cancelled, not orphaned."""
    async with asyncio.TaskGroup() as group:
        a = group.create_task(_await(first))
        b = group.create_task(_await(second))
    return a.result(), b.result()


async def _await(awaitable: Awaitable[_T]) -> _T:
    return await awaitable


def _prompt_text(article: Article) -> str:
    """The article as the LLM sees it: a story's standing and date help it weigh the story."""
    facts = []
    if article.points is not None:
        facts.append(f"{article.points} points")
    if article.comments is not None:
        facts.append(f"{article.comments} comments")
    if article.published:
        facts.append(f"posted {article.published[:10]}")
    return f"({', '.join(facts)}) {article.text}" if facts else article.text


def _source_label(article: Article) -> str:
    return source_label(article.source)


def _describe_report(report: AnalysisReport | None) -> str:
    if report is None:
        return "(not available)"
    counts = ", ".join(f"{name}: {n}" for name, n in report.per_source.items())
    words = ", ".join(f"{w} ({n})" for w, n in report.keyword_frequencies[:8])
    return (
        f"{report.article_count} articles ({counts}); average keyword relevance "
        f"{report.average_relevance:.2f}; frequent terms: {words or 'none'}"
    )


async def _emit_quietly(listener: TurnListener, text: str) -> None:
    try:
        await listener.on_text(text)
    except Exception:
        _log.exception("could not deliver the failure notice")
