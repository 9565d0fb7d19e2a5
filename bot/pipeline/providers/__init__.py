"""What differs between the LLM servers the bot can talk to, behind one small protocol.

``[llm].provider`` picks one: ``"ollama"`` (:mod:`bot.pipeline.providers.ollama`, the
default) or ``"openai"``, any server of OpenAI's chat completions API
(:mod:`bot.pipeline.providers.openai`: vLLM, llama.cpp's server, LM Studio, a LiteLLM
proxy). A provider builds the one LangChain chat model of the process and closes its
clients, translates its client library's errors into the project's
:class:`~bot.errors.LLMError` subclasses (with the fix for that server in their ``hint``),
checks at start-up that the server answers and serves the model, and maps the options a
single call may need onto its API. The pipeline sees only ``BaseChatModel`` and
:mod:`bot.pipeline.llm`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from bot.config import LLMSettings
from bot.errors import LLMError, LLMUnavailable

# What every server's failure tells the user when nothing better is known.
RETRY_HINT = "The language model returned an error; please try again in a moment."


def timed_out(settings: LLMSettings, server: str, exc: BaseException) -> LLMUnavailable:
    """A read from ``server`` (``"Ollama at URL"``, ...) took past ``[llm].timeout_s``."""
    return LLMUnavailable(
        f"{server} timed out after {settings.timeout_s:g}s: {exc!r}",
        hint=f"The language model did not answer within {settings.timeout_s:g} s; "
        "try again, or raise [llm].timeout_s.",
    )


def unreadable(settings: LLMSettings, exc: BaseException, check: str) -> LLMUnavailable:
    """Something answers at ``[llm].base_url``, but not as the provider speaks; ``check``
    says what to check (``"that [llm].base_url points at Ollama"``)."""
    where = settings.base_url
    return LLMUnavailable(
        f"unreadable reply from {where}: {exc!r}",
        hint=f"The language model at {where} sent a reply I could not read; check {check}.",
    )


class Provider(Protocol):
    """One LLM server's ways; built by :func:`provider_for` from ``[llm]``."""

    @property
    def settings(self) -> LLMSettings:
        """The ``[llm]`` it was made from."""
        ...

    def build(self) -> BaseChatModel:
        """The single chat model used for every call of the process."""
        ...

    async def close(self, llm: BaseChatModel) -> None:
        """Close the HTTP clients ``llm`` opened (safe to call once per model)."""
        ...

    def translate(self, exc: BaseException) -> LLMError | None:
        """The ``LLMError`` for an exception a call raised, or None if it is foreign."""
        ...

    async def check(self, session: aiohttp.ClientSession) -> str | None:
        """One line with the fix when the server is down or lacks the model; never raises."""
        ...

    def bind_options(
        self, *, max_tokens: int | None = None, json_schema: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Keyword arguments for ``llm.bind(**...)``: one call's token limit, and a JSON
        schema its reply must follow (structured output). Empty when neither is given."""
        ...

    def finish_reason(self, chunk: BaseMessage) -> str | None:
        """Why the model stopped, from the last chunk of a stream: ``"stop"``, ``"length"``
        (cut at the token limit) ...; None on the chunks before it."""
        ...


def provider_for(settings: LLMSettings) -> Provider:
    """The provider ``settings.provider`` names.

    Each module is imported only when chosen: the OpenAI client is not loaded for Ollama,
    nor Ollama's for an OpenAI-compatible server.
    """
    if settings.provider == "openai":
        from bot.pipeline.providers.openai import OpenAIProvider  # noqa: PLC0415

        return OpenAIProvider(settings)
    from bot.pipeline.providers.ollama import OllamaProvider  # noqa: PLC0415

    return OllamaProvider(settings)
