"""The pipeline's one door to the language model: building, checking and closing it, and
every call's deadlines.

The pipeline only sees a LangChain ``BaseChatModel`` and the project's own
:class:`~bot.errors.LLMError` subclasses. What differs between servers (Ollama, or an
OpenAI-compatible one, as ``[llm].provider`` says) lives in :mod:`bot.pipeline.providers`:
the functions here hand each job to the configured provider.

Every call has deadlines of its own, because a server's per-read timeout does not bound a
call: a model that trickles one chunk every few seconds never trips it. A streamed call
must send its first chunk within ``[llm].first_token_timeout_s`` and finish within
``[llm].call_timeout_s``; both are cut short by the turn's own deadline, when given (a
loop time). Past one, :class:`~bot.errors.LLMTimeout` is raised and the stream closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, Literal

import aiohttp
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from bot.config import LLMSettings
from bot.errors import LLMError, LLMTimeout
from bot.pipeline.providers import Provider, provider_for

__all__ = [
    "FinishReason",
    "Provider",
    "build_chat_model",
    "call_options",
    "check_llm",
    "close_chat_model",
    "complete_llm",
    "finish_reason",
    "provider_for",
    "stream_llm",
    "translate_llm_error",
]


def build_chat_model(settings: LLMSettings) -> BaseChatModel:
    """Create the single chat model used for every call of the process."""
    return provider_for(settings).build()


def call_options(
    settings: LLMSettings,
    *,
    max_tokens: int | None = None,
    json_schema: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``.bind()`` arguments of one kind of call: its own token limit
    (``[llm].max_tokens`` when not given) and, optionally, a JSON schema for its reply, as
    the configured server takes them."""
    limit = settings.max_tokens if max_tokens is None else max_tokens
    return provider_for(settings).bind_options(max_tokens=limit, json_schema=json_schema)


FinishReason = Literal["stop", "length"]


def finish_reason(settings: LLMSettings, chunk: BaseMessage) -> FinishReason | None:
    """Why the model stopped, from a streamed chunk: ``"length"`` when its token limit cut
    it, ``"stop"`` when it ended by itself, None on a chunk that does not say."""
    reason = provider_for(settings).finish_reason(chunk)
    if reason == "length":
        return "length"
    if reason == "stop":
        return "stop"
    return None


async def close_chat_model(llm: BaseChatModel, settings: LLMSettings) -> None:
    """Close the HTTP clients of a model :func:`build_chat_model` made."""
    await provider_for(settings).close(llm)


def translate_llm_error(exc: BaseException, settings: LLMSettings) -> LLMError | None:
    """Map an exception raised by a model call to an ``LLMError``, or None if foreign."""
    return provider_for(settings).translate(exc)


async def check_llm(session: aiohttp.ClientSession, settings: LLMSettings) -> str | None:
    """Ask the server which models it serves; return a one-line warning if it will not work.

    Runs once at start-up so the operator learns about a missing model immediately,
    not at the first question. Never raises.
    """
    return await provider_for(settings).check(session)


async def complete_llm(
    chunks: AsyncIterator[str], settings: LLMSettings, *, deadline: float | None = None
) -> str:
    """The whole text of a streamed call, within the same deadlines as :func:`stream_llm`.

    Streamed rather than awaited whole, so a model that never starts is given up on after
    ``[llm].first_token_timeout_s``, not after the whole call's time.

    Raises:
        LLMTimeout, LLMUnavailable, ModelNotFound: see :func:`stream_llm`.
    """
    async with contextlib.aclosing(stream_llm(chunks, settings, deadline=deadline)) as texts:
        return "".join([text async for text in texts])


async def stream_llm(
    chunks: AsyncIterator[str], settings: LLMSettings, *, deadline: float | None = None
) -> AsyncGenerator[str, None]:
    """Pass a streamed answer through, within its deadlines; client errors become
    ``LLMError``. The stream is closed however this ends.

    Raises:
        LLMTimeout: no first chunk within ``[llm].first_token_timeout_s``, or the stream
            not over within ``[llm].call_timeout_s`` or by ``deadline``.
        LLMUnavailable, ModelNotFound: see :func:`translate_llm_error`.
    """
    loop = asyncio.get_running_loop()
    total = _call_limit(settings, deadline)
    first = min(loop.time() + settings.first_token_timeout_s, total)
    started = False
    try:
        while True:
            limit = total if started else first
            try:
                async with asyncio.timeout_at(limit) as window:
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                if window.expired():
                    what = "to finish its answer" if started else "to start answering"
                    raise _timeout(settings, what) from exc
                raise
            started = True
            yield chunk
    except LLMError:
        raise
    except Exception as exc:
        error = translate_llm_error(exc, settings)
        if error is None:
            raise
        raise error from exc
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def _call_limit(settings: LLMSettings, deadline: float | None) -> float:
    own = asyncio.get_running_loop().time() + settings.call_timeout_s
    return min(own, deadline if deadline is not None else math.inf)


def _timeout(settings: LLMSettings, what: str) -> LLMTimeout:
    return LLMTimeout(
        f"the model {settings.model!r} at {settings.base_url} took too long {what}",
        hint=(
            f"The language model took too long {what}; use a faster model, or raise "
            "[llm].first_token_timeout_s, [llm].call_timeout_s or [chat].turn_timeout_s."
        ),
    )
