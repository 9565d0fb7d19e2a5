"""Writing the answer: streamed from the model through the filters, or, when the model is
down, made from the best sources' first sentences.

The model's output is untrusted: it goes through the answer filter (invalid citations and
reasoning blocks out) and the safety filter (links that are not sources made inert,
mentions neutralised) before the listener sees a character of it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, NamedTuple

from langchain_core.language_models import BaseChatModel

from bot.config import ChatSettings, LLMSettings
from bot.contract import Notice
from bot.domain import AnalysisReport, FetchResult
from bot.errors import LLMError, LLMTimeout
from bot.pipeline import prompts
from bot.pipeline.answer_filter import AnswerFilter
from bot.pipeline.llm import stream_llm
from bot.pipeline.safety import SafetyFilter, neutralise
from bot.pipeline.turn import Numbered, Turn
from bot.pipeline.wording import (
    ANSWER_CUT,
    ANSWER_LONG,
    ANSWER_SLOW,
    LLM_DOWN,
    LLM_SLOW,
    fallback_answer,
    nothing_found,
)
from bot.store import ConversationState

_log = logging.getLogger(__name__)

# Without the model, the answer is the first sentences of this many best sources.
FALLBACK_SOURCES = 3
SAID_NOTHING = "I could not write an answer from these sources; here they are."


class Body(NamedTuple):
    """The answer as streamed, and the source numbers it cites."""

    text: str
    cited: list[int]


class AnswerWriter:
    """Streams one turn's answer body; one instance serves every turn."""

    def __init__(self, llm: BaseChatModel, settings: LLMSettings, chat: ChatSettings) -> None:
        self._settings = settings
        self._chat = chat
        # Streamed without StrOutputParser: its per-chunk overhead (~0.3 ms) was measured
        # to be most of the streaming cost; the chunk's ``.text`` is the same string.
        self._chain = prompts.SYNTHESIS_PROMPT | llm

    async def write(
        self,
        turn: Turn,
        state: ConversationState,
        sources: Sequence[Numbered],
        fetched: FetchResult,
        report: AnalysisReport | None,
    ) -> Body:
        """Stream the answer body to the turn's listener; returns it and what it cites."""
        if not sources:
            body = nothing_found(fetched.unavailable)
            await turn.emit(body)
            return Body(body, [])
        if turn.llm_error is None:
            streamed = await self._stream(turn, state, sources, report)
            if streamed is not None:
                return streamed
        assert turn.llm_error is not None
        down = LLM_SLOW if isinstance(turn.llm_error, LLMTimeout) else LLM_DOWN
        turn.notices.append(Notice("llm_unavailable", down, operator=turn.llm_error.hint))
        # First sentences of fetched text: as untrusted as anything the model writes.
        listed = sources[:FALLBACK_SOURCES]
        body, found = neutralise(fallback_answer(listed), {s.url for s, _ in listed})
        turn.neutralised += found
        await turn.emit(body)
        return Body(body, [s.n for s, _ in listed])

    async def _texts(self, inputs: Mapping[str, Any]) -> AsyncGenerator[str, None]:
        """The model's answer as text chunks; closing this closes the model's stream."""
        chunks = self._chain.astream(dict(inputs))
        try:
            async for chunk in chunks:
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
    ) -> Body | None:
        """Returns None when the LLM failed before saying anything (the caller falls back)."""
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
        # Bounds on what the model may send, whatever the server does with num_predict.
        room, chunks_left = self._chat.max_answer_chars, self._settings.max_tokens
        try:
            async with contextlib.aclosing(
                stream_llm(self._texts(inputs), self._settings, deadline=turn.deadline)
            ) as texts:
                async for text in texts:
                    if not text:
                        # No token: OpenAI's first (role) and last (finish) chunks are empty.
                        continue
                    chunks_left -= 1
                    if chunks_left < 0 or len(text) > room:
                        if chunks_left >= 0:
                            await turn.emit(safety.feed(answer_filter.feed(text[:room])))
                        _log.warning(
                            "answer cut at its maximum length ([chat].max_answer_chars %d, "
                            "[llm].max_tokens %d) in %s",
                            self._chat.max_answer_chars,
                            self._settings.max_tokens,
                            turn.conversation,
                        )
                        turn.notices.append(Notice("answer_cut", ANSWER_LONG))
                        break
                    room -= len(text)
                    await turn.emit(safety.feed(answer_filter.feed(text)))
            await turn.emit(safety.feed(answer_filter.flush()) + safety.flush())
        except LLMError as error:
            _log.warning("answer generation failed: %s", error)
            turn.llm_error = error
            if not turn.shown:
                return None
            await turn.emit(safety.feed(answer_filter.flush()) + safety.flush())
            cut = ANSWER_SLOW if isinstance(error, LLMTimeout) else ANSWER_CUT
            turn.notices.append(Notice("answer_cut", cut, operator=error.hint))
        finally:
            turn.neutralised += safety.neutralised
        body = turn.shown
        if not body:
            # A model that streams only whitespace or a think block said nothing usable.
            body = SAID_NOTHING
            await turn.emit(body)
        return Body(body, answer_filter.cited)
