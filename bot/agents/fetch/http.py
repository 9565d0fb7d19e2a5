"""JSON over HTTP for the fetch agent: timeouts, retries, a body cap, a TTL cache, and one
round trip for identical requests in flight at once.

Every request has its own timeout, a body-size cap and a bounded number of retries with
exponential backoff on 429, 5xx and connection errors (``Retry-After`` honoured, capped).
Successful parsed answers are kept in a small TTL cache. Every library, HTTP or payload
error leaves as :class:`~bot.errors.SourceUnavailable`, whose reason says how it failed in
words an operator acts on: the DNS lookup failed, the connection was refused, no answer
within the timeout, an HTTP status.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bot.config import SourcesSettings
from bot.domain import Article
from bot.errors import SourceUnavailable

_log = logging.getLogger(__name__)

# A server asking for a long pause would stall the whole turn; past this we retry sooner.
_MAX_RETRY_AFTER_S = 5.0
_CHUNK_BYTES = 64 * 1024

Params = tuple[tuple[str, str], ...]
CacheKey = tuple[str, Params]
# (dedupe key, article): the key is the Wikipedia title or the Hacker News objectID.
Parsed = tuple[tuple[str, Article], ...]
Parser = Callable[[object], Parsed]


@dataclass(frozen=True, slots=True)
class Request:
    """One GET of one source, and how to read its answer."""

    source: str
    url: str
    params: Params
    parse: Parser = field(compare=False, repr=False)

    @property
    def key(self) -> CacheKey:
        return (self.url, tuple(sorted(self.params)))


@dataclass(slots=True)
class _InFlight:
    task: asyncio.Task[Parsed]
    waiters: int = 0


class _Retryable(Exception):
    """A failure worth another attempt (429, 5xx, a dropped connection)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _TTLCache:
    """Parsed answers by request, each kept ``ttl_s`` seconds; least recently used go first."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[CacheKey, tuple[float, Parsed]] = OrderedDict()

    def get(self, key: CacheKey) -> Parsed | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if self._clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: CacheKey, value: Parsed) -> None:
        if self._ttl_s <= 0 or self._max_entries <= 0:
            return
        self._entries[key] = (self._clock() + self._ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


class JsonClient:
    """Gets and parses requests over the shared session, which it never creates or closes."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: SourcesSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._settings = settings
        self._cache = _TTLCache(settings.cache_ttl_s, settings.cache_entries, clock)
        self._in_flight: dict[CacheKey, _InFlight] = {}
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._headers = {"User-Agent": settings.user_agent, "Accept": "application/json"}

    async def get(self, request: Request) -> Parsed:
        """The request's parsed answer, from the cache or the network.

        Raises:
            SourceUnavailable: it failed (after its retries), or the answer was garbage.
        """
        key = request.key
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        return await self._shared(key, lambda: self._load(request))

    async def _shared(
        self, key: CacheKey, load: Callable[[], Coroutine[Any, Any, Parsed]]
    ) -> Parsed:
        """Join an identical request already under way, or start one.

        The request runs in its own task so one waiter's cancellation does not cancel it for
        the others; when the last waiter leaves, it is cancelled.
        """
        entry = self._in_flight.get(key)
        if entry is None:
            entry = _InFlight(asyncio.get_running_loop().create_task(load()))
            self._in_flight[key] = entry
            entry.task.add_done_callback(functools.partial(self._forget, key))
        entry.waiters += 1
        try:
            return await asyncio.shield(entry.task)
        finally:
            entry.waiters -= 1
            if entry.waiters == 0 and not entry.task.done():
                entry.task.cancel()

    def _forget(self, key: CacheKey, task: asyncio.Task[Parsed]) -> None:
        entry = self._in_flight.get(key)
        if entry is not None and entry.task is task:
            del self._in_flight[key]
        if not task.cancelled():
            # Marks the exception as retrieved when every waiter had already gone.
            task.exception()

    async def _load(self, request: Request) -> Parsed:
        parsed = request.parse(await self._get_json(request))
        self._cache.put(request.key, parsed)
        return parsed

    async def _get_json(self, request: Request) -> object:
        retries = 0
        while True:
            try:
                return await self._get_once(request)
            except _Retryable as exc:
                if retries >= self._settings.retries:
                    tries = f" (after {retries + 1} attempts)" if retries else ""
                    raise SourceUnavailable(request.source, exc.reason + tries) from (
                        exc.__cause__ or exc
                    )
                delay = self._delay(retries, exc.retry_after)
                retries += 1
                _log.info("%s: %s; retry %d in %.2f s", request.source, exc.reason, retries, delay)
                await asyncio.sleep(delay)

    def _delay(self, retries: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return float(self._settings.backoff_s * 2**retries)

    async def _get_once(self, request: Request) -> object:
        source = request.source
        try:
            async with self._session.get(
                request.url,
                params=request.params,
                headers=self._headers,
                timeout=self._timeout,
                # The shared session may raise on errors by default; statuses are judged here.
                raise_for_status=False,
            ) as response:
                _check_status(source, response)
                body = await _read_capped(source, response, self._settings.max_body_bytes)
        except TimeoutError as exc:
            # Not retried: a hanging server would hold the turn for (retries + 1) timeouts.
            raise SourceUnavailable(source, f"no answer within {self._timeout.total:g} s") from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise _Retryable(connection_failure(exc)) from exc
        except aiohttp.ClientError as exc:
            raise SourceUnavailable(source, f"request failed: {exc!r}") from exc
        return _decode_json(source, body)


def connection_failure(exc: aiohttp.ClientError) -> str:
    """How a connection failed, as the operator needs to know it: DNS, refused, reset."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup failed ({_os_reason(exc.os_error)})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return f"cannot connect ({_os_reason(exc.os_error)})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer broke off"
    return f"connection failed: {exc!r}"


def _os_reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def _check_status(source: str, response: aiohttp.ClientResponse) -> None:
    status = response.status
    if status == 429 or status >= 500:
        raise _Retryable(f"HTTP {status}", _retry_after(response.headers.get("Retry-After")))
    if status != 200:
        raise SourceUnavailable(source, f"HTTP {status}")


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, capped; ``None`` when absent or not a number (an HTTP date)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, _MAX_RETRY_AFTER_S)


async def _read_capped(source: str, response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, read in chunks: a chunked or lying response never makes us buffer past ``limit``.

    ``Content-Length`` only lets us refuse early; it is not trusted to bound the read.
    """
    declared = response.content_length
    if declared is not None and declared > limit:
        raise SourceUnavailable(source, f"body of {declared} bytes exceeds the {limit}-byte cap")
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise SourceUnavailable(source, f"body exceeds the {limit}-byte cap")
    return bytes(body)


def _decode_json(source: str, body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise SourceUnavailable(source, f"response is not JSON: {exc}") from exc
