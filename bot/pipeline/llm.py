"""The one place that knows how ``ChatOllama`` is built, checked, closed and how it fails.

The pipeline only sees a LangChain ``BaseChatModel`` and the project's own
:class:`~bot.errors.LLMError` subclasses; ``httpx`` and ``ollama`` errors are translated
here, each into a one-line hint that tells the user how to fix it.

Every call has deadlines of its own, because a server's per-read timeout does not bound a
call: a model that trickles one chunk every few seconds never trips it. A streamed call
must send its first chunk within ``[llm].first_token_timeout_s`` and finish within
``[llm].call_timeout_s``; both are cut short by the turn's own deadline, when given (a
loop time). Past one, :class:`~bot.errors.LLMTimeout` is raised and the stream closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

import aiohttp
import httpx
import ollama
from langchain_ollama import ChatOllama

from bot.config import LLMSettings
from bot.errors import LLMError, LLMTimeout, LLMUnavailable, ModelNotFound

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


def build_chat_model(settings: LLMSettings) -> ChatOllama:
    """Create the single ``ChatOllama`` client used for every call of the process."""
    extra: dict[str, Any] = {"num_predict": settings.max_tokens}
    if settings.context_tokens:
        extra["num_ctx"] = settings.context_tokens
    return ChatOllama(
        base_url=settings.base_url,
        model=settings.model,
        temperature=settings.temperature,
        # Connecting should fail fast (Ollama is usually local); generating may take long.
        client_kwargs={"timeout": httpx.Timeout(settings.timeout_s, connect=5.0)},
        **extra,
    )


def call_options(
    settings: LLMSettings,
    *,
    max_tokens: int | None = None,
    json_schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The keyword arguments to ``.bind()`` on the chat model for one kind of call.

    ``max_tokens`` replaces ``[llm].max_tokens`` for the call (Ollama's ``num_predict``);
    ``json_schema`` asks for a reply in that shape (Ollama's ``format``, which it enforces
    with a grammar; a server that ignores it replies as it likes, so the caller still
    checks). The only provider-specific part of a call's options.
    """
    # langchain-ollama sends a per-call ``options`` instead of the model's own, not merged
    # with them, so the model's settings are repeated here.
    options: dict[str, Any] = {
        "temperature": settings.temperature,
        "num_predict": settings.max_tokens if max_tokens is None else max_tokens,
    }
    if settings.context_tokens:
        options["num_ctx"] = settings.context_tokens
    kwargs: dict[str, Any] = {"options": options}
    if json_schema is not None:
        kwargs["format"] = json_schema
    return kwargs


async def close_chat_model(llm: ChatOllama) -> None:
    """Close both httpx clients that ``ChatOllama`` opens in its validator.

    langchain-ollama exposes no public close, so this reaches for its private clients;
    without it every shutdown leaks a connection pool.
    """
    async_client = getattr(llm, "_async_client", None)
    if async_client is not None:
        await async_client.close()
    sync_client = getattr(llm, "_client", None)
    if sync_client is not None:
        sync_client._client.close()


def translate_llm_error(exc: BaseException, settings: LLMSettings) -> LLMError | None:
    """Map an exception raised by a ChatOllama call to an ``LLMError``, or None if foreign."""
    where = settings.base_url
    if isinstance(exc, ollama.ResponseError):
        if exc.status_code == 404 and "not found" in str(exc.error).lower():
            return ModelNotFound(
                f"model {settings.model!r} not found at {where}: {exc.error}",
                hint=f"The model '{settings.model}' is not available in Ollama; "
                f"run `ollama pull {settings.model}` and ask again.",
            )
        return LLMUnavailable(
            f"Ollama at {where} answered {exc.status_code}: {exc.error}",
            hint="The language model returned an error; please try again in a moment.",
        )
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return LLMUnavailable(
            f"Ollama at {where} timed out after {settings.timeout_s:g}s: {exc!r}",
            hint=f"The language model did not answer within {settings.timeout_s:g} s; "
            "try again, or raise [llm].timeout_s.",
        )
    if isinstance(exc, httpx.HTTPError | OSError):
        return LLMUnavailable(
            f"Ollama at {where} is unreachable: {exc!r}",
            hint=f"The language model at {where} is not reachable; start it with "
            "`ollama serve` (or set OLLAMA_HOST / [llm].base_url).",
        )
    if isinstance(exc, ValueError):
        # Not JSON, or an empty stream (ollama and langchain-ollama raise ValueError
        # subclasses): something answers at base_url, but not like Ollama.
        return LLMUnavailable(
            f"unreadable reply from {where}: {exc!r}",
            hint=f"The language model at {where} sent a reply I could not read; "
            "check that [llm].base_url points at Ollama.",
        )
    return None


async def check_llm(session: aiohttp.ClientSession, settings: LLMSettings) -> str | None:
    """Ask Ollama which models are pulled; return a one-line warning if it will not work.

    Runs once at start-up so the operator learns about a missing model immediately,
    not at the first question. Never raises.
    """
    url = settings.base_url.rstrip("/") + "/api/tags"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            resp.raise_for_status()
            payload = await resp.json(content_type=None)
        names = {m.get("name", "") for m in payload.get("models", []) if isinstance(m, dict)}
    except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError) as exc:
        _log.info("Ollama check at %s failed: %r", url, exc)
        return (
            f"Ollama is not reachable at {settings.base_url}: start it with `ollama serve` "
            "(answers will list sources only until then)."
        )
    wanted = settings.model if ":" in settings.model else f"{settings.model}:latest"
    if settings.model not in names and wanted not in names:
        return (
            f"The model '{settings.model}' is not pulled in Ollama: run "
            f"`ollama pull {settings.model}` (answers will list sources only until then)."
        )
    return None


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
