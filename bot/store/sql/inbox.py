"""The inbox of platform events: each claimed once, leased to one replica, recovered after a
crash.

The claim records the event and begins its turn in one transaction, so of any number of
concurrent deliveries (in this process or another) exactly one gets a
:class:`~bot.store.values.Claim`. The event is leased to the claiming replica, which
renews every lease it holds in one statement (:meth:`SqlInbox.renew`); recovery takes
over only events whose lease ran out, or every one when the backend knows this process
is alone (``Database.exclusive``), and bumps their fence. The life of an event is drawn
in :class:`~bot.store.protocols.Inbox`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, get_args

from bot.store.sql.conversations import start_turn
from bot.store.sql.driver import NEVER, Conn, Database, Row, moment, now, placeholders
from bot.store.values import Backlog, Claim, EventOutcome, RecoveredEvent, RecoveryScope

_log = logging.getLogger(__name__)

_EVENT_OUTCOMES: frozenset[str] = frozenset(get_args(EventOutcome))
# How long a handled command is remembered: far past any platform's replay window.
HANDLED_KEPT = timedelta(days=1)
_COLUMNS = (
    "platform, event_id, conversation, question, turn_id, message, reply_id, attempts, "
    "received_at, fence, reply, deliver_by"
)
# An event nobody holds: no owner, a lease run out, or (``?`` true) the process is alone.
# Events this replica holds are never taken: their turns are running here.
_TAKEABLE = "(owner IS NULL OR owner <> ?) AND (? OR lease_until IS NULL OR lease_until < ?)"


class SqlInbox:
    """:class:`~bot.store.protocols.Inbox` on a backend's database, for one replica."""

    def __init__(self, db: Database, *, replica: str, lease_s: float) -> None:
        self._db = db
        self._replica = replica
        self._lease = timedelta(seconds=lease_s)

    async def claim(
        self, platform: str, event_id: str, conversation: str, question: str, message: str
    ) -> Claim | None:
        at = now()
        async with self._db.transaction("claim", conversation, write=True) as conn:
            inserted = await conn.execute(
                "INSERT INTO inbox (platform, event_id, conversation, question, status, "
                "    attempts, message, received_at, updated_at, owner, lease_until, fence) "
                "SELECT ?, ?, ?, ?, 'pending', 1, ?, ?, ?, ?, ?, 1 "
                # An event answered without a turn (a command, a refusal, a hint) stays so.
                "WHERE NOT EXISTS "
                "    (SELECT 1 FROM handled WHERE platform = ? AND event_id = ?) "
                "ON CONFLICT (platform, event_id) DO NOTHING",
                platform,
                event_id,
                conversation,
                question,
                message,
                at,
                at,
                self._replica,
                at + self._lease,
                platform,
                event_id,
            )
            if not inserted:
                return None
            claim = await start_turn(conn, conversation, question, at)
            await _link_turn(conn, platform, event_id, claim.turn_id)
        return dataclasses.replace(claim, received_at=at)

    async def hold(
        self,
        platform: str,
        event_id: str,
        reply: str,
        *,
        deliver_by: datetime,
        fence: int | None = None,
    ) -> bool:
        return await self._update(
            "hold",
            "status = 'delivering', reply = ?, deliver_by = ?",
            (reply, deliver_by),
            (platform, event_id),
            fence=fence,
            only="status IN ('pending', 'delivering')",
        )

    async def handled(self, platform: str, event_id: str) -> bool:
        async with self._db.transaction("handled", None, write=True) as conn:
            inserted = await conn.execute(
                "INSERT INTO handled (platform, event_id, handled_at) VALUES (?, ?, ?) "
                "ON CONFLICT (platform, event_id) DO NOTHING",
                platform,
                event_id,
                now(),
            )
        return inserted > 0

    async def record_reply(
        self, platform: str, event_id: str, reply_id: str, *, fence: int | None = None
    ) -> bool:
        return await self._update(
            "record_reply", "reply_id = ?", (reply_id,), (platform, event_id), fence=fence
        )

    async def finish(
        self, platform: str, event_id: str, outcome: EventOutcome, *, fence: int | None = None
    ) -> bool:
        if outcome not in _EVENT_OUTCOMES:
            raise ValueError(f"an event finishes as answered or undelivered, not {outcome!r}")
        return await self._update(
            "finish_event",
            "status = ?, reply = NULL, deliver_by = NULL, lease_until = NULL",
            (outcome,),
            (platform, event_id),
            fence=fence,
        )

    async def release(self, platform: str, event_id: str, *, fence: int | None = None) -> bool:
        return await self._update(
            "release",
            "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, lease_until = NULL",
            (),
            (platform, event_id),
            fence=fence,
            only="status = 'pending'",
        )

    async def renew(self) -> int:
        async with self._db.transaction("renew", None, write=True) as conn:
            return await conn.execute(
                "UPDATE inbox SET lease_until = ? "
                "WHERE owner = ? AND status IN ('pending', 'delivering')",
                now() + self._lease,
                self._replica,
            )

    async def let_go(self) -> int:
        async with self._db.transaction("let_go", None, write=True) as conn:
            return await conn.execute(
                "UPDATE inbox SET lease_until = NULL "
                "WHERE owner = ? AND status IN ('pending', 'delivering')",
                self._replica,
            )

    async def ahead(self, platform: str, event_id: str, *, delivering: bool = False) -> int:
        # Whoever holds them: an earlier event this replica claimed a moment ago (or took
        # over) may not be in its in-process queue yet, and must still go first. For the
        # order, an earlier answer still being delivered counts too, whoever holds it: its
        # post must come first, and if its replica died it will be taken over.
        unanswered = (
            "o.status IN ('pending', 'delivering') " if delivering else "o.status = 'pending' "
        )
        # Ids of one moment in code point order, as the order gate sorts them (SQLite's
        # text compares so already): a database's language collation would put "Eva"
        # before "EvB", and two such turns would each wait for the other.
        c = ' COLLATE "C"' if self._db.dialect == "postgresql" else ""
        async with self._db.transaction("ahead", None, write=False) as conn:
            row = await conn.fetchone(
                "SELECT COUNT(*) FROM inbox AS o JOIN inbox AS e "
                "  ON e.platform = ? AND e.event_id = ? AND o.conversation = e.conversation "
                f"WHERE {unanswered}AND (o.received_at, o.platform{c}, o.event_id{c}) "
                f"    < (e.received_at, e.platform{c}, e.event_id{c})",
                platform,
                event_id,
            )
        return int(row[0]) if row is not None else 0

    async def backlog(self) -> Backlog:
        async with self._db.transaction("backlog", None, write=False) as conn:
            row = await conn.fetchone(
                "SELECT COUNT(*), MIN(received_at) FROM inbox "
                "WHERE status IN ('pending', 'delivering')"
            )
        if row is None or not row[0]:
            return Backlog(0, None)
        return Backlog(int(row[0]), moment(row[1]))

    async def recover(
        self,
        *,
        platforms: Collection[str],
        max_age_s: float,
        max_attempts: int = 2,
        now: datetime | None = None,
        received_before: datetime | None = None,
    ) -> list[RecoveredEvent]:
        scope = RecoveryScope.of(
            platforms,
            max_age_s=max_age_s,
            max_attempts=max_attempts,
            now=now,
            received_before=received_before,
        )
        # Leases run on the real clock; ``now`` only measures ages (tests pass one).
        at = _now()
        taken = _Taking(
            platforms=scope.platforms,
            before=scope.taken_before or NEVER,
            replica=self._replica,
            alone=self._db.exclusive,
            at=at,
            lease_until=at + self._lease,
        )
        async with self._db.transaction("recover", None, write=True) as conn:
            expired = await conn.execute(
                "UPDATE inbox SET status = 'expired', lease_until = NULL, updated_at = ? "
                "WHERE status = 'pending' AND received_at < ?",
                at,
                scope.expire_before,
            )
            if expired:
                _log.info("inbox: %d pending event(s) expired unanswered", expired)
            await conn.execute("DELETE FROM handled WHERE handled_at < ?", scope.now - HANDLED_KEPT)
            if not scope.platforms:
                return []
            given_up = await _quarantine(conn, taken, scope.max_attempts)
            answering = await _take_over(conn, taken)
            return given_up + answering + await _deliveries(conn, taken)

    async def _update(
        self,
        operation: str,
        assignments: str,
        values: tuple[Any, ...],
        event: tuple[str, str],
        *,
        fence: int | None,
        only: str = "1 = 1",
    ) -> bool:
        """One fenced update of the event ``(platform, event id)``: with ``fence``, only
        while this replica holds the event at that fence."""
        platform, event_id = event
        fenced = "AND owner = ? AND fence = ?" if fence is not None else ""
        guard: tuple[Any, ...] = (self._replica, fence) if fence is not None else ()
        async with self._db.transaction(operation, None, write=True) as conn:
            changed = await conn.execute(
                f"UPDATE inbox SET {assignments}, updated_at = ? "
                f"WHERE platform = ? AND event_id = ? AND {only} {fenced}",
                *values,
                _now(),
                platform,
                event_id,
                *guard,
            )
        if not changed and fence is not None:
            _log.info(
                "inbox: %s of %s event %s skipped: the event is finished or another "
                "replica holds it now",
                operation,
                platform,
                event_id,
            )
        return changed > 0


