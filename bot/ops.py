"""What an orchestrator and Prometheus ask of a running bot, over HTTP.

* ``GET /healthz``: the process and its event loop answer (a blocked loop answers
  nothing, and the probe times out). Restart the container when this fails.
* ``GET /readyz``: ready to take questions: the store answers and its schema is at this
  code's version, every chat platform is connected, and the bot is not shutting down.
  503, with one line per problem, otherwise. Route traffic (Slack's HTTP events) only to
  ready replicas.
* ``GET /metrics``: :mod:`bot.core.metrics` in Prometheus' text format.

Served on ``[metrics].host:[metrics].port`` by aiohttp on the bot's own event loop; port 0
(the default) serves nothing. The answers say what is wrong in operator's terms (a
config key, a database that does not answer), never user data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.config import MetricsSettings
from bot.core.metrics import READY, REGISTRY
from bot.errors import StartupError

_log = logging.getLogger(__name__)

# A probe that takes longer than this is a problem in itself (a hung database).
CHECK_TIMEOUT_S = 3.0

Readiness = Callable[[], Awaitable[list[str]]]
Refresh = Callable[[], Awaitable[None]]


class OpsServer:
    """The /healthz, /readyz and /metrics endpoints of one process."""

    def __init__(
        self, settings: MetricsSettings, *, readiness: Readiness, refresh: Refresh
    ) -> None:
        self._settings = settings
        self._readiness = readiness
        self._refresh = refresh
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        """Listen.

        Raises:
            StartupError: the port is taken or cannot be bound (the fix in the message).
        """
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._settings.host, self._settings.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(
                [
                    f"cannot serve /healthz, /readyz and /metrics on "
                    f"{self._settings.host}:{self._settings.port} ({exc.strerror or exc}): "
                    "set [metrics].port to a free port, or 0 to serve none"
                ]
            ) from exc
        self._runner = runner
        self.port = _bound_port(runner) or self._settings.port
        _log.info("serving /healthz, /readyz and /metrics on port %s", self.port)

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def problems(self) -> list[str]:
        """Why this replica is not ready (empty when it is), bounded in time."""
        try:
            found = await asyncio.wait_for(self._readiness(), CHECK_TIMEOUT_S)
        except TimeoutError:
            found = [f"the readiness checks took longer than {CHECK_TIMEOUT_S:g} s"]
        READY.set(0 if found else 1)
        return found

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        found = await self.problems()
        if found:
            return web.Response(
                status=503, text="not ready:\n" + "".join(f"- {p}\n" for p in found)
            )
        return web.Response(text="ready\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(self._refresh(), CHECK_TIMEOUT_S)
        except Exception:
            # The counters are still worth serving; the levels keep their last values.
            _log.warning("refreshing the metrics' levels failed", exc_info=True)
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
