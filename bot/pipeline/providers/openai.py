"""An OpenAI-compatible server through ``ChatOpenAI``: built, checked, closed, its errors.

vLLM, llama.cpp's server, LM Studio and a LiteLLM proxy all serve OpenAI's chat
completions API under a root such as ``http://localhost:8000/v1``. The key, when the
server wants one, comes from ``OPENAI_API_KEY`` (:class:`~bot.config.LLMSettings`'s
``api_key``); ``openai`` errors are translated here, each with the fix for this kind of
server (start it, ``[llm].base_url``, ``[llm].model``, ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from bot.config import LLMSettings
from bot.errors import LLMError, LLMUnavailable, ModelNotFound
from bot.pipeline.providers import RETRY_HINT, timed_out, unreadable

_log = logging.getLogger(__name__)

# ChatOpenAI will not build without a key, and a local server wants none: this harmless
# placeholder goes as the bearer token then (servers without keys ignore it).
NO_KEY = "no-key"
# A 429 or 5xx is retried once, after the server's retry-after when it gives a short one;
# the call's own deadlines (bot.pipeline.llm) bound the wait either way.
MAX_RETRIES = 1
_UNTIL_THEN = "(answers will list sources only until then)"


@dataclass(frozen=True, slots=True)
class OpenAIProvider:
    """A server of OpenAI's chat completions API at ``[llm].base_url``."""

    settings: LLMSettings

    @property
    def _key(self) -> str:
        key = self.settings.api_key
        return key.reveal() if key is not None else NO_KEY

    def build(self) -> ChatOpenAI:
        settings = self.settings
        timeout = httpx2.Timeout(settings.timeout_s, connect=5.0)
        return ChatOpenAI(
            model=settings.model,
            base_url=settings.base_url,
            # Explicit, so no other environment variable (OPENAI_BASE_URL, a LangSmith
            # gateway's) redirects the bot's calls or its key.
            api_key=SecretStr(self._key),
            temperature=settings.temperature,
            # `max_tokens`, not the max_completion_tokens ChatOpenAI would send: every
            # OpenAI-compatible server reads the older name, not all read the newer one.
            extra_body={"max_tokens": settings.max_tokens},
            max_retries=MAX_RETRIES,
            timeout=timeout,
            # One chunk may take as long as one read (langchain-openai's own default is 120 s).
            stream_chunk_timeout=settings.timeout_s,
            # Clients of the bot's own, closed by close(): langchain-openai's default may be
            # a cached client that every ChatOpenAI of the process shares.
            http_client=openai.DefaultHttpxClient(timeout=timeout),
            http_async_client=openai.DefaultAsyncHttpxClient(timeout=timeout),
        )

    async def close(self, llm: BaseChatModel) -> None:
        """Close the sync and async ``openai`` clients (and their HTTP pools)."""
        async_client = getattr(llm, "root_async_client", None)
        if async_client is not None:
            await async_client.close()
        sync_client = getattr(llm, "root_client", None)
        if sync_client is not None:
            sync_client.close()

    def translate(self, exc: BaseException) -> LLMError | None:
        settings = self.settings
        where = settings.base_url
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc)
        # A TimeoutError that reaches this is the client's (stream_llm's own windows are
        # told apart before): langchain-openai's stream_chunk_timeout.
        if isinstance(exc, openai.APITimeoutError | TimeoutError):
            return timed_out(settings, f"the server at {where}", exc)
        if isinstance(exc, openai.APIConnectionError | httpx2.HTTPError | OSError):
            return LLMUnavailable(
                f"the server at {where} is unreachable: {exc!r}",
                hint=f"The language model server at {where} is not reachable; start it, or "
                "set [llm].base_url (or LLM_BASE_URL) to where it listens.",
            )
        if isinstance(exc, openai.APIResponseValidationError | ValueError):
            # Not JSON, not OpenAI's shape, or a stream with no chunk at all: something
            # answers at base_url, but not like an OpenAI-compatible API.
            return unreadable(
                settings,
                exc,
                "that [llm].base_url is an OpenAI-compatible API's root (it usually ends in /v1)",
            )
        if isinstance(exc, openai.OpenAIError):
            # An error event in the stream (the model crashed mid-answer), and the like.
            return LLMUnavailable(f"the server at {where} failed: {exc!r}", hint=RETRY_HINT)
        return None

    def _status_error(self, exc: openai.APIStatusError) -> LLMError:
        settings = self.settings
        where, model = settings.base_url, settings.model
        said = f"the server at {where} answered {exc.status_code}: {_message(exc)}"
        if isinstance(exc, openai.NotFoundError):
            if "model" in _message(exc).lower():
                return ModelNotFound(
                    said,
                    hint=f"The model '{model}' is not served at {where}; start your server "
                    "with it, or set [llm].model (LLM_MODEL) to one it serves.",
                )
            return LLMUnavailable(
                said,
                hint=f"There is no chat completions API at {where}; set [llm].base_url to "
                "the server's API root (it usually ends in /v1).",
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return LLMUnavailable(
                said,
                hint=f"The server at {where} refused the API key (HTTP {exc.status_code}); "
                "set OPENAI_API_KEY to a key it accepts.",
            )
        if isinstance(exc, openai.RateLimitError):
            return LLMUnavailable(
                said,
                hint=f"The server at {where} is rate limiting the bot (HTTP 429); try again "
                "later, or raise the limits of the proxy or account.",
            )
        if isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
            return LLMUnavailable(
                said,
                hint=f"The server at {where} refused the request ({_message(exc)}); check "
                "[llm].model and [llm].max_tokens against what it serves.",
            )
        return LLMUnavailable(said, hint=RETRY_HINT)

    async def check(self, session: aiohttp.ClientSession) -> str | None:
        """Ask the server which models it serves (``GET /models``)."""
        settings = self.settings
        where = settings.base_url.rstrip("/")
        url = f"{where}/models"
        headers = {"Authorization": f"Bearer {self._key}"}
        try:
            async with session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                status = resp.status
                payload = await resp.json(content_type=None) if status == 200 else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            _log.info("OpenAI-compatible server check at %s failed: %r", url, exc)
            return (
                f"No OpenAI-compatible server is reachable at {where}: start it (llama.cpp: "
                "`python -m llama_cpp.server --model FILE`, vLLM: `vllm serve MODEL`), or set "
                f"[llm].base_url to where it listens {_UNTIL_THEN}."
            )
        except ValueError:
            payload = None
        if status in (401, 403):
            return (
                f"The server at {where} refused the API key (HTTP {status}): set "
                f"OPENAI_API_KEY to a key it accepts {_UNTIL_THEN}."
            )
        served = _model_ids(payload)
        if served is None and not where.endswith("/v1"):
            # The commonest slip: the server's address without its API root.
            rooted = f"{where}/v1"
            if await self._lists_models(session, rooted, headers):
                return (
                    f"The server at {where} serves its OpenAI-compatible API under /v1: set "
                    f"[llm].base_url to {rooted} {_UNTIL_THEN}."
                )
        if served is None:
            return (
                f"The server at {where} does not list its models like an OpenAI-compatible API "
                f"(GET {url}: HTTP {status}): set [llm].base_url to the API's root, which "
                f"usually ends in /v1 {_UNTIL_THEN}."
            )
        if settings.model not in served:
            listed = ", ".join(sorted(served)[:5]) or "none"
            return (
                f"The model '{settings.model}' is not served at {where} (it serves: {listed}): "
                f"start your server with it, or set [llm].model {_UNTIL_THEN}."
            )
        return None

    @staticmethod
    async def _lists_models(
        session: aiohttp.ClientSession, root: str, headers: Mapping[str, str]
    ) -> bool:
        try:
            async with session.get(
                f"{root}/models", headers=headers, timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                if resp.status != 200:
                    return False
                return _model_ids(await resp.json(content_type=None)) is not None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False

    def bind_options(
        self, *, max_tokens: int | None = None, json_schema: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """``max_tokens`` (see :meth:`build`) and ``response_format`` ``json_schema``.

        Both go in ``extra_body``, which replaces the model's own (so its ``max_tokens``
        comes along): given ``response_format`` itself, ChatOpenAI switches to the SDK's
        parsing stream, which raises at a reply cut at the limit instead of reporting
        ``finish_reason`` "length" on its last chunk as every other call does.
        """
        if max_tokens is None and json_schema is None:
            return {}
        body: dict[str, Any] = {"max_tokens": max_tokens or self.settings.max_tokens}
        if json_schema is not None:
            name = re.sub(r"[^A-Za-z0-9_-]", "_", str(json_schema.get("title") or "reply"))
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name[:64], "schema": dict(json_schema)},
            }
        return {"extra_body": body}

    def finish_reason(self, chunk: BaseMessage) -> str | None:
        """The choice's ``finish_reason`` (``"length"``: cut at max_tokens)."""
        reason = chunk.response_metadata.get("finish_reason")
        return str(reason) if reason else None


def _message(exc: openai.APIStatusError) -> str:
    """The server's own words: OpenAI's ``{"error": {"message"}}``, vLLM's ``{"message"}``."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return exc.message


def _model_ids(payload: object) -> set[str] | None:
    """The ids of ``{"object": "list", "data": [{"id": ...}]}``, or None if not that shape."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        return None
    return {str(m["id"]) for m in payload["data"] if isinstance(m, dict) and "id" in m}