def _now() -> datetime:
    return now()


@dataclasses.dataclass(frozen=True, slots=True)
class _Taking:
    """What one recovery takes, and how it stamps what it takes."""

    platforms: tuple[str, ...]
    before: datetime
    replica: str
    alone: bool
    at: datetime
    lease_until: datetime

    @property
    def where(self) -> str:
        return (
            f"platform IN ({placeholders(len(self.platforms))}) AND received_at < ? AND {_TAKEABLE}"
        )

    @property
    def params(self) -> tuple[Any, ...]:
        return (*self.platforms, self.before, self.replica, self.alone, self.at)


async def _link_turn(conn: Conn, platform: str, event_id: str, turn_id: int) -> None:
    await conn.execute(
        "UPDATE inbox SET turn_id = ? WHERE platform = ? AND event_id = ?",
        turn_id,
        platform,
        event_id,
    )


async def _quarantine(conn: Conn, taking: _Taking, max_attempts: int) -> list[RecoveredEvent]:
    rows = await conn.fetchall(
        "UPDATE inbox SET status = 'quarantined', lease_until = NULL, updated_at = ? "
        f"WHERE status = 'pending' AND attempts >= ? AND {taking.where} "
        f"RETURNING {_COLUMNS}",
        taking.at,
        max_attempts,
        *taking.params,
    )
    quarantined = []
    for row in rows:
        _log.warning(
            "inbox: quarantined %s event %s in %s after %d attempts; each one crashed the "
            "bot, so it is not tried again",
            row["platform"],
            row["event_id"],
            row["conversation"],
            row["attempts"],
        )
        quarantined.append(_recovered(row, None))
    return sorted(quarantined, key=_order)


