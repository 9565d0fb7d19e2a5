"""A protocol-faithful fake of an OpenAI-compatible server, for the real ``ChatOpenAI`` client.

What vLLM, llama.cpp's server, LM Studio and a LiteLLM proxy serve under ``/v1``, shaped
like OpenAI's own API (what ``openai`` 3 and ``langchain-openai`` 1.8 read):

* ``GET /v1/models``: ``{"object": "list", "data": [{"id", "object": "model", "created",
  "owned_by"}]}``, one entry per name in :attr:`FakeOpenAI.models`.
* ``POST /v1/chat/completions``: ``stream`` true answers server-sent events, one
  ``data: {"id", "object": "chat.completion.chunk", "created", "model",
  "system_fingerprint", "choices": [{"index": 0, "delta", "logprobs": null,
  "finish_reason": null}]}`` per chunk (the first delta carries ``"role": "assistant"``
  and empty content), then a chunk with an empty delta and ``finish_reason`` (``"stop"``,
  or ``"length"`` when ``max_completion_tokens``/``max_tokens`` cut the reply), then, when
  ``stream_options.include_usage`` asked for it, a chunk with no choices and the
  ``usage``, then ``data: [DONE]``. ``stream`` false (the default) answers one
  ``chat.completion`` object with ``usage``.
* ``response_format`` is checked as OpenAI checks it (``{"type": "json_schema",
  "json_schema": {"name", "schema"}}``, ``json_object`` or ``text``; anything else is a
  400), and honoured as vLLM's and OpenAI's structured outputs honour it: the reply is
  JSON of that shape, whatever the responder wrote (``tests/fakes/grammar.py``), before
  ``max_tokens`` cuts it; ``honours_format = False`` plays a server that ignores it.
  ``json_schema_supported = False`` plays
  llama-cpp-python's server (0.3), which knows only ``text`` and ``json_object`` and
  answers a ``json_schema`` with a 500 carrying its validation error.
* Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 404
  ``model_not_found`` for a model that is not served (names match exactly), 400 for a
  body that is not JSON or lacks ``model``/``messages``, 401 ``invalid_api_key`` when
  :attr:`FakeOpenAI.api_key` is set and the request's bearer token differs.

Switches, besides the base class's ``latency_s``, ``faults`` and ``always_fail`` (whose
``Fault.status(429, retry_after=...)`` sends ``Retry-After`` as OpenAI does):

* ``responder``, ``chunk_delay_s``, :meth:`FakeOpenAI.pace`, ``replies``,
  ``aborted_streams``/``stream_aborted`` and :meth:`FakeOpenAI.fail_midstream` work as in
  ``tests/fakes/ollama.py``; the replies come from the same scripted model
  (``tests/fakes/scripted.py``), so a test gets the same answer from either fake. A stream
  that fails sends ``data: {"error": {...}}`` (what the SDK raises as ``APIError``);
* ``ignore_max_tokens`` streams past ``max_tokens``, as a server that ignores it does;
* :meth:`FakeOpenAI.rate_limit` answers 429 ``rate_limit_exceeded`` with ``retry-after``;
  :meth:`FakeOpenAI.server_busy` answers 503, as an overloaded server does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.grammar import conformed
from tests.fakes.model_server import ModelServer
from tests.fakes.scripted import (
    Responder,
    prompt_tokens,
    requested_schema,
    requested_token_limit,
    split_tokens,
)

__all__ = [
    "BUSY_ERROR",
    "DEFAULT_MODEL",
    "MIDSTREAM_ERROR",
    "FakeOpenAI",
]

DEFAULT_MODEL = "llama3.2"
BUSY_ERROR = "The server is overloaded or not ready yet."
MIDSTREAM_ERROR = "The server had an error while processing your request."
CHAT_PATH = "/v1/chat/completions"
_CREATED = 1_748_779_200  # when the fake's models were "made": fixed, like a real listing
_FINGERPRINT = "fp_fake"


def _error(
    status: int, message: str, *, kind: str, code: str | int | None = None, param: str | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


class FakeOpenAI(ModelServer):
    """The fake OpenAI-compatible server; see the module docstring for what it speaks.

    Point a client at :attr:`base_url` (``http://127.0.0.1:PORT/v1``). Attributes tests
    may set or read at any time: ``models``, ``api_key`` (None: any key, or none, is
    taken), ``responder``, ``chunk_delay_s``, ``replies``, ``aborted_streams`` and the
    event ``stream_aborted``, and the base class's switches.
    """

    chat_path = CHAT_PATH
    midstream_error = MIDSTREAM_ERROR

    def __init__(
        self,
        *,
        models: Iterable[str] = (DEFAULT_MODEL,),
        responder: Responder | None = None,
        chunk_delay_s: float = 0.0,
        latency_s: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        super().__init__(
            models=models, responder=responder, chunk_delay_s=chunk_delay_s, latency_s=latency_s
        )
        self.api_key = api_key
        self.ignore_max_tokens = False
        self.json_schema_supported = True
        self.honours_format = True
        self._limited_left: int | None = 0
        self._retry_after_s = 1.0

    @property
    def base_url(self) -> str:
        """What ``[llm].base_url`` is set to: the API root, ending in ``/v1``."""
        return f"{self.url}/v1"

    # -- switches ------------------------------------------------------------------------

    def rate_limit(self, times: int | None = 1, *, retry_after_s: float = 1.0) -> None:
        """Answer the next ``times`` completions (``None``: all) with 429 and
        ``retry-after: retry_after_s``."""
        self._limited_left = times
        self._retry_after_s = retry_after_s

    def reset_faults(self) -> None:
        super().reset_faults()
        self._limited_left = 0

    # -- routes --------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model:.+}", self._model)
        app.router.add_post(CHAT_PATH, self._chat)

    def _unauthorised(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return _error(
            401,
            "Incorrect API key provided. You can find your API key in your server's settings.",
            kind="invalid_request_error",
            code="invalid_api_key",
        )

    @staticmethod
    def _entry(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": _CREATED, "owned_by": "fake"}

    async def _models(self, request: web.Request) -> web.Response:
        refused = self._unauthorised(request)
        if refused is not None:
            return refused
        return web.json_response({"object": "list", "data": [self._entry(m) for m in self.models]})

    async def _model(self, request: web.Request) -> web.Response:
        refused = self._unauthorised(request)
        if refused is not None:
            return refused
        name = request.match_info["model"]
        if name not in self.models:
            return self._not_found(name)
        return web.json_response(self._entry(name))

    @staticmethod
    def _not_found(model: str) -> web.Response:
        return _error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            kind="invalid_request_error",
            code="model_not_found",
        )

    # -- completions ---------------------------------------------------------------------

    @staticmethod
    def _invalid(message: str, param: str | None = None) -> web.Response:
        return _error(400, message, kind="invalid_request_error", param=param)

    def _check_body(self, body: object) -> web.Response | None:
        if not isinstance(body, dict):
            return self._invalid("We could not parse the JSON body of your request.")
        if not body.get("model"):
            return self._invalid("you must provide a model parameter", "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._invalid("[] is too short - 'messages'", "messages")
        response_format = body.get("response_format")
        if (
            not self.json_schema_supported
            and isinstance(response_format, dict)
            and response_format.get("type") == "json_schema"
        ):
            return _error(
                500,
                "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}]",
                kind="internal_server_error",
            )
        return _check_response_format(response_format)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        refused = self._unauthorised(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError:
            body = None
        invalid = self._check_body(body)
        if invalid is not None:
            return invalid
        assert isinstance(body, dict)
        model = str(body["model"])
        if model not in self.models:
            return self._not_found(model)
        limited, self._limited_left = self._take(self._limited_left)
        if limited:
            response = _error(
                429,
                f"Rate limit reached for {model}: please try again in {self._retry_after_s:g}s.",
                kind="requests",
                code="rate_limit_exceeded",
            )
            response.headers["retry-after"] = f"{self._retry_after_s:g}"
            return response
        busy, self._busy_left = self._take(self._busy_left)
        if busy:
            return _error(503, BUSY_ERROR, kind="server_error", code=503)
        failing, self._midstream_left = self._take(self._midstream_left)
        try:
            reply = self.responder(body)
        except Exception as exc:  # a test's responder is broken: make it loud
            return _error(500, f"responder failed: {exc!r}", kind="server_error")
        limit = requested_token_limit(body)
        chunks: Iterator[str] = iter(split_tokens(reply) if isinstance(reply, str) else reply)
        shape = _requested_shape(body)
        if shape is not None and self.honours_format:
            chunks = conformed(chunks, shape)
        turn = _Turn(
            id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
            model=model,
            chunks=chunks,
            limit=None if self.ignore_max_tokens else limit,
            failing=failing,
            prompt_count=prompt_tokens(body),
            delay_s=self._delay_for(body),
        )
        if body.get("stream") is True:
            options = body.get("stream_options") or {}
            usage = isinstance(options, dict) and options.get("include_usage") is True
            return await self._stream(request, turn, usage=usage)
        return self._whole(turn)

    @staticmethod
    def _usage(turn: _Turn, completion: int) -> dict[str, Any]:
        return {
            "prompt_tokens": turn.prompt_count,
            "completion_tokens": completion,
            "total_tokens": turn.prompt_count + completion,
        }

    def _whole(self, turn: _Turn) -> web.Response:
        parts: list[str] = []
        try:
            for chunk in turn.chunks:
                if turn.limit is not None and len(parts) == turn.limit:
                    break
                parts.append(chunk)
        except Exception as exc:
            return _error(500, str(exc), kind="server_error")
        self.replies.append("".join(parts))
        if turn.failing:
            return _error(500, self._midstream_error, kind="server_error")
        reason = "length" if turn.limit is not None and len(parts) == turn.limit else "stop"
        message = {"role": "assistant", "content": "".join(parts), "refusal": None}
        return web.json_response(
            turn.envelope("chat.completion")
            | {
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
                ],
                "usage": self._usage(turn, len(parts)),
            }
        )

    async def _stream(
        self, request: web.Request, turn: _Turn, *, usage: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        self.replies.append("")
        index = len(self.replies) - 1
        events = 0

        async def send(data: Mapping[str, Any] | str) -> None:
            nonlocal events
            if events > 1 and await self._pause(turn.delay_s):
                raise _Closing
            payload = data if isinstance(data, str) else json.dumps(data)
            await response.write(f"data: {payload}\n\n".encode())
            events += 1

        def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            out = turn.envelope("chat.completion.chunk") | {"choices": [choice]}
            if usage:
                out["usage"] = None
            return out

        sent = 0
        try:
            await response.prepare(request)
            await send(chunk({"role": "assistant", "content": ""}))
            reason = "stop"
            while True:
                if turn.failing and sent >= self._midstream_after:
                    await send(_error_event(self._midstream_error))
                    return response
                if turn.limit is not None and sent == turn.limit:
                    reason = "length"
                    break
                try:
                    text = next(turn.chunks)
                except StopIteration:
                    break
                except Exception as exc:
                    await send(_error_event(str(exc)))
                    return response
                await send(chunk({"content": text}))
                sent += 1
                self.replies[index] += text
            if turn.failing:
                await send(_error_event(self._midstream_error))
                return response
            await send(chunk({}, reason))
            if usage:
                await send(
                    turn.envelope("chat.completion.chunk")
                    | {"choices": [], "usage": self._usage(turn, sent)}
                )
            await send("[DONE]")
            await response.write_eof()
        except ConnectionError:
            self.aborted_streams += 1
            self.stream_aborted.set()
        except _Closing:
            pass
        return response


def _requested_shape(body: Mapping[str, Any]) -> object:
    """What a ``response_format`` holds the reply to: a JSON schema, any JSON ("json",
    for ``json_object``), or nothing (None)."""
    schema = requested_schema(body)
    if schema is not None:
        return schema
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        return "json"
    return None


def _error_event(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": 500}}


def _check_response_format(value: object) -> web.Response | None:
    """None when ``response_format`` is absent or valid, else OpenAI's 400."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in {"text", "json_object"}:
        return None
    if kind == "json_schema":
        assert isinstance(value, dict)
        spec = value.get("json_schema")
        if isinstance(spec, dict) and spec.get("name") and isinstance(spec.get("schema"), dict):
            return None
        return FakeOpenAI._invalid(
            "Missing required parameter: 'response_format.json_schema' (a name and a schema).",
            "response_format.json_schema",
        )
    return FakeOpenAI._invalid(
        f"Invalid value: {kind!r}. Supported values are: 'json_object', 'json_schema', and 'text'.",
        "response_format.type",
    )


@dataclass(slots=True)
class _Turn:
    """One completion being answered."""

    id: str
    model: str
    chunks: Iterator[str]
    limit: int | None
    failing: bool
    prompt_count: int
    delay_s: float

    def envelope(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": _FINGERPRINT,
        }


class _Closing(Exception):
    """The fake is shutting down in the middle of a stream."""
