"""A protocol-faithful fake of the Ollama HTTP API, for the real ``ChatOllama`` client.

Routes (what ``ollama`` 0.6 and ``langchain-ollama`` 1.1 use, shaped like Ollama 0.12):

* ``POST /api/chat``: ``stream`` true (the default) answers NDJSON, one
  ``{"model", "created_at", "message": {"role": "assistant", "content"}, "done": false}``
  line per chunk, then a ``"done": true`` line with ``done_reason`` ``"stop"``, the
  durations (ns), ``prompt_eval_count`` and ``eval_count`` (one per chunk); ``stream`` false
  answers the whole reply as one object. No messages: a ``done_reason`` ``"load"`` reply.
  ``options.num_predict`` (when positive) stops the reply after that many chunks (the
  fake's tokens), and then ``done_reason`` is ``"length"``, as Ollama does (unless
  ``honours_num_predict`` is False: a server that ignores it).
* ``POST /api/generate``: the same with ``"response"`` instead of ``"message"``.
* ``GET /api/tags``, ``POST /api/show``, ``GET /api/ps``, ``GET /api/version``, ``GET /``.
* A model that is not in :attr:`FakeOllama.models` gets HTTP 404
  ``{"error": "model \\"x\\" not found, try pulling it first"}``; ``"llama3.2"`` and
  ``"llama3.2:latest"`` name the same model, as in Ollama.

Switches, besides the base class's ``latency_s`` (before the first byte) and ``faults``:

* ``responder(body) -> str | Iterable[str]`` writes the reply from the request JSON. A
  ``str`` is split into token-like chunks (``" Python"``, ``" ["``, ``"1"``, ``"]"``); an
  iterable gives the chunks exactly. If iterating it raises, the stream ends with an
  ``{"error": ...}`` line (as when a model crashes mid-generation);
* ``chunk_delay_s`` is slept before every streamed line but the first;
  :meth:`FakeOllama.pace` sets it for the replies to one prompt only (by its marker);
* ``format`` (``"json"`` or a JSON schema) is honoured as Ollama's grammar honours it: the
  reply is JSON of that shape, whatever the responder wrote (``tests/fakes/grammar.py``:
  JSON of the right shape passes, anything else is poured into it line by line);
  ``honours_format = False`` plays a server that ignores ``format`` (an older Ollama, or
  another server). The grammar shapes the reply first; ``num_predict`` then cuts it;
* :meth:`FakeOllama.fail_midstream` sends a couple of chunks, then an ``{"error": ...}``
  line; :meth:`FakeOllama.server_busy` answers 503 ``server busy`` (queue full).

The default responder, :func:`~tests.fakes.scripted.default_responder`, plays a small,
imperfect model that recognises the pipeline's prompts; it lives in
``tests/fakes/scripted.py`` so the fake OpenAI-compatible server answers the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes.grammar import conformed
from tests.fakes.model_server import ModelServer
from tests.fakes.scripted import (
    Responder,
    default_responder,
    derive_keywords,
    prompt_tokens,
    split_tokens,
)

__all__ = [
    "BUSY_ERROR",
    "DEFAULT_MODEL",
    "MIDSTREAM_ERROR",
    "FakeOllama",
    "Responder",
    "default_responder",
    "derive_keywords",
    "prompt_tokens",
    "split_tokens",
]

DEFAULT_MODEL = "llama3.2:latest"
OLLAMA_VERSION = "0.12.6"
BUSY_ERROR = "server busy, please try again.  maximum pending requests exceeded"
MIDSTREAM_ERROR = "an error was encountered while running the model: unexpected EOF"
_MODIFIED_AT = "2025-06-01T12:00:00.000000000Z"
_NDJSON = "application/x-ndjson"


# ---------------------------------------------------------------------------------------
# Helpers of the server
# ---------------------------------------------------------------------------------------


def _normalise(model: str) -> str:
    name = model.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _details(model: str) -> dict[str, Any]:
    family = re.sub(r"[^a-z]", "", model.split(":", maxsplit=1)[0].lower()) or "llama"
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    }


def _digest(model: str) -> str:
    return hashlib.sha256(model.encode()).hexdigest()


# ---------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class FakeOllama(ModelServer):
    """The fake Ollama server; see the module docstring for the protocol it speaks.

    Besides the switches every fake model server has (:class:`ModelServer`): ``models``
    are pulled model names (``"x"`` means ``"x:latest"``), and ``honours_num_predict`` and
    ``honours_format`` say whether the server obeys those request fields.
    """

    chat_path = "/api/chat"  # where the chat model posts (FakeOpenAI has its own)
    midstream_error = MIDSTREAM_ERROR

    def __init__(
        self,
        *,
        models: Iterable[str] = (DEFAULT_MODEL,),
        responder: Responder | None = None,
        chunk_delay_s: float = 0.0,
        latency_s: float = 0.0,
    ) -> None:
        super().__init__(
            models=models, responder=responder, chunk_delay_s=chunk_delay_s, latency_s=latency_s
        )
        self.honours_num_predict = True
        self.honours_format = True

    def is_pulled(self, model: str) -> bool:
        """Whether ``model`` names one of :attr:`models`."""
        wanted = _normalise(model)
        return any(_normalise(m) == wanted for m in self.models)

    # -- routes --------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._root)
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/api/ps", self._ps)
        app.router.add_post("/api/show", self._show)
        app.router.add_post("/api/chat", self._chat)
        app.router.add_post("/api/generate", self._generate)
        app.router.add_post("/api/pull", self._pull)

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": OLLAMA_VERSION})

    def _model_entry(self, name: str) -> dict[str, Any]:
        full = _normalise(name)
        return {
            "name": full,
            "model": full,
            "modified_at": _MODIFIED_AT,
            "size": 2019393189,
            "digest": _digest(full),
            "details": _details(full),
        }

    async def _tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [self._model_entry(m) for m in self.models]})

    async def _pull(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/pull``: streamed progress lines, then ``success``; the model is pulled."""
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        name = str(body.get("model") or body.get("name") or "")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        total = 2_000_000_000
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        lines += [
            {"status": "pulling abc123", "digest": "sha256:abc123", "total": total,
             "completed": total * n // 4}
            for n in range(5)
        ]  # fmt: skip
        lines += [{"status": "verifying sha256 digest"}, {"status": "success"}]
        for line in lines:
            await response.write(json.dumps(line).encode() + b"\n")
        if not self.is_pulled(name):
            self.models.append(name)
        await response.write_eof()
        return response

    async def _ps(self, request: web.Request) -> web.Response:
        loaded = []
        for name in self.models:
            entry = self._model_entry(name)
            del entry["modified_at"]
            entry |= {"expires_at": "2099-01-01T00:00:00Z", "size_vram": entry["size"]}
            entry["context_length"] = 4096
            loaded.append(entry)
        return web.json_response({"models": loaded})

    async def _show(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        model = str(body.get("model") or body.get("name") or "")
        if not self.is_pulled(model):
            return _error(404, f"model '{model}' not found")
        full = _normalise(model)
        return web.json_response(
            {
                "license": "fake license",
                "modelfile": f"# Modelfile generated by the fake\nFROM {full}\n",
                "parameters": 'stop "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": _details(full),
                "model_info": {
                    "general.architecture": _details(full)["family"],
                    "general.parameter_count": 3212749888,
                    "llama.context_length": 131072,
                },
                "capabilities": ["completion", "tools"],
                "modified_at": _MODIFIED_AT,
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._model_reply(request, chat=True)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        return await self._model_reply(request, chat=False)

    # -- model replies -------------------------------------------------------------------

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError as exc:
            return _error(400, f"invalid request body: {exc}")
        if not isinstance(body, dict):
            return _error(400, "invalid request body: expected a JSON object")
        return body

    async def _model_reply(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        started = time.perf_counter_ns()
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        model = str(body.get("model") or "")
        if not model:
            return _error(400, "model is required")
        if not self.is_pulled(model):
            return _error(404, f'model "{model}" not found, try pulling it first')
        busy, self._busy_left = self._take(self._busy_left)
        if busy:
            return _error(503, BUSY_ERROR)
        if not body.get("messages" if chat else "prompt"):
            # Ollama answers an empty request by loading the model and saying so.
            return web.json_response(self._line(model, "", chat) | self._done("load", 0, 0))
        failing, self._midstream_left = self._take(self._midstream_left)
        try:
            reply = self.responder(body)
        except Exception as exc:  # a test's responder is broken: make it loud
            return _error(500, f"responder failed: {exc!r}")
        chunks: Iterator[str] = iter(split_tokens(reply) if isinstance(reply, str) else reply)
        if body.get("format") and self.honours_format:
            chunks = conformed(chunks, body["format"])
        # The grammar shapes what the model generates; num_predict then cuts it.
        chunks = _Limited(chunks, _num_predict(body) if self.honours_num_predict else None)
        turn = _Turn(
            model, chat, chunks, failing, prompt_tokens(body), started, self._delay_for(body)
        )
        if body.get("stream", True) is False:
            return self._whole(turn)
        return await self._stream(request, turn)

    @staticmethod
    def _line(model: str, content: str, chat: bool) -> dict[str, Any]:
        line: dict[str, Any] = {"model": model, "created_at": _now()}
        if chat:
            line["message"] = {"role": "assistant", "content": content}
        else:
            line["response"] = content
        line["done"] = False
        return line

    @staticmethod
    def _done(
        reason: str, prompt_count: int, eval_count: int, started: int | None = None
    ) -> dict[str, Any]:
        load_ns, prompt_ns = 1_000_000, prompt_count * 50_000
        elapsed = time.perf_counter_ns() - started if started is not None else 0
        eval_ns = max(elapsed - load_ns - prompt_ns, eval_count * 10_000)
        return {
            "done": True,
            "done_reason": reason,
            "total_duration": load_ns + prompt_ns + eval_ns,
            "load_duration": load_ns,
            "prompt_eval_count": prompt_count,
            "prompt_eval_duration": prompt_ns,
            "eval_count": eval_count,
            "eval_duration": eval_ns,
        }

    def _final(self, turn: _Turn, content: str, eval_count: int) -> dict[str, Any]:
        line = self._line(turn.model, content, turn.chat)
        reason = "length" if turn.chunks.cut else "stop"
        line |= self._done(reason, turn.prompt_count, eval_count, turn.started)
        if not turn.chat:
            line["context"] = [1, 2, 3]
        return line

    def _whole(self, turn: _Turn) -> web.Response:
        try:
            parts = list(turn.chunks)
        except Exception as exc:
            return _error(500, str(exc))
        self.replies.append("".join(parts))
        if turn.failing:
            return _error(500, self._midstream_error)
        return web.json_response(self._final(turn, "".join(parts), len(parts)))

    async def _stream(self, request: web.Request, turn: _Turn) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": _NDJSON})
        self.replies.append("")
        reply_index = len(self.replies) - 1
        lines = 0

        async def write(obj: Mapping[str, Any]) -> None:
            nonlocal lines
            if lines and await self._pause(turn.delay_s):
                raise _Closing
            await response.write(json.dumps(obj).encode() + b"\n")
            lines += 1

        sent = 0
        try:
            await response.prepare(request)
            while True:
                if turn.failing and sent >= self._midstream_after:
                    await write({"error": self._midstream_error})
                    return response
                try:
                    chunk = next(turn.chunks)
                except StopIteration:
                    break
                except Exception as exc:
                    await write({"error": str(exc)})
                    return response
                await write(self._line(turn.model, chunk, turn.chat))
                sent += 1
                self.replies[reply_index] += chunk
            if turn.failing:
                await write({"error": self._midstream_error})
                return response
            await write(self._final(turn, "", sent))
            await response.write_eof()
        except ConnectionError:
            self.aborted_streams += 1
            self.stream_aborted.set()
        except _Closing:
            pass
        return response


def _num_predict(body: Mapping[str, Any]) -> int | None:
    """The request's token limit; None when unlimited (absent, or Ollama's -1 and -2)."""
    options = body.get("options")
    limit = options.get("num_predict") if isinstance(options, dict) else None
    return limit if isinstance(limit, int) and limit > 0 else None


class _Limited:
    """The reply's chunks, stopped after ``limit`` of them; ``cut`` says that happened."""

    def __init__(self, chunks: Iterator[str], limit: int | None) -> None:
        self._chunks = chunks
        self._left = limit
        self.cut = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._left is not None:
            if self._left == 0:
                # Only a reply that had more to say was cut by the limit.
                self.cut = next(self._chunks, None) is not None
                raise StopIteration
            self._left -= 1
        return next(self._chunks)


@dataclass(slots=True)
class _Turn:
    """One model request being answered."""

    model: str
    chat: bool
    chunks: _Limited
    failing: bool
    prompt_count: int
    started: int
    delay_s: float = 0.0


class _Closing(Exception):
    """The fake is shutting down in the middle of a stream."""
