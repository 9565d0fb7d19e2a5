"""What replicas share besides the inbox: rate-limit buckets, who is alive, who runs which
shard. Each is a small table written in short transactions; none is held open."""

from __future__ import annotations

import logging
from datetime import timedelta

from bot.core.buckets import full_after_s, take_token
from bot.store.sql.driver import Database, moment, now, placeholders

_log = logging.getLogger(__name__)

# A bucket untouched this long is full again for any sane rate: its row can go.
_BUCKET_KEPT = timedelta(days=1)


class SqlRateLimits:
    """:class:`~bot.store.protocols.RateLimits`: one row per user's bucket."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def take(self, key: str, *, per_minute: float, burst: int) -> float:
        at = now()
        async with self._db.transaction("rate_limit", None, write=True) as conn:
            await conn.execute(
                "INSERT INTO rate_buckets (key, tokens, counted_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                key,
                float(burst),
                at,
            )
            # Locked for the rest of the transaction: two replicas taking from one bucket
            # at once must not both spend the same token.
            row = await conn.fetchone(
                "SELECT tokens, counted_at FROM rate_buckets WHERE key = ? FOR UPDATE", key
            )
            if row is None:  # pragma: no cover - inserted above, in this transaction
                raise AssertionError("the rate bucket vanished inside its transaction")
            elapsed = (at - moment(row["counted_at"])).total_seconds()
            left, wait = take_token(
                float(row["tokens"]), elapsed, per_minute=per_minute, burst=burst
            )
            await conn.execute(
                "UPDATE rate_buckets SET tokens = ?, counted_at = ? WHERE key = ?", left, at, key
            )
            kept = max(
                _BUCKET_KEPT, timedelta(seconds=full_after_s(per_minute=per_minute, burst=burst))
            )
            await conn.execute("DELETE FROM rate_buckets WHERE counted_at < ?", at - kept)
        return wait


class SqlReplicas:
    """:class:`~bot.store.protocols.Replicas`: a heartbeat row per live replica."""

    def __init__(self, db: Database, *, replica: str, stale_s: float) -> None:
        self._db = db
        self._replica = replica
        self._stale = timedelta(seconds=stale_s)

    async def beat(self) -> int:
        at = now()
        async with self._db.transaction("heartbeat", None, write=True) as conn:
            await conn.execute(
                "INSERT INTO replicas (id, seen_at) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
                self._replica,
                at,
            )
            gone = await conn.execute("DELETE FROM replicas WHERE seen_at < ?", at - self._stale)
            if gone:
                _log.info("%d replica(s) stopped beating; their share goes to the others", gone)
            row = await conn.fetchone("SELECT COUNT(*) FROM replicas")
        return max(1, int(row[0]) if row is not None else 1)

    async def leave(self) -> None:
        async with self._db.transaction("leave", None, write=True) as conn:
            await conn.execute("DELETE FROM replicas WHERE id = ?", self._replica)


class SqlShards:
    """:class:`~bot.store.protocols.Shards`: a leased row per running shard."""

    def __init__(self, db: Database, *, replica: str, lease_s: float) -> None:
        self._db = db
        self._replica = replica
        self._lease = timedelta(seconds=lease_s)

    async def hold(self, platform: str, count: int, *, want: int) -> frozenset[int]:
        at = now()
        until = at + self._lease
        async with self._db.transaction("shards", None, write=True) as conn:
            # Shards of an older shard count are nobody's any more.
            await conn.execute(
                "DELETE FROM shards WHERE platform = ? AND shard >= ?", platform, count
            )
            rows = await conn.fetchall(
                "UPDATE shards SET lease_until = ? WHERE platform = ? AND owner = ? "
                "RETURNING shard",
                until,
                platform,
                self._replica,
            )
            mine = sorted(int(row[0]) for row in rows)
            extra = mine[max(0, want) :]
            if extra:
                await conn.execute(
                    "DELETE FROM shards WHERE platform = ? AND owner = ? "
                    f"AND shard IN ({placeholders(len(extra))})",
                    platform,
                    self._replica,
                    *extra,
                )
                mine = mine[: max(0, want)]
            for shard in range(count):
                if len(mine) >= want:
                    break
                if shard in mine:
                    continue
                taken = await conn.execute(
                    "INSERT INTO shards (platform, shard, owner, lease_until) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (platform, shard) DO UPDATE "
                    "SET owner = excluded.owner, lease_until = excluded.lease_until "
                    "WHERE shards.lease_until < ?",
                    platform,
                    shard,
                    self._replica,
                    until,
                    at,
                )
                if taken:
                    mine.append(shard)
        return frozenset(mine)

    async def release(self, platform: str) -> None:
        async with self._db.transaction("release_shards", None, write=True) as conn:
            await conn.execute(
                "DELETE FROM shards WHERE platform = ? AND owner = ?", platform, self._replica
            )
