"""Discord's gateway shards: how many, which of them run here, and when each may IDENTIFY.

Discord sends a guild's events down one gateway connection, the shard
``(guild_id >> 22) % count`` (direct messages: shard 0). Replicas sharing a store divide
the shards; each runs its share on discord.py clients of its own, one per shard, so a
shard can start or stop without touching the others:

* :func:`gateway_plan`: the shard count (``[discord].shard_count``, or Discord's
  recommendation when 0) and ``max_concurrency``, from ``GET /gateway/bot``;
* :class:`IdentifyPacer`: one IDENTIFY per 5 s per rate-limit key
  ``shard_id % max_concurrency``, counted across replicas (``Cluster.pace``);
* :class:`ShardSet`: this replica's share (``Cluster.shards``), reconciled every
  ``lease_s / 3``: shards newly owned are started, shards given back stopped; at close
  every shard stops and is released, so another replica takes it at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import discord
import discord.http

from bot.adapters.base import Cluster
from bot.adapters.discord.inbound import PLATFORM
from bot.core.tasks import Periodic
from bot.errors import PlatformSetupError, StoreError

_log = logging.getLogger(__name__)

# Discord allows one IDENTIFY per 5 s per rate-limit key; IDENTIFYs arrive a little later
# than they leave, so they are spaced by a margin more.
IDENTIFY_WINDOW_S = 5.0
IDENTIFY_MARGIN_S = 0.1
# Shard leases are renewed this many times per lease: two renewals may fail in a row and
# the lease still holds.
RENEWALS_PER_LEASE = 3


@dataclass(frozen=True, slots=True)
class GatewayPlan:
    """How many shards, and how many of them may IDENTIFY at once."""

    count: int
    max_concurrency: int


async def gateway_plan(http: discord.http.HTTPClient, configured: int) -> GatewayPlan:
    """The shard count (``configured``, or Discord's recommendation when 0) and
    ``max_concurrency`` (1 when Discord does not say), from ``GET /gateway/bot``.

    Raises:
        PlatformSetupError: ``configured`` is 0 and Discord did not say how many shards.
    """
    try:
        recommended, _url, limit = await http.get_bot_gateway()
    except (discord.DiscordException, aiohttp.ClientError, OSError, KeyError) as exc:
        if not configured:
            raise PlatformSetupError(
                f"Discord did not say how many gateway shards to run ({exc}); "
                "set [discord].shard_count"
            ) from exc
        _log.warning("Discord: GET /gateway/bot failed (%s); one IDENTIFY at a time", exc)
        return GatewayPlan(configured, 1)
    concurrency = max(1, int(limit.get("max_concurrency") or 1))
    return GatewayPlan(configured or max(1, int(recommended)), concurrency)


class IdentifyPacer:
    """Waits until a shard may IDENTIFY: at most one per 5 s per rate-limit key, however
    many replicas identify shards of the same bot."""

    def __init__(self, cluster: Cluster, max_concurrency: int) -> None:
        self._cluster = cluster
        self._max_concurrency = max(1, max_concurrency)

    async def wait(self, shard_id: int | None) -> None:
        key = f"discord:identify:{(shard_id or 0) % self._max_concurrency}"
        per_minute = 60.0 / (IDENTIFY_WINDOW_S + IDENTIFY_MARGIN_S)
        while True:
            try:
                wait = await self._cluster.pace(key, per_minute=per_minute, burst=1)
            except StoreError:
                # The others cannot be asked: wait the whole window, as discord.py would.
                _log.warning("Discord: could not pace IDENTIFY (store unreachable); waiting")
                await asyncio.sleep(IDENTIFY_WINDOW_S + IDENTIFY_MARGIN_S)
                return
            if wait <= 0:
                return
            _log.debug("Discord: shard %s waits %.1f s to IDENTIFY", shard_id, wait)
            await asyncio.sleep(wait)


class GatewayClient(Protocol):
    """What :class:`ShardSet` needs of one shard's discord.py client (logged in)."""

    async def connect(self, *, reconnect: bool = True) -> None: ...

    async def wait_until_ready(self) -> None: ...

    def is_ready(self) -> bool: ...

    async def close(self) -> None: ...


# Builds and logs in the client of a shard.
Launch = Callable[[int], Awaitable[GatewayClient]]
# A shard's connection ended by itself and for good (the exception, when there was one).
Lost = Callable[[int, BaseException | None], None]


class ShardSet:
    """The shards this replica runs, each on its own client, kept in step with the cluster.

    :meth:`start` takes this replica's share and returns once those shards are ready;
    :meth:`reconcile` runs every ``lease_s / 3`` from then on. A shard whose lease could
    not be renewed for a whole lease is stopped (another replica may run it by now). A
    shard's connection that ends by itself (not stopped here) is reported to ``lost``,
    and no shard is started after that: the adapter has given up.
    """

    def __init__(
        self,
        cluster: Cluster,
        count: int,
        *,
        launch: Launch,
        lost: Lost,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cluster = cluster
        self._count = count
        self._launch = launch
        self._lost = lost
        self._clock = clock
        self._running: dict[int, asyncio.Task[None]] = {}
        # Every shard's task, stopping ones included, for close() to wait for.
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: dict[int, asyncio.Future[None]] = {}
        # The shards start() waits for: a failure of theirs is start()'s to raise.
        self._awaited: frozenset[int] = frozenset()
        self._renewed_at = clock()
        self._given_up = False
        self._renew = Periodic(
            "discord shards", cluster.lease_s / RENEWALS_PER_LEASE, self.reconcile, jitter=0.1
        )

    @property
    def count(self) -> int:
        return self._count

    @property
    def running(self) -> frozenset[int]:
        """The shards run here (started, perhaps not ready yet)."""
        return frozenset(self._running)

    async def start(self) -> None:
        """Take this replica's share and return once it is ready (it may be none).

        Raises why a shard could not connect (a bad token, an intent switched off ...),
        or StoreError when the store cannot say which shards are this replica's.
        """
        await self.reconcile()
        # Renewed from now on: IDENTIFYs may wait longer than a lease.
        self._renew.start()
        starting = dict(self._ready)
        self._awaited = frozenset(starting)
        try:
            outcomes = await asyncio.gather(*starting.values(), return_exceptions=True)
        finally:
            self._awaited = frozenset()
        for outcome in outcomes:
            # A shard given back while it started is no failure of the start.
            if isinstance(outcome, BaseException) and not isinstance(
                outcome, asyncio.CancelledError
            ):
                raise outcome

    async def reconcile(self) -> None:
        """Renew this replica's shards; start those newly owned, stop those given back."""
        try:
            owned = await self._cluster.shards(PLATFORM, self._count)
        except StoreError:
            if self._running and self._clock() - self._renewed_at > self._cluster.lease_s:
                _log.warning(
                    "Discord: the shard leases could not be renewed for %.0f s; stopping "
                    "shard(s) %s, which another replica may run by now",
                    self._cluster.lease_s,
                    sorted(self._running),
                )
                await asyncio.gather(*(self._stop(s) for s in list(self._running)))
            raise
        self._renewed_at = self._clock()
        for shard_id in sorted(set(self._running) - owned):
            _log.info("Discord: shard %d of %d goes to another replica", shard_id, self._count)
            await self._stop(shard_id)
        if self._given_up:
            return
        for shard_id in sorted(owned - set(self._running)):
            _log.info("Discord: starting shard %d of %d", shard_id, self._count)
            self._ready[shard_id] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._run(shard_id), name=f"discord-shard-{shard_id}")
            self._running[shard_id] = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop every shard and release them, so another replica takes them at once.
        Safe to call twice."""
        await self._renew.stop()
        self._running.clear()
        for task in self._tasks:
            task.cancel()
        # A renewal cancelled above may have left a shard stopping: wait for it too.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._cluster.release_shards(PLATFORM)
        except StoreError:
            _log.warning(
                "Discord: could not release the shards; the others take them when their "
                "leases run out",
                exc_info=True,
            )

    async def _stop(self, shard_id: int) -> None:
        task = self._running.pop(shard_id, None)
        self._ready.pop(shard_id, None)
        if task is not None:
            task.cancel()
            # wait(), not await: a cancellation of the caller itself must not be swallowed.
            await asyncio.wait({task})

    async def _run(self, shard_id: int) -> None:
        """One shard's life: log in, connect, wait until ready, run until stopped or lost."""
        ready = self._ready[shard_id]
        client: GatewayClient | None = None
        runner: asyncio.Task[None] | None = None
        waiting: asyncio.Task[None] | None = None
        try:
            client = await self._launch(shard_id)
            runner = asyncio.create_task(client.connect(reconnect=True))
            waiting = asyncio.create_task(client.wait_until_ready())
            await asyncio.wait({runner, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if not client.is_ready():
                await runner  # it ended: raises why
                raise PlatformSetupError("Discord closed the connection before it was ready")
            ready.set_result(None)
            _log.info("Discord: shard %d of %d is connected", shard_id, self._count)
            await runner
            self._ended(shard_id, ready, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._ended(shard_id, ready, exc)
        finally:
            if waiting is not None:
                waiting.cancel()
            if not ready.done():
                ready.cancel()
            if client is not None:
                await _shut(client, runner)

    def _ended(self, shard_id: int, ready: asyncio.Future[None], exc: Exception | None) -> None:
        """The connection ended by itself (discord.py reconnects on its own: for good)."""
        if self._running.pop(shard_id, None) is None:
            return
        self._ready.pop(shard_id, None)
        if shard_id in self._awaited and not ready.done() and exc is not None:
            ready.set_exception(exc)  # start() raises it
            return
        self._given_up = True
        self._lost(shard_id, exc)


async def _shut(client: GatewayClient, runner: asyncio.Task[None] | None) -> None:
    try:
        await client.close()
    except Exception:
        _log.exception("closing a Discord shard's client failed")
    if runner is not None:
        runner.cancel()
        await asyncio.wait({runner})
        if not runner.cancelled():
            runner.exception()  # seen (it was logged or raised already)