async def _take_over(conn: Conn, taking: _Taking) -> list[RecoveredEvent]:
    rows = await conn.fetchall(
        "UPDATE inbox SET attempts = attempts + 1, owner = ?, lease_until = ?, "
        "    fence = fence + 1, updated_at = ? "
        f"WHERE status = 'pending' AND {taking.where} "
        f"RETURNING {_COLUMNS}",
        taking.replica,
        taking.lease_until,
        taking.at,
        *taking.params,
    )
    recovered = []
    for row in sorted(rows, key=_row_order):
        started = None
        if row["turn_id"] is not None:
            found = await conn.fetchone(
                "SELECT c.created_at FROM turns AS t "
                "JOIN conversations AS c ON c.key = t.conversation WHERE t.id = ?",
                row["turn_id"],
            )
            started = None if found is None else moment(found[0])
        if started is None:
            # A reset deleted the turn: begin it again, in a conversation created anew.
            fresh = await start_turn(
                conn, str(row["conversation"]), str(row["question"]), taking.at
            )
            await _link_turn(conn, str(row["platform"]), str(row["event_id"]), fresh.turn_id)
            claim = dataclasses.replace(fresh, fence=int(row["fence"]))
        else:
            claim = Claim(int(row["turn_id"]), started, int(row["fence"]))
        claim = dataclasses.replace(claim, received_at=moment(row["received_at"]))
        recovered.append(_recovered(row, claim))
    return recovered


async def _deliveries(conn: Conn, taking: _Taking) -> list[RecoveredEvent]:
    rows = await conn.fetchall(
        "UPDATE inbox SET owner = ?, lease_until = ?, fence = fence + 1, updated_at = ? "
        f"WHERE status = 'delivering' AND {taking.where} "
        f"RETURNING {_COLUMNS}",
        taking.replica,
        taking.lease_until,
        taking.at,
        *taking.params,
    )
    return [
        dataclasses.replace(
            _recovered(row, None), reply=str(row["reply"]), deliver_by=moment(row["deliver_by"])
        )
        for row in sorted(rows, key=_row_order)
    ]


def _row_order(row: Row) -> tuple[datetime, str, str]:
    return moment(row["received_at"]), str(row["platform"]), str(row["event_id"])


def _order(event: RecoveredEvent) -> tuple[datetime, str, str]:
    return event.received_at, event.platform, event.event_id


def _recovered(row: Row, claim: Claim | None) -> RecoveredEvent:
    return RecoveredEvent(
        platform=str(row["platform"]),
        event_id=str(row["event_id"]),
        conversation=str(row["conversation"]),
        message=str(row["message"]),
        reply_id=None if row["reply_id"] is None else str(row["reply_id"]),
        attempts=int(row["attempts"]),
        received_at=moment(row["received_at"]),
        claim=claim,
        fence=int(row["fence"]),
    )
