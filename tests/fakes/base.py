"""Shared machinery for the protocol-faithful fakes.

Each fake is an ``aiohttp.web`` application served by an ``AppRunner`` on
``127.0.0.1`` port 0; the real client under test is pointed at ``fake.url``. Every
request is recorded so tests assert on what went over the wire. Two switches serve
every fake:

* ``latency_s``: slept before each response (benchmarks inject latency this way);
* ``in_flight`` / ``max_in_flight``: requests being served now / at most at once (latency
  included), so tests can prove a client sends its requests concurrently;
* ``faults``: a queue of faults, each consumed by one request: ``Fault.status(500)``,
  ``Fault.garbage()``, ``Fault.hang()`` (never answers until the client gives up),
  ``Fault.status(429, retry_after=0.05)``. ``always_fail`` keeps failing every request.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure."""

    kind: str
    status_code: int = 500
    retry_after: float | None = None

    @classmethod
    def status(cls, code: int, *, retry_after: float | None = None) -> Fault:
        return cls("status", code, retry_after)

    @classmethod
    def garbage(cls) -> Fault:
        return cls("garbage")

    @classmethod
    def hang(cls) -> Fault:
        return cls("hang")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body)


class FakeServer:
    """Base class: subclasses add routes in :meth:`routes`."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.latency_s = 0.0
        self.faults: deque[Fault] = deque()
        self.always_fail: Fault | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._hung: set[asyncio.Event] = set()
        self._arrived = asyncio.Condition()
        self.in_flight = 0
        self.max_in_flight = 0

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, without a trailing slash."""
        if not self._port:
            raise RuntimeError("the fake is not started")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> Self:
        app = web.Application(middlewares=[self._middleware])
        self.routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        for event in self._hung:
            event.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    async def wait_for_requests(self, count: int, path: str | None = None) -> None:
        """Return once ``count`` requests (to ``path``, if given) have arrived."""

        def enough() -> bool:
            seen = self.requests if path is None else self.requests_to(path)
            return len(seen) >= count

        async with self._arrived:
            await self._arrived.wait_for(enough)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            RecordedRequest(
                request.method, request.path, dict(request.query), dict(request.headers), body
            )
        )
        async with self._arrived:
            self._arrived.notify_all()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._serve(request, handler)
        finally:
            self.in_flight -= 1

    async def _serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        fault = self.faults.popleft() if self.faults else self.always_fail
        if fault is None:
            return await handler(request)
        if fault.kind == "hang":
            event = asyncio.Event()
            self._hung.add(event)
            try:
                await event.wait()
            finally:
                self._hung.discard(event)
            raise web.HTTPServiceUnavailable()
        if fault.kind == "garbage":
            return web.Response(
                body=b"<html>502 upstream \xff\xfe garbage", content_type="application/json"
            )
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        return web.json_response(
            {"error": f"injected {fault.status_code}"}, status=fault.status_code, headers=headers
        )
