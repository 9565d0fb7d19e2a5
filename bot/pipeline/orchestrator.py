"""The script of one research turn, composed from the agents and the pipeline's steps.

    question ─► keywords ─┬─► fetch: Wikipedia ∥ Hacker News ─┬─► analysis (subprocess) ─┬─► answer
                (LLM)     └─► restore conversation (store) ───┘   embed + rank (pool) ─────┘  (LLM)
    then, in the background: save the answer ─► summarise older turns when the history is long

:meth:`Pipeline.answer` is the error boundary for one turn: whatever goes wrong, it returns
a :class:`~bot.contract.Reply` (status ``failed`` and a friendly line, never exception
text) and the details go to the log. Expected failures degrade the turn instead: a source
that is down becomes a notice, a failed analysis or memory is skipped, and an unreachable
LLM turns the answer into the best sources, each quoted by its sentence closest to the
question. Each failure gives a notice with a user line and, where there is a fix, an
operator hint.

The steps: the keywords (here), the memory around the turn (:mod:`.memory`), ranking and
citation checks (:mod:`.relevance`), and the answer itself (:mod:`.answer`). The intake
has already stored the question (its claim) before the turn starts. Fetched text and the
model's output are untrusted: before any adapter sees them, links that are not among the
turn's sources are made inert and mention tokens neutralised (:mod:`bot.pipeline.safety`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel

from bot.agents.analysis import AnalysisAgent
from bot.agents.embeddings import FloatArray
from bot.agents.fetch import FetchAgent, provenance
from bot.config import Settings
from bot.contract import InboundMessage, Notice, Reply, Source, Status, TurnListener
from bot.core.urls import redact
from bot.domain import (
    SOURCE_LABELS,
    AnalysisReport,
    Article,
    FetchResult,
    RankedArticle,
    source_label,
)
from bot.errors import AnalysisError, LLMError, StoreError
from bot.pipeline import citations, prompts
from bot.pipeline.answer import WORDS_SLACK, AnswerWriter, Body
from bot.pipeline.keyword_call import KeywordCall, KeywordReply
from bot.pipeline.keywords import reply_keywords
from bot.pipeline.memory import RECENT_TURNS, Memory
from bot.pipeline.relevance import CitationCheck, PassageVectors, Relevance
from bot.pipeline.safety import neutralise
from bot.pipeline.search_plan import SearchPlan, plan_search, ranking_texts, topic_question
from bot.pipeline.turn import Numbered, Turn
from bot.pipeline.wording import (
    ANSWER_BROKEN,
    ASKED_AGAIN,
    EMPTY_HINT,
    FAILURE_LINE,
    NOT_RESTORED,
    NOT_SAVED,
    TURN_SLOW,
    UNCITED,
    UNCITED_ATTRIBUTED,
    UNMATCHED,
    question_cut_line,
    unavailable_line,
)
from bot.store import Claim, ConversationState

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_A = TypeVar("_A")
_B = TypeVar("_B")

LANGUAGE_MODEL = "language model"
# Fewer words than this left in the answer's bounds: no second answer, the sources instead.
AGAIN_MIN_WORDS = 25
# How long past its deadline a turn may run before it is stopped from outside.
BACKSTOP_S = 2.0
# A notice of one of these kinds means the reply is missing something: ``degraded``.
_DEGRADING = frozenset(
    {
        "source_unavailable",
        "memory_unavailable",
        "llm_unavailable",
        "answer_cut",
        "ranking_unavailable",
        "answer_uncited",
        "answer_again",
        "answer_echo",
        "answer_repeat",
        "answer_empty",
        "no_sources",
    }
)


class Pipeline:
    """Answers questions; one instance serves every adapter and conversation."""

    def __init__(
        self,
        *,
        settings: Settings,
        llm: BaseChatModel,
        fetcher: FetchAgent,
        memory: Memory,
        relevance: Relevance,
        analysis: AnalysisAgent | None,
    ) -> None:
        self._settings = settings
        self._fetcher = fetcher
        self._memory = memory
        self._relevance = relevance
        self._analysis = analysis
        self._keywords = KeywordCall(llm, settings.llm)
        self._writer = AnswerWriter(llm, settings.llm, settings.chat)

    @property
    def memory(self) -> Memory:
        return self._memory

    @property
    def _memory_hint(self) -> str:
        return (
            f"The memory database {redact(self._settings.memory.database)} failed (see the "
            "log); "
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
        turn = Turn(message, " ".join(message.text.split()), listener, claim)
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
            shown = turn.shown
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

    async def _answer(self, turn: Turn) -> Reply:
        if not turn.question:
            return Reply(
                question="", body=EMPTY_HINT, conversation=turn.conversation, status="failed"
            )
        limit = self._settings.chat.max_question_chars
        if len(turn.question) > limit:
            turn.notices.append(
                Notice("question_cut", question_cut_line(len(turn.question), limit))
            )
            turn.question = turn.question[:limit].rstrip()
        if turn.claim is None:
            turn.notices.append(Notice("memory_unavailable", NOT_SAVED, self._memory_hint))
        async with self._memory.turn(turn.conversation):
            loop = asyncio.get_running_loop()
            turn.deadline = loop.time() + self._settings.chat.turn_timeout_s
            try:
                # The steps keep to the deadline themselves; this is the backstop for one
                # that does not, so the conversation always moves on.
                async with asyncio.timeout_at(turn.deadline + BACKSTOP_S) as window:
                    return await turn.clock.time("total_s", self._run(turn))
            except TimeoutError:
                if not window.expired():
                    raise
                return self._overdue(turn)

    def _overdue(self, turn: Turn) -> Reply:
        """The reply of a turn stopped by its backstop: what was shown, with a notice."""
        _log.error(
            "turn in %s stopped after [chat].turn_timeout_s (%g s) and its backstop",
            turn.conversation,
            self._settings.chat.turn_timeout_s,
        )
        turn.notices.append(Notice("answer_cut", TURN_SLOW, "[chat].turn_timeout_s"))
        shown = turn.shown
        reply = Reply(
            question=turn.question,
            body=shown or FAILURE_LINE,
            conversation=turn.conversation,
            status="degraded" if shown else "failed",
            notices=tuple(turn.notices),
            timings=turn.clock.laps,
        )
        if shown:
            self._memory.remember(turn.conversation, turn.claim, reply)
        return reply

    async def _run(self, turn: Turn) -> Reply:
        recent = await self._recent(turn)
        previous = topic_question([q for q, _ in recent])
        # The question's vector does not depend on the keywords: it is computed while the
        # keyword call is out, so only the articles' embedding is left on the critical path.
        question_vector = asyncio.create_task(
            self._relevance.embed_question(*ranking_texts(turn.question, previous))
        )
        try:
            return await self._phases(turn, recent, question_vector)
        finally:
            question_vector.cancel()  # a no-op once it is done

    async def _phases(
        self,
        turn: Turn,
        recent: list[tuple[str, str]],
        question_vector: asyncio.Task[FloatArray | None],
    ) -> Reply:
        await turn.listener.on_progress("Choosing search keywords")
        plan = await turn.clock.time("topics_s", self._topics(turn, recent))
        topics = list(plan.topics)

        await turn.listener.on_progress(
            f"Searching {' and '.join(SOURCE_LABELS.values())} for: {', '.join(plan.search)}"
        )
        if self._analysis is not None:
            self._analysis.prepare()  # its interpreter starts while we wait on the network
        fetched, state = await turn.clock.time(
            "fetch_s", _both(self._fetcher.fetch(plan.search), self._restore(turn))
        )
        articles = list(fetched.articles)
        for name in fetched.unavailable:
            turn.notices.append(
                Notice("source_unavailable", unavailable_line(name), fetched.failure(name))
            )

        if articles:  # with none, there is nothing to analyse or rank, and nothing to say
            loading = " (the embedding model is still loading)" if self._relevance.loading else ""
            count = f"{len(articles)} article{'' if len(articles) == 1 else 's'}"
            await turn.listener.on_progress(f"Analysing and ranking {count}{loading}")
        report, ranked = await _both(
            turn.clock.time("analysis_s", self._analyze(articles, topics)),
            turn.clock.time(
                "embed_s", self._relevance.rank(turn, plan.lexical, articles, question_vector)
            ),
        )
        sources = self._number(turn, ranked[: self._settings.chat.max_sources_in_prompt])
        if not sources:
            turn.notices.append(
                Notice("no_sources", "", operator=f"nothing found for: {', '.join(topics)}")
            )

        await turn.listener.on_progress("Writing the answer")
        # The passages are known now: they are embedded while the answer is written.
        check = self._relevance.checks_citations and bool(sources)
        passages = asyncio.create_task(self._relevance.embed_passages(sources)) if check else None
        # What the bot quotes of its sources when it writes the answer itself.
        quotes = functools.partial(self._relevance.quotes, question=question_vector)
        try:
            body = await turn.clock.time(
                "synthesis_s",
                self._writer.write(turn, state, sources, fetched, report, quotes=quotes),
            )
            # Only the model's words are checked: the bot's own lines quote their sources.
            checked = (
                await turn.clock.time(
                    "citations_s",
                    self._relevance.check_citations(body.text, passages),
                )
                if passages is not None and body.written
                else CitationCheck([], [])
            )
        finally:
            if passages is not None:
                passages.cancel()
        cut = any(n.kind == "answer_cut" for n in turn.notices)
        # (A cut answer may not have reached its first citation: the cut is the news.)
        cites_nothing = body.written and not body.cited and not cut
        again = (
            await self._answer_again(turn, state, sources, report, passages)
            if cites_nothing and checked.unmatched
            else None
        )
        if again is not None:
            body, checked = again
            hint = (
                "no sentence of the model's answer matched a source; asked again, it wrote "
                "one that does, shown after it"
            )
            turn.notices.append(Notice("answer_again", "", operator=hint))
        elif cites_nothing:
            listed = (
                # No sentence of it matched a source: the reader gets what the sources say.
                await self._writer.list_sources(turn, sources, UNMATCHED, quotes=quotes)
                if checked.unmatched
                else None
            )
            if listed is not None:
                body = listed
                hint = "no sentence matched a source; the best sources were listed after it"
                turn.notices.append(Notice("answer_uncited", "", operator=hint))
            else:
                uncited = UNCITED_ATTRIBUTED if checked.attributed else UNCITED
                hint = (
                    "no sentence matched a source, and the answer's length bounds left no "
                    "room to list the sources after it"
                    if checked.unmatched
                    else f"{len(checked.attributed)} sentence(s) attributed by the bot"
                )
                turn.notices.append(Notice("answer_uncited", uncited, operator=hint))
        cited = set(body.cited) | {a.n for a in checked.attributed}
        reply = Reply(
            question=turn.question,
            body=body.text,
            conversation=turn.conversation,
            status=self._status(turn, sources, fetched),
            sources=tuple(dataclasses.replace(s, cited=s.n in cited) for s, _ in sources),
            notices=tuple(turn.notices),
            topics=tuple(topics),
            unavailable=fetched.unavailable + ((LANGUAGE_MODEL,) if turn.llm_error else ()),
            neutralised=turn.neutralised,
            timings=turn.clock.laps,
            weak_citations=tuple(checked.weak),
            attributions=tuple(checked.attributed),
        )
        self._memory.remember(turn.conversation, turn.claim, reply)
        return reply

    async def _answer_again(
        self,
        turn: Turn,
        state: ConversationState,
        sources: Sequence[Numbered],
        report: AnalysisReport | None,
        passages: Awaitable[PassageVectors | None] | None,
    ) -> tuple[Body, CitationCheck] | None:
        """When no sentence of the answer matched a source: ask the model once more, in
        what the answer's bounds leave, and show the second answer after the first if its
        sentences match the sources (the stream only grows). None: it did not, or there
        was no room; the caller lists the sources instead.

        Small models answer wrongly now and then, not always on the same question: asked
        again, SmolLM2-135M wrote a matching answer in 4 of 19 such turns of two live runs
        (README).
        """
        chat = self._settings.chat
        words = int(chat.answer_words * WORDS_SLACK) - len(f"{turn.shown} {ASKED_AGAIN}".split())
        if passages is None or turn.llm_error is not None or words < AGAIN_MIN_WORDS:
            return None
        draft = await turn.clock.time(
            "again_s", self._writer.draft_again(turn, state, sources, report, words)
        )
        if draft is None:
            return None
        text = f"\n\n{ASKED_AGAIN}\n{draft.text}"
        if len(turn.shown) + len(text) > chat.max_answer_chars:
            return None
        checked = await self._relevance.check_citations(draft.text, passages)
        made = sum(len(c.numbers) for c in citations.cited_sentences(draft.text))
        if not checked.attributed and made <= len(checked.weak):
            _log.info("the second answer matched no source either in %s", turn.conversation)
            return None
        turn.neutralised += draft.neutralised
        await turn.emit(text)
        return Body(turn.shown, draft.cited, written=True), checked

    @staticmethod
    def _status(turn: Turn, sources: Sequence[Numbered], fetched: FetchResult) -> Status:
        if not sources and len(fetched.unavailable) == len(SOURCE_LABELS):
            return "failed"  # nothing to answer from, and not because nothing exists
        if any(n.kind in _DEGRADING for n in turn.notices):
            return "degraded"
        return "answered"

    @staticmethod
    def _number(turn: Turn, ranked: Sequence[RankedArticle]) -> list[Numbered]:
        """Number the sources for the prompt; their titles are fetched text, so untrusted."""
        allowed = {r.article.url for r in ranked}
        numbered = []
        for n, r in enumerate(ranked, start=1):
            title, found = neutralise(r.article.title, allowed)
            turn.neutralised += found
            revision, permalink = provenance(r.article)
            source = Source(
                n,
                title,
                r.article.url,
                source_label(r.article.source),
                r.score,
                parts=r.parts,
                revision=revision,
                permalink=permalink,
            )
            numbered.append((source, prompts.prompt_text(r.article)))
        return numbered

    # ----------------------------------------------------------------- steps

    async def _recent(self, turn: Turn) -> list[tuple[str, str]]:
        """The conversation's last (question, answer) pairs, oldest first."""
        recent = list(self._memory.recent(turn.conversation, turn.claim))
        if not recent:
            # A cold cache (a new conversation, or a restart): ask the store, so a
            # follow-up in a resumed conversation still resolves. Phase 1 reuses the state.
            state = await self._restore(turn)
            recent = [(t.question, t.answer or "") for t in state.turns[-RECENT_TURNS:]]
        return recent

    async def _topics(self, turn: Turn, recent: list[tuple[str, str]]) -> SearchPlan:
        """The searches: the model's keywords that pass a check, and the question's words."""
        context = prompts.format_history(recent, max_chars=1500) if recent else ""
        try:
            reply = await self._keywords.ask(turn.question, context, deadline=turn.deadline)
        except LLMError as error:
            # Remembered so the answer step falls back at once instead of failing again.
            _log.warning("keyword extraction failed: %s", error)
            turn.llm_error = error
            reply = KeywordReply("")
        # The model's own words, for whoever studies what a model makes of the prompt.
        _log.debug("keyword reply to %r: %r", turn.question, reply.text)
        plan = plan_search(
            reply_keywords(reply.text, truncated=reply.truncated),
            turn.question,
            previous=topic_question([q for q, _ in recent]),
            context=context,
        )
        if plan.rejected or reply.truncated:
            _log.info(
                "keyword reply %.200r%s: not used as is: %s",
                reply.text,
                " (cut at [llm].keyword_max_tokens)" if reply.truncated else "",
                plan.rejected,
            )
        return plan

    async def _restore(self, turn: Turn) -> ConversationState:
        """The conversation from the store, loaded at most once per turn."""
        if turn.state is not None:
            return turn.state
        try:
            turn.state = await self._memory.restore(turn.conversation)
        except StoreError:
            _log.exception("could not restore conversation %s", turn.conversation)
            turn.notices.append(Notice("memory_unavailable", NOT_RESTORED, self._memory_hint))
            turn.state = ConversationState(conversation=turn.conversation)
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


async def _both(first: Awaitable[_A], second: Awaitable[_B]) -> tuple[_A, _B]:
    """Run two steps concurrently; if one fails, the other is cancelled, not orphaned."""
    async with asyncio.TaskGroup() as group:
        a = group.create_task(_await(first))
        b = group.create_task(_await(second))
    return a.result(), b.result()


async def _await(awaitable: Awaitable[_T]) -> _T:
    return await awaitable
