"""One research turn, composed from the agents.

    question ─► keywords ─┬─► fetch: Wikipedia ∥ Hacker News ─┬─► analysis (subprocess) ─┬─► answer
                (LLM)     └─► restore conversation (SQLite) ──┘   embed + rank (pool) ─────┘  (LLM)
    then, in the background: save the answer ─► summarise older turns when the history is long

:meth:`Pipeline.answer` is the error boundary for one turn: whatever goes wrong, it returns
a :class:`~bot.contract.Reply` (status ``failed`` and a friendly line, never exception
text) and the details go to the log. Expected failures degrade the turn instead: a source
that is down becomes a notice, a failed analysis or memory is skipped, and an unreachable
LLM turns the answer into the best sources' first sentences. Each failure gives a notice
with a user line and, where there is a fix, an operator hint.

The intake has already stored the question (its claim) before the turn starts. Fetched
text and the model's output are untrusted: before any adapter sees them, links that are
not among the turn's sources are made inert and mention tokens neutralised
(:mod:`bot.pipeline.safety`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import Runnable

from bot.agents.analysis import AnalysisAgent
from bot.agents.embeddings import EmbeddingAgent, FloatArray
from bot.agents.fetch import FetchAgent, provenance
from bot.config import Settings
from bot.contract import (
    InboundMessage,
    Neutralised,
    Notice,
    Reply,
    Source,
    Status,
    TurnListener,
    WeakCitation,
)
from bot.domain import (
    SOURCE_LABELS,
    AnalysisReport,
    Article,
    FetchResult,
    RankedArticle,
    source_label,
)
from bot.errors import AnalysisError, EmbeddingError, LLMError, StoreError
from bot.pipeline import citations, prompts, ranking
from bot.pipeline.answer_filter import AnswerFilter
from bot.pipeline.keywords import parse_keywords
from bot.pipeline.llm import call_llm, stream_llm
from bot.pipeline.memory import RECENT_TURNS, Memory
from bot.pipeline.ranking import article_text
from bot.pipeline.safety import SafetyFilter, neutralise
from bot.pipeline.wording import (
    ANSWER_BROKEN,
    ANSWER_CUT,
    EMPTY_HINT,
    FAILURE_LINE,
    LLM_DOWN,
    NOT_RANKED,
    NOT_RESTORED,
    NOT_SAVED,
    fallback_answer,
    nothing_found,
    question_cut_line,
    unavailable_line,
)
from bot.store import Claim, ConversationState

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_A = TypeVar("_A")
_B = TypeVar("_B")

LANGUAGE_MODEL = "language model"
# Without the model, the answer is the first sentences of this many best sources.
FALLBACK_SOURCES = 3
# A notice of one of these kinds means the reply is missing something: ``degraded``.
_DEGRADING = frozenset(
    {
        "source_unavailable",
        "memory_unavailable",
        "llm_unavailable",
        "answer_cut",
        "ranking_unavailable",
    }
)


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

    message: InboundMessage[Any]
    question: str
    listener: TurnListener
    claim: Claim | None
    notices: list[Notice] = field(default_factory=list)
    llm_error: LLMError | None = None
    state: ConversationState | None = None
    clock: _Stopwatch = field(default_factory=_Stopwatch)
    # The body as streamed so far, so a turn that fails half-way keeps what was shown.
    streamed: list[str] = field(default_factory=list)
    neutralised: Neutralised = field(default_factory=Neutralised)

    async def emit(self, text: str) -> None:
        if text:
            await self.listener.on_text(text)
            self.streamed.append(text)


class _Body(NamedTuple):
    text: str
    cited: list[int]


class Pipeline:
    """Answers questions; one instance serves every adapter and conversation."""

    def __init__(
        self,
        *,
        settings: Settings,
        llm: BaseChatModel,
        fetcher: FetchAgent,
        memory: Memory,
        embeddings: EmbeddingAgent,
        analysis: AnalysisAgent | None,
    ) -> None:
        self._settings = settings
        self._fetcher = fetcher
        self._memory = memory
        self._embeddings = embeddings
        self._analysis = analysis
        text: Runnable[Any, str] = StrOutputParser()
        self._topic_chain = prompts.TOPIC_PROMPT | llm | text
        # Streamed without StrOutputParser: its per-chunk overhead (~0.3 ms) was measured
        # to be most of the streaming cost; the chunk's ``.text`` is the same string.
        self._answer_chain = prompts.SYNTHESIS_PROMPT | llm

    @property
    def memory(self) -> Memory:
        return self._memory

    @property
    def _memory_hint(self) -> str:
        return (
            f"The memory database {self._settings.memory.database} failed (see the log); "
            "check that it is writable, or point [memory].database elsewhere."
        )

    # ----------------------------------------------------------------- entry points

    async def answer(
        self, message: InboundMessage[Any], listener: TurnListener, *, claim: Claim | None
    ) -> Reply:
        """Answer one question; ``claim`` is the intake's record of it (None: not stored).

        Progress and body text go to ``listener`` as they come; the final reply is
        returned, not sent (delivering it is the intake's job). Never raises except
        ``CancelledError``.
        """
        turn = _Turn(message, " ".join(message.text.split()), listener, claim)
        try:
            return await self._answer(turn)
        except Exception:
            _log.exception(
                "turn failed: conversation=%s platform=%s event=%s author=%s",
                message.conversation,
                message.platform,
                message.event_id,
                message.author.id,
            )
            shown = "".join(turn.streamed).strip()
            if shown:
                # Never half an answer followed by an apology: keep what was shown.
                turn.notices.append(Notice("answer_cut", ANSWER_BROKEN))
            return Reply(
                question=turn.question,
                body=shown or FAILURE_LINE,
                conversation=message.conversation,
                status="failed",
                notices=tuple(turn.notices),
            )

    async def reset(self, conversation: str) -> bool:
        """Forget a conversation (admin command). Waits for its running turn to finish."""
        return await self._memory.reset(conversation)

    # ----------------------------------------------------------------- the turn

    async def _answer(self, turn: _Turn) -> Reply:
        conversation = turn.message.conversation
        if not turn.question:
            return Reply(question="", body=EMPTY_HINT, conversation=conversation, status="failed")
        limit = self._settings.chat.max_question_chars
        if len(turn.question) > limit:
            turn.notices.append(
                Notice("question_cut", question_cut_line(len(turn.question), limit))
            )
            turn.question = turn.question[:limit].rstrip()
        if turn.claim is None:
            turn.notices.append(Notice("memory_unavailable", NOT_SAVED, self._memory_hint))
        async with self._memory.turn(conversation):
            return await turn.clock.time("total_s", self._run(turn))

    async def _run(self, turn: _Turn) -> Reply:
        # The question's vector does not depend on the keywords: it is computed while the
        # keyword call is out, so only the articles' embedding is left on the critical path.
        question_vector = asyncio.create_task(self._embed_question(turn.question))
        try:
            return await self._phases(turn, question_vector)
        finally:
            question_vector.cancel()  # a no-op once it is done

    async def _phases(self, turn: _Turn, question_vector: asyncio.Task[FloatArray | None]) -> Reply:
        conversation = turn.message.conversation
        await turn.listener.on_progress("Choosing search keywords")
        topics = await turn.clock.time("topics_s", self._topics(turn))

        await turn.listener.on_progress(
            f"Searching {' and '.join(SOURCE_LABELS.values())} for: {', '.join(topics)}"
        )
        if self._analysis is not None:
            self._analysis.prepare()  # its interpreter starts while we wait on the network
        fetched, state = await turn.clock.time(
            "fetch_s", _both(self._fetcher.fetch(topics), self._restore(turn))
        )
        articles = list(fetched.articles)
        for name in fetched.unavailable:
            turn.notices.append(Notice("source_unavailable", unavailable_line(name)))

        loading = "" if self._embeddings.ready else " (the embedding model is still loading)"
        await turn.listener.on_progress(f"Analysing and ranking {len(articles)} articles{loading}")
        report, ranked = await _both(
            turn.clock.time("analysis_s", self._analyze(articles, topics)),
            turn.clock.time("embed_s", self._rank(turn, topics, articles, question_vector)),
        )
        sources = self._number(turn, ranked[: self._settings.chat.max_sources_in_prompt])

        await turn.listener.on_progress("Writing the answer")
        # The passages are known now: they are embedded while the answer is written.
        check = self._settings.citations.check and bool(sources)
        passages = asyncio.create_task(self._embed_passages(sources)) if check else None
        try:
            body = await turn.clock.time(
                "synthesis_s", self._compose(turn, state, sources, fetched, report)
            )
            weak = (
                await turn.clock.time("citations_s", self._check_citations(body.text, passages))
                if passages is not None
                else []
            )
        finally:
            if passages is not None:
                passages.cancel()
        cited = set(body.cited)
        reply = Reply(
            question=turn.question,
            body=body.text,
            conversation=conversation,
            status=self._status(turn, sources, fetched),
            sources=tuple(dataclasses.replace(s, cited=s.n in cited) for s, _ in sources),
            notices=tuple(turn.notices),
            topics=tuple(topics),
            unavailable=fetched.unavailable + ((LANGUAGE_MODEL,) if turn.llm_error else ()),
            neutralised=turn.neutralised,
            timings=turn.clock.laps,
            weak_citations=tuple(weak),
        )
        self._memory.remember(conversation, turn.claim, reply)
        return reply

    @staticmethod
    def _status(turn: _Turn, sources: Sequence[tuple[Source, str]], fetched: FetchResult) -> Status:
        if not sources and len(fetched.unavailable) == len(SOURCE_LABELS):
            return "failed"  # nothing to answer from, and not because nothing exists
        if any(n.kind in _DEGRADING for n in turn.notices):
            return "degraded"
        return "answered"

    def _number(self, turn: _Turn, ranked: Sequence[RankedArticle]) -> list[tuple[Source, str]]:
        """Number the sources for the prompt; their titles are fetched text, so untrusted."""
        allowed = {r.article.url for r in ranked}
        numbered = []
        for n, r in enumerate(ranked, start=1):
            title, found = neutralise(r.article.title, allowed)
            turn.neutralised += found
            label = source_label(r.article.source)
            revision, permalink = provenance(r.article)
            source = Source(
                n,
                title,
                r.article.url,
                label,
                r.score,
                parts=r.parts,
                revision=revision,
                permalink=permalink,
            )
            numbered.append((source, prompts.prompt_text(r.article)))
        return numbered

    # ----------------------------------------------------------------- steps

    async def _topics(self, turn: _Turn) -> list[str]:
        """Keywords from the LLM; without it, from the question's own content words."""
        recent = self._memory.recent(turn.message.conversation, turn.claim)
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
        conversation = turn.message.conversation
        try:
            turn.state = await self._memory.restore(conversation)
        except StoreError:
            _log.exception("could not restore conversation %s", conversation)
            turn.notices.append(Notice("memory_unavailable", NOT_RESTORED, self._memory_hint))
            turn.state = ConversationState(conversation=conversation)
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

    async def _embed_passages(
        self, sources: Sequence[tuple[Source, str]]
    ) -> dict[int, FloatArray] | None:
        """Each numbered source's passage vectors; None when the pool failed."""
        split = [(s.n, citations.passages(text)) for s, text in sources]
        texts = [p for _, parts in split for p in parts]
        if not texts:
            return {}
        try:
            vectors = await self._embeddings.embed(texts)
        except EmbeddingError:
            _log.warning("citations not checked: embedding the passages failed", exc_info=True)
            return None
        out, start = {}, 0
        for n, parts in split:
            out[n] = vectors[start : start + len(parts)]
            start += len(parts)
        return out

    async def _check_citations(
        self, body: str, passages: Awaitable[dict[int, FloatArray] | None]
    ) -> list[WeakCitation]:
        """The body's citations that their sources barely support (see bot.pipeline.citations)."""
        cited = citations.cited_sentences(body)
        vectors = await passages
        if not cited or vectors is None:
            return []
        try:
            sentence_vectors = await self._embeddings.embed([c.text for c in cited])
        except EmbeddingError:
            _log.warning("citations not checked: embedding the sentences failed", exc_info=True)
            return []
        weak = citations.weak(cited, sentence_vectors, vectors, self._settings.citations.threshold)
        if weak:
            _log.info("weak citations: %s", [(w.n, w.support) for w in weak])
        return weak

    async def _embed_question(self, question: str) -> FloatArray | None:
        try:
            vectors = await self._embeddings.embed([question])
            return np.asarray(vectors[0], dtype=np.float32)
        except EmbeddingError:
            _log.exception("embedding the question failed; ranking without dense scores")
            return None

    async def _rank(
        self,
        turn: _Turn,
        topics: Sequence[str],
        articles: Sequence[Article],
        question_vector: Awaitable[FloatArray | None],
    ) -> list[RankedArticle]:
        """Embed the articles, then fuse dense, lexical and source-order scores.

        This is the step that needs the embedding model, so it is where a turn waits for
        the model still loading in the background. Without vectors (the model or the pool
        failed) the dense scores are all zero, the ranking rests on BM25 and the sources'
        own order, and the reply says so.
        """
        if not articles:
            return []
        dense = np.zeros(len(articles), dtype=np.float32)
        try:
            vectors = await self._embeddings.embed([article_text(a) for a in articles])
        except EmbeddingError as error:
            _log.exception("embedding the articles failed; ranking without dense scores")
            turn.notices.append(Notice("ranking_unavailable", NOT_RANKED, operator=str(error)))
            vectors = None
        query = await question_vector
        if vectors is not None and query is not None:
            dense = vectors @ query
        config = self._settings.ranking
        return ranking.rank(
            articles,
            [float(d) for d in dense],
            ranking.query_terms(turn.question, topics),
            fusion=config.fusion,
            hn_share=config.hackernews_share,
        )

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
            body = nothing_found(fetched.unavailable)
            await turn.emit(body)
            return _Body(body, [])
        if turn.llm_error is None:
            streamed = await self._stream_answer(turn, state, sources, report)
            if streamed is not None:
                return streamed
        assert turn.llm_error is not None
        turn.notices.append(Notice("llm_unavailable", LLM_DOWN, operator=turn.llm_error.hint))
        # First sentences of fetched text: as untrusted as anything the model writes.
        listed = sources[:FALLBACK_SOURCES]
        body, found = neutralise(fallback_answer(listed), {s.url for s, _ in listed})
        turn.neutralised += found
        await turn.emit(body)
        return _Body(body, [s.n for s, _ in listed])

    async def _stream_answer(
        self,
        turn: _Turn,
        state: ConversationState,
        sources: Sequence[tuple[Source, str]],
        report: AnalysisReport | None,
    ) -> _Body | None:
        """Returns None when the LLM failed before saying anything (caller falls back)."""
        inputs = {
            "question": turn.question,
            "summary": state.summary or "(none)",
            "history": prompts.format_history([(t.question, t.answer or "") for t in state.turns])
            or "(none)",
            "sources": prompts.format_sources(sources),
            "analysis": prompts.describe_report(report),
            "notes": "\n".join(n.user for n in turn.notices) or "(none)",
        }
        answer_filter = AnswerFilter([s.n for s, _ in sources])
        safety = SafetyFilter([s.url for s, _ in sources])
        try:
            chunks = (chunk.text async for chunk in self._answer_chain.astream(inputs))
            async for text in stream_llm(chunks, self._settings.llm):
                await turn.emit(safety.feed(answer_filter.feed(text)))
            await turn.emit(safety.feed(answer_filter.flush()) + safety.flush())
        except LLMError as error:
            _log.warning("answer generation failed: %s", error)
            turn.llm_error = error
            if not "".join(turn.streamed).strip():
                return None
            await turn.emit(safety.feed(answer_filter.flush()) + safety.flush())
            turn.notices.append(Notice("answer_cut", ANSWER_CUT, operator=error.hint))
        finally:
            turn.neutralised += safety.neutralised
        body = "".join(turn.streamed).strip()
        if not body:
            # A model that streams only whitespace or a think block said nothing usable.
            body = "I could not write an answer from these sources; here they are."
            await turn.emit(body)
        return _Body(body, answer_filter.cited)


async def _both(first: Awaitable[_A], second: Awaitable[_B]) -> tuple[_A, _B]:
    """Run two steps concurrently; if one fails, the other is cancelled, not orphaned."""
    async with asyncio.TaskGroup() as group:
        a = group.create_task(_await(first))
        b = group.create_task(_await(second))
    return a.result(), b.result()


async def _await(awaitable: Awaitable[_T]) -> _T:
    return await awaitable
