"""This replica among the others: its heartbeat, its leases, its share of the shards.

* :class:`Cluster` beats in the store's ``replicas`` table, so every replica knows how
  many are alive (to divide Discord's request budget and shards), and hands out shards
  by lease (:meth:`Cluster.shards`).
* :class:`LeaseKeeper` renews the leases of every event this replica holds while its
  turns and deliveries run, and, when the store is shared, looks for events whose
  replica died (their lease ran out) and hands them to the intake to finish.

Alone on an embedded store none of this reaches the database more than a renewal every
few seconds: one process holds every shard and nothing is ever taken over while it runs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable

from bot.contract import Platform
from bot.core.tasks import Periodic
from bot.errors import StoreError
from bot.intake.ratelimit import Buckets, LocalBuckets
from bot.store import Store

_log = logging.getLogger(__name__)

# Renewals and heartbeats come this many times per lease: two may fail in a row and the
# lease still holds.
BEATS_PER_LEASE = 3


class Cluster:
    """:class:`~bot.adapters.base.Cluster` over the store's replicas and shards tables."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._replicas = 1
        self._local = LocalBuckets(clock)
        self._beat = Periodic(
            "replica heartbeat", store.lease_s / BEATS_PER_LEASE, self.beat, jitter=0.1
        )

    @property
    def shared(self) -> bool:
        return self._store.shared

    @property
    def replicas(self) -> int:
        return self._replicas

    @property
    def lease_s(self) -> float:
        return self._store.lease_s

    async def start(self) -> None:
        """Join: the first beat now (so the count is right before adapters start), the
        next ones in the background."""
        if not self.shared:
            return
        try:
            await self.beat()
        except StoreError:
            _log.exception("could not join the other replicas yet; trying again shortly")
        self._beat.start()

    async def beat(self) -> None:
        count = await self._store.replicas.beat()
        if count != self._replicas:
            _log.info("%d replica(s) alive (this one is %s)", count, self._store.replica)
        self._replicas = count

    async def pace(self, key: str, *, per_minute: float, burst: int = 1) -> float:
        buckets: Buckets = self._store.rate_limits if self.shared else self._local
        return await buckets.take(f"pace:{key}", per_minute=per_minute, burst=burst)

    async def shards(self, platform: Platform, count: int) -> frozenset[int]:
        if count < 1:
            raise ValueError("a platform has at least one shard")
        if not self.shared:
            return frozenset(range(count))
        want = math.ceil(count / max(1, self._replicas))
        return await self._store.shards.hold(platform, count, want=want)

    async def release_shards(self, platform: Platform) -> None:
        if self.shared:
            await self._store.shards.release(platform)

    async def leave(self) -> None:
        """Stop beating and say so, so the others take this replica's share at once."""
        if not self._beat.running:
            return
        await self._beat.stop()
        try:
            await self._store.replicas.leave()
        except StoreError:
            _log.warning("could not tell the other replicas this one stops", exc_info=True)


class LeaseKeeper:
    """Keeps this replica's events leased to it, and takes over those of dead replicas."""

    def __init__(self, store: Store, reap: Callable[[], Awaitable[object]]) -> None:
        self._store = store
        interval = store.lease_s / BEATS_PER_LEASE
        self._renew = Periodic("inbox lease renewal", interval, self.renew, jitter=0.05)
        # Looking for orphans is cheap but not free: about twice per lease.
        self._reap = Periodic("inbox take-over", store.lease_s / 2, reap, jitter=0.2)

    def start(self) -> None:
        self._renew.start()
        if self._store.shared:
            self._reap.start()

    async def renew(self) -> None:
        renewed = await self._store.inbox.renew()
        if renewed:
            _log.debug("renewed the leases of %d event(s)", renewed)

    async def stop_reaping(self) -> None:
        """Take over nothing more (shutdown begins); leases are still renewed."""
        await self._reap.stop()

    async def stop(self) -> None:
        """Stop, and let go of what this replica still holds (answers waiting in the
        outbox, questions a shutdown cut short): the others need not wait for the leases
        to run out. Safe to repeat."""
        if not self._renew.running:
            return
        await self._reap.stop()
        await self._renew.stop()
        try:
            released = await self._store.inbox.let_go()
        except StoreError:
            _log.warning(
                "could not let go of this replica's events; they are taken over "
                "when their leases run out",
                exc_info=True,
            )
            return
        if released:
            _log.info("let go of %d event(s) for another replica or the next start", released)
