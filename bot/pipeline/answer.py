"""Writing the answer: streamed from the model through the filters, or, when the model is
down, made from the best sources' sentences that answer the question best.

The model's output is untrusted: it goes through the answer filter (reasoning blocks, lines
copied from the prompt and invalid citations out) and the safety filter (links that are
not sources made inert, mentions neutralised) before the listener sees a character of it.

The answer is bounded: the prompt asks for ``[chat].answer_words`` words, and the stream
is cut at half as many again (small models overshoot a target they are given by far);
the call may generate ``[llm].max_tokens`` tokens (a model stopped there says
``done_reason: "length"``, and the answer says it was cut); and the stream is cut at
``[chat].max_answer_chars`` whatever the server does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple

from langchain_core.language_models import BaseChatModel

from bot.config import ChatSettings, LLMSettings
from bot.contract import Neutralised, Notice, SilentListener
from bot.domain import AnalysisReport, FetchResult
from bot.errors import LLMError, LLMTimeout
from bot.pipeline import prompts
from bot.pipeline.answer_filter import AnswerFilter
from bot.pipeline.layout import LayoutFilter, PromptLines
from bot.pipeline.llm import FinishReason, call_options, finish_reason, stream_llm
from bot.pipeline.repeats import RepeatGuard
from bot.pipeline.safety import SafetyFilter, neutralise
from bot.pipeline.turn import Numbered, Stopwatch, Turn
from bot.pipeline.wording import (
    ANSWER_CUT,
    ANSWER_ECHOED,
    ANSWER_LONG,
    ANSWER_SLOW,
    LLM_DOWN,
    LLM_SLOW,
    NOTHING_WRITTEN,
    fallback_answer,
    nothing_found,
)
from bot.store import ConversationState

_log = logging.getLogger(__name__)

# Without the model, the answer quotes a sentence of each of this many best sources.
FALLBACK_SOURCES = 3
# A lead-in with nothing after it ("The answer to this question is:") says nothing.
_LEAD_IN_WORDS = 12


QuotePicker = Callable[[Sequence[Numbered]], Awaitable[Mapping[int, str]]]
"""Which sentence of each source (by number) an answer the bot writes quotes; a source
it leaves out is quoted by its first sentence."""


class Body(NamedTuple):
    """The answer as streamed, the source numbers it cites, and whether the model wrote it
    (not the bot's own words: nothing found, or the sources listed when the model is
    down or wrote nothing usable)."""

    text: str
    cited: list[int]
    written: bool = False


class Draft(NamedTuple):
    """An answer written but not shown: its text, what it cites, what its safety filter
    made inert."""

    text: str
    cited: list[int]
    neutralised: Neutralised


class AnswerWriter:
    """Streams one turn's answer body; one instance serves every turn."""

    def __init__(self, llm: BaseChatModel, settings: LLMSettings, chat: ChatSettings) -> None:
        self._settings = settings
        self._chat = chat
        # Streamed without StrOutputParser: its per-chunk overhead (~0.3 ms) was measured
        # to be most of the streaming cost; the chunk's ``.text`` is the same string.
        self._prompt = prompts.SYNTHESIS_PROMPT.partial(words=str(chat.answer_words))
        self._chain = self._prompt | llm.bind(**call_options(settings))

    async def write(
        self,
        turn: Turn,
        state: ConversationState,
        sources: Sequence[Numbered],
        fetched: FetchResult,
        report: AnalysisReport | None,
        *,
        quotes: QuotePicker | None = None,
    ) -> Body:
        """Stream the answer body to the turn's listener; returns it and what it cites.

        ``quotes`` picks what the answer quotes of its sources when the bot writes it."""
        if not sources:
            body = nothing_found(fetched.unavailable)
            await turn.emit(body)
            return Body(body, [])
        if turn.llm_error is None:
            streamed = await self._stream(turn, state, sources, report, quotes=quotes)
            if streamed is not None:
                return streamed
        assert turn.llm_error is not None
        down = LLM_SLOW if isinstance(turn.llm_error, LLMTimeout) else LLM_DOWN
        turn.notices.append(Notice("llm_unavailable", down, operator=turn.llm_error.hint))
        # Sentences of fetched text: as untrusted as anything the model writes.
        listed = sources[:FALLBACK_SOURCES]
        picked = await quotes(listed) if quotes is not None else None
        body, found = neutralise(fallback_answer(listed, quotes=picked), {s.url for s, _ in listed})
        turn.neutralised += found
        await turn.emit(body)
        return Body(body, [s.n for s, _ in listed])

    async def _texts(
        self, inputs: Mapping[str, Any], ending: list[FinishReason]
    ) -> AsyncGenerator[str, None]:
        """The model's answer as text chunks; closing this closes the model's stream.

        Why the model stopped, when its last chunk says, is appended to ``ending``.
        """
        chunks = self._chain.astream(dict(inputs))
        try:
            async for chunk in chunks:
                reason = finish_reason(self._settings, chunk)
                if reason is not None:
                    ending.append(reason)
                yield chunk.text
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    async def _stream(
        self,
        turn: Turn,
        state: ConversationState,
        sources: Sequence[Numbered],
        report: AnalysisReport | None,
        *,
        quotes: QuotePicker | None,
        again: int | None = None,
    ) -> Body | None:
        """Returns None when the LLM failed before saying anything (the caller falls back).

        ``again``: the answer is a second one, asked for in that many words or fewer from
        the source that answers; it is not replaced by the sources when it says nothing.
        """
        question = turn.question if again is None else f"{turn.question}\n\n{prompts.AGAIN}"
        inputs = {
            "question": question,
            "summary": state.summary or "(none)",
            "history": prompts.format_history([(t.question, t.answer or "") for t in state.turns])
            or "(none)",
            "sources": prompts.format_sources(sources),
            "analysis": prompts.describe_report(report),
            "notes": "\n".join(n.user for n in turn.notices if n.user) or "(none)",
        }
        layout = LayoutFilter(self._prompt_lines(inputs, sources))
        answer_filter = AnswerFilter([s.n for s, _ in sources], layout)
        ending: list[FinishReason] = []
        safety = SafetyFilter([s.url for s, _ in sources])
        repeats = RepeatGuard()

        def clean(text: str) -> str:
            return safety.feed(repeats.feed(answer_filter.feed(text)))

        def rest() -> str:
            return safety.feed(repeats.feed(answer_filter.flush()) + repeats.flush())

        # Bounds on what the model may send, whatever the server does with num_predict.
        room, chunks_left = self._chat.max_answer_chars, self._settings.max_tokens
        words = WordBudget(int(self._chat.answer_words * WORDS_SLACK) if again is None else again)
        try:
            async with contextlib.aclosing(
                stream_llm(self._texts(inputs, ending), self._settings, deadline=turn.deadline)
            ) as texts:
                async for text in texts:
                    if not text:
                        # No token: OpenAI's first (role) and last (finish) chunks are empty.
                        continue
                    chunks_left -= 1
                    if chunks_left < 0 or len(text) > room:
                        if chunks_left >= 0:
                            await turn.emit(clean(text[:room]))
                        _log.warning(
                            "answer cut at its maximum length ([chat].max_answer_chars %d, "
                            "[llm].max_tokens %d) in %s",
                            self._chat.max_answer_chars,
                            self._settings.max_tokens,
                            turn.conversation,
                        )
                        hint = (
                            "The answer reached [chat].max_answer_chars; raise it, or lower "
                            "[chat].answer_words."
                        )
                        turn.notices.append(Notice("answer_cut", ANSWER_LONG, operator=hint))
                        break
                    kept = words.take(text)
                    if kept is not None:
                        await turn.emit(clean(kept))
                        self._cut_at_words(turn, again)
                        break
                    room -= len(text)
                    await turn.emit(clean(text))
                    if repeats.looped:
                        # The rest would be more of the same: stop the model here.
                        self._looped(turn)
                        break
            await turn.emit(rest() + safety.flush())
            if ending[-1:] == ["length"]:
                self._cut_at_token_limit(turn)
        except LLMError as error:
            _log.warning("answer generation failed: %s", error)
            turn.llm_error = error
            if not turn.shown:
                return None
            await turn.emit(rest() + safety.flush())
            cut = ANSWER_SLOW if isinstance(error, LLMTimeout) else ANSWER_CUT
            turn.notices.append(Notice("answer_cut", cut, operator=error.hint))
        finally:
            turn.neutralised += safety.neutralised
        self._copied(turn, layout)
        if said_nothing(turn.shown):
            if again is not None:
                return None
            return await self._sources_instead(turn, sources, quotes)
        return Body(turn.shown, answer_filter.cited, written=True)

    async def draft_again(
        self,
        turn: Turn,
        state: ConversationState,
        sources: Sequence[Numbered],
        report: AnalysisReport | None,
        words: int,
    ) -> Draft | None:
        """A second, short answer from the sources, written but not shown: for the caller to
        check before it shows it. None when the model failed, wrote nothing, or ran past
        ``words`` (a cut answer is not a finished one)."""
        aside = dataclasses.replace(
            turn,
            listener=SilentListener(),
            notices=[],
            llm_error=None,
            clock=Stopwatch(),
            streamed=[],
            neutralised=Neutralised(),
        )
        body = await self._stream(aside, state, sources, report, quotes=None, again=words)
        if body is None or aside.llm_error is not None:
            return None
        if any(n.kind == "answer_cut" for n in aside.notices):
            _log.info("the second answer ran past its %d words in %s", words, turn.conversation)
            return None
        return Draft(body.text, body.cited, aside.neutralised)

    async def _sources_instead(
        self, turn: Turn, sources: Sequence[Numbered], quotes: QuotePicker | None
    ) -> Body:
        """The answer when the model wrote nothing usable: the best sources, quoted."""
        turn.notices.append(
            Notice(
                "answer_empty",
                "",
                operator="the model's answer had nothing to show (empty, a lead-in, or lines "
                "copied from the prompt): the best sources are listed instead",
            )
        )
        listed = await self.list_sources(turn, sources, NOTHING_WRITTEN, quotes=quotes)
        # (No room even for one source only under a tiny [chat].max_answer_chars.)
        return listed or Body(turn.shown, [], written=True)

    async def list_sources(
        self,
        turn: Turn,
        sources: Sequence[Numbered],
        lead: str,
        *,
        quotes: QuotePicker | None = None,
    ) -> Body | None:
        """Add ``lead`` and a sentence of each best source (``quotes`` picks it; else its
        first), each cited, to the answer.

        As many of the best :data:`FALLBACK_SOURCES` as fit in what the answer's bounds
        (``[chat].answer_words`` with its slack, ``[chat].max_answer_chars``) leave after
        what was shown; None when not even one fits. What was shown stays (a stream only
        ever grows); the body is the bot's from here.
        """
        words_left = int(self._chat.answer_words * WORDS_SLACK) - len(turn.shown.split())
        chars_left = self._chat.max_answer_chars - len(turn.shown) - len("\n\n")
        listed = list(sources[:FALLBACK_SOURCES])
        picked = await quotes(listed) if quotes is not None else None
        while listed:
            text = fallback_answer(listed, lead, picked)
            if len(text.split()) <= words_left and len(text) <= chars_left:
                break
            listed.pop()
        if not listed:
            return None
        text, found = neutralise(text, {s.url for s, _ in listed})
        turn.neutralised += found
        await turn.emit(("\n\n" if turn.shown else "") + text)
        return Body(turn.shown, [s.n for s, _ in listed])

    def _prompt_lines(self, inputs: Mapping[str, Any], sources: Sequence[Numbered]) -> PromptLines:
        """The lines of this turn's prompt the answer must not copy, the worked example's
        sources and statistics among them."""
        system = self._prompt.format_messages(**inputs)[0].text
        sections = [inputs["sources"], inputs["analysis"], inputs["notes"]]
        sections += [prompts.ANSWER_EXAMPLE_SHOWN, prompts.ANSWER_EXAMPLE_STATISTICS]
        return PromptLines.of(system, sections, [(s.n, s.title) for s, _ in sources])

    @staticmethod
    def _looped(turn: Turn) -> None:
        _log.warning("answer stopped: the model began writing it again in %s", turn.conversation)
        hint = (
            "the model wrote a sentence of its answer a second time (a loop): the answer was "
            "stopped there; small models loop, a larger one seldom does"
        )
        turn.notices.append(Notice("answer_repeat", "", operator=hint))

    def _cut_at_words(self, turn: Turn, again: int | None) -> None:
        if again is not None:
            # Not news: a second answer that ran past its words is dropped (draft_again).
            turn.notices.append(Notice("answer_cut", ""))
            return
        limit = int(self._chat.answer_words * WORDS_SLACK)
        _log.warning(
            "answer cut at %d words (1.5 x [chat].answer_words) in %s", limit, turn.conversation
        )
        hint = (
            f"The answer passed {limit} words, half again the {self._chat.answer_words} the "
            "prompt asks for; raise [chat].answer_words to allow longer answers."
        )
        turn.notices.append(Notice("answer_cut", ANSWER_LONG, operator=hint))

    def _cut_at_token_limit(self, turn: Turn) -> None:
        _log.warning(
            "answer cut at the token limit ([llm].max_tokens %d) in %s",
            self._settings.max_tokens,
            turn.conversation,
        )
        if not any(n.kind == "answer_cut" for n in turn.notices):
            hint = (
                f"The model reached [llm].max_tokens ({self._settings.max_tokens}) before "
                "it finished; raise it, or lower [chat].answer_words."
            )
            turn.notices.append(Notice("answer_cut", ANSWER_LONG, operator=hint))

    @staticmethod
    def _copied(turn: Turn, layout: LayoutFilter) -> None:
        """Log what the layout filter dropped; an echo of the instructions is a notice."""
        if not layout.dropped:
            return
        _log.info(
            "dropped %d line(s) the model copied from its prompt in %s: %r",
            len(layout.dropped),
            turn.conversation,
            layout.dropped[:5],
        )
        if layout.echoed:
            turn.notices.append(
                Notice(
                    "answer_echo",
                    ANSWER_ECHOED,
                    operator=f"the model echoed {layout.echoed_lines} lines of the system "
                    "prompt; a chat (instruct) model follows it, a base model does not.",
                )
            )


def said_nothing(body: str) -> bool:
    """Whether an answer has nothing to read: empty, only marks, or a lone lead-in line."""
    if not any(ch.isalnum() for ch in body):
        return True
    return body.endswith(":") and "\n" not in body and len(body.split()) <= _LEAD_IN_WORDS


# How far past [chat].answer_words an answer may run before the stream is cut.
WORDS_SLACK = 1.5


class WordBudget:
    """Counts the words of a stream, chunk by chunk, up to a limit.

    A word is counted where it starts, so one split over two chunks (``" chat"``,
    ``"bot"``) counts once.
    """

    def __init__(self, limit: int) -> None:
        self._left = limit
        self._after_space = True

    def take(self, text: str) -> str | None:
        """None while ``text`` fits; else the part of it before the first word too many."""
        for i, char in enumerate(text):
            if char.isspace():
                self._after_space = True
                continue
            if self._after_space:
                self._after_space = False
                if self._left == 0:
                    return text[:i].rstrip()
                self._left -= 1
        return None
