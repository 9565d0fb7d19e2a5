"""The keyword call: :data:`~bot.pipeline.prompts.TOPIC_PROMPT` to the model, asking for
:data:`~bot.pipeline.prompts.KEYWORD_SCHEMA`, within a token budget of its own.

A few keywords fit in a few dozen tokens, so the call gets ``[llm].keyword_max_tokens``
(sent to the server, and counted here too, as a server may ignore it), not the answer's
budget: a model that answers the question instead is cut short, not waited for. What
comes back is checked by :mod:`bot.pipeline.search_plan`, never trusted.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import Runnable

from bot.config import LLMSettings
from bot.pipeline import prompts
from bot.pipeline.llm import call_options, complete_llm


@dataclass(frozen=True, slots=True)
class KeywordReply:
    """The model's reply and whether the token budget cut it off."""

    text: str
    truncated: bool = False


class KeywordCall:
    """Asks the model for a question's search keywords; one instance per process."""

    def __init__(self, llm: BaseChatModel, settings: LLMSettings) -> None:
        self._settings = settings
        self._budget = settings.keyword_max_tokens
        options = call_options(
            settings, max_tokens=self._budget, json_schema=prompts.KEYWORD_SCHEMA
        )
        text: Runnable[Any, str] = StrOutputParser()
        self._chain = prompts.TOPIC_PROMPT | llm.bind(**options) | text

    async def ask(self, question: str, context: str, *, deadline: float | None) -> KeywordReply:
        """The reply to the keyword prompt for ``question`` (``context``: the recent
        conversation, maybe empty).

        Raises:
            LLMError: the model failed or was too slow (see :func:`complete_llm`).
        """
        chunks = self._chain.astream({"question": question, "context": context})
        counted = _Counted(chunks, self._budget)
        text = await complete_llm(counted.stream(), self._settings, deadline=deadline)
        return KeywordReply(text, truncated=counted.spent >= self._budget)


class _Counted:
    """Passes a stream through until ``budget`` non-empty chunks (about one token each)."""

    def __init__(self, chunks: AsyncIterator[str], budget: int) -> None:
        self._chunks = chunks
        self._budget = budget
        self.spent = 0

    async def stream(self) -> AsyncGenerator[str, None]:
        try:
            async for chunk in self._chunks:
                if chunk:
                    self.spent += 1
                yield chunk
                if self.spent >= self._budget:
                    return
        finally:
            close = getattr(self._chunks, "aclose", None)
            if close is not None:
                await close()
