"""The keyword call: :data:`~bot.pipeline.prompts.TOPIC_PROMPT` to the model, asking for
:data:`~bot.pipeline.prompts.KEYWORD_SCHEMA`, within a token budget of its own.

A few keywords fit in a few dozen tokens, so the call gets ``[llm].keyword_max_tokens``
(sent to the server, and counted here too, as a server may ignore it), not the answer's
budget: a model that answers the question instead is cut short, not waited for. What
comes back is checked by :mod:`bot.pipeline.search_plan`, never trusted.

Not every server takes a JSON schema (llama-cpp-python's answers one with a 500): when the
structured call fails and the same call without it works, that turn gets its keywords
all the same, and after two such turns in a row the process stops sending the schema (one
could be a passing error; two in a row, a server that does not take it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import Runnable

from bot.config import LLMSettings
from bot.errors import LLMUnavailable
from bot.pipeline import prompts
from bot.pipeline.llm import call_options, complete_llm

_log = logging.getLogger(__name__)

# Turns in a row whose structured keyword call failed while the plain one worked, before
# the schema is no longer sent.
REFUSALS_TO_STOP = 2


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
        structured = call_options(
            settings, max_tokens=self._budget, json_schema=prompts.KEYWORD_SCHEMA
        )
        plain = call_options(settings, max_tokens=self._budget)
        text: Runnable[Any, str] = StrOutputParser()
        self._structured: Runnable[Any, str] | None = (
            prompts.TOPIC_PROMPT | llm.bind(**structured) | text
        )
        self._plain: Runnable[Any, str] = prompts.TOPIC_PROMPT | llm.bind(**plain) | text
        self._refused = 0  # structured calls failed in a row while plain ones worked

    async def ask(self, question: str, context: str, *, deadline: float | None) -> KeywordReply:
        """The reply to the keyword prompt for ``question`` (``context``: the recent
        conversation, maybe empty).

        Raises:
            LLMError: the model failed or was too slow (see :func:`complete_llm`).
        """
        inputs = {"question": question, "context": context}
        structured = self._structured
        if structured is not None:
            try:
                reply = await self._ask(structured, inputs, deadline)
            except LLMUnavailable as error:
                # Refused, or down: asking again without the schema tells the two apart.
                reply = await self._ask(self._plain, inputs, deadline)
                self._refused += 1
                if self._refused >= REFUSALS_TO_STOP and self._structured is not None:
                    self._structured = None
                    _log.warning(
                        "the LLM server at %s refused the keyword call's JSON schema (%s); "
                        "asking for keywords without it from now on",
                        self._settings.base_url,
                        error,
                    )
                return reply
            self._refused = 0
            return reply
        return await self._ask(self._plain, inputs, deadline)

    async def _ask(
        self, chain: Runnable[Any, str], inputs: dict[str, str], deadline: float | None
    ) -> KeywordReply:
        counted = _Counted(chain.astream(inputs), self._budget)
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
