"""Ollama through ``ChatOllama``: how it is built, checked, closed and how it fails.

``httpx`` and ``ollama`` errors are translated here, each into a hint that names the fix
(``ollama serve``, ``ollama pull MODEL``, ``OLLAMA_HOST``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import ollama
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_ollama import ChatOllama

from bot.config import LLMSettings
from bot.errors import LLMError, LLMUnavailable, ModelNotFound
from bot.pipeline.providers import RETRY_HINT, timed_out, unreadable

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OllamaProvider:
    """The default provider: a local (or ``OLLAMA_HOST``) Ollama server."""

    settings: LLMSettings

    def build(self) -> ChatOllama:
        settings = self.settings
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

    async def close(self, llm: BaseChatModel) -> None:
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

    def translate(self, exc: BaseException) -> LLMError | None:
        settings = self.settings
        where = settings.base_url
        if isinstance(exc, ollama.ResponseError):
            if exc.status_code == 404 and "not found" in str(exc.error).lower():
                return ModelNotFound(
                    f"model {settings.model!r} not found at {where}: {exc.error}",
                    hint=f"The model '{settings.model}' is not available in Ollama; "
                    f"run `ollama pull {settings.model}` and ask again.",
                )
            return LLMUnavailable(
                f"Ollama at {where} answered {exc.status_code}: {exc.error}", hint=RETRY_HINT
            )
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return timed_out(settings, f"Ollama at {where}", exc)
        if isinstance(exc, httpx.HTTPError | OSError):
            return LLMUnavailable(
                f"Ollama at {where} is unreachable: {exc!r}",
                hint=f"The language model at {where} is not reachable; start it with "
                "`ollama serve` (or set OLLAMA_HOST / [llm].base_url).",
            )
        if isinstance(exc, ValueError):
            # Not JSON, or an empty stream (ollama and langchain-ollama raise ValueError
            # subclasses): something answers at base_url, but not like Ollama.
            return unreadable(settings, exc, "that [llm].base_url points at Ollama")
        return None

    async def check(self, session: aiohttp.ClientSession) -> str | None:
        """Ask Ollama which models are pulled (``/api/tags``)."""
        settings = self.settings
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

    def bind_options(
        self, *, max_tokens: int | None = None, json_schema: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """``options.num_predict`` and ``format``.

        ChatOllama replaces all of its own options when a call passes ``options``, so the
        ones the model was built with go along.
        """
        bound: dict[str, Any] = {}
        if max_tokens is not None:
            options: dict[str, Any] = {
                "temperature": self.settings.temperature,
                "num_predict": max_tokens,
            }
            if self.settings.context_tokens:
                options["num_ctx"] = self.settings.context_tokens
            bound["options"] = options
        if json_schema is not None:
            bound["format"] = dict(json_schema)
        return bound

    def finish_reason(self, chunk: BaseMessage) -> str | None:
        """Ollama's ``done_reason`` on the final line (``"length"``: cut at num_predict)."""
        reason = chunk.response_metadata.get("done_reason")
        return str(reason) if reason else None
