"""The inbox of platform events in SQLite: each event claimed once, recovered after a crash.

The claim records the event and begins its turn in one transaction, so of any number of
concurrent deliveries (in this process or another) exactly one gets a
:class:`~bot.store.values.Claim`. The life of an event is drawn in
:class:`~bot.store.protocols.Inbox`.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import get_args

import aiosqlite

from bot.store.sqlite.conversations import start_turn
from bot.store.sqlite.database import (
    Database,
    fetchall,
    moment,
    now_text,
    placeholders,
    stamp,
    write,
)
from bot.store.values import Claim, EventOutcome, RecoveredEvent, RecoveryScope

_log = logging.getLogger(__name__)

_EVENT_OUTCOMES: frozenset[str] = frozenset(get_args(EventOutcome))
# How long a handled command is remembered: far past any platform's replay window.
HANDLED_KEPT = timedelta(days=1)
_COLUMNS = (
    "i.platform, i.event_id, i.conversation, i.question, i.turn_id, i.message, i.reply_id, "
    "i.attempts, i.received_at"
)


class SqliteInbox:
    """:class:`~bot.store.protocols.Inbox` on one SQLite database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(
        self, platform: str, event_id: str, conversation: str, question: str, message: str
    ) -> Claim | None:
        now = now_text()
        async with self._db.transaction("claim", conversation, write=True) as conn:
            inserted = await write(
                conn,
                "INSERT INTO inbox (platform, event_id, conversation, question, status, "
                "                   attempts, message, received_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'pending', 1, ?, ?, ?) "
                "ON CONFLICT (platform, event_id) DO NOTHING",
                (platform, event_id, conversation, question, message, now, now),
            )
            if not inserted:
                return None
            claim = await start_turn(conn, conversation, question, now)
            await _link_turn(conn, platform, event_id, claim.turn_id)
        return claim

    async def hold(self, platform: str, event_id: str, reply: str, *, deliver_by: datetime) -> None:
        async with self._db.transaction("hold", None, write=True) as conn:
            await write(
                conn,
                "UPDATE inbox SET status = 'delivering', reply = ?, deliver_by = ?, "
                "    updated_at = ? "
                "WHERE platform = ? AND event_id = ? AND status IN ('pending', 'delivering')",
                (reply, stamp(deliver_by), now_text(), platform, event_id),
            )

    async def handled(self, platform: str, event_id: str) -> bool:
        async with self._db.transaction("handled", None, write=True) as conn:
            inserted = await write(
                conn,
                "INSERT INTO handled (platform, event_id, handled_at) VALUES (?, ?, ?) "
                "ON CONFLICT (platform, event_id) DO NOTHING",
                (platform, event_id, now_text()),
            )
        return inserted > 0

    async def record_reply(self, platform: str, event_id: str, reply_id: str) -> None:
        async with self._db.transaction("record_reply", None, write=True) as conn:
            await write(
                conn,
                "UPDATE inbox SET reply_id = ?, updated_at = ? WHERE platform = ? AND event_id = ?",
                (reply_id, now_text(), platform, event_id),
            )

    async def finish(self, platform: str, event_id: str, outcome: EventOutcome) -> None:
        if outcome not in _EVENT_OUTCOMES:
            raise ValueError(f"an event finishes as answered or undelivered, not {outcome!r}")
        async with self._db.transaction("finish_event", None, write=True) as conn:
            await write(
                conn,
                "UPDATE inbox SET status = ?, reply = NULL, deliver_by = NULL, updated_at = ? "
                "WHERE platform = ? AND event_id = ?",
                (outcome, now_text(), platform, event_id),
            )

    async def release(self, platform: str, event_id: str) -> None:
        async with self._db.transaction("release", None, write=True) as conn:
            await write(
                conn,
                "UPDATE inbox "
                "SET attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, "
                "    updated_at = ? "
                "WHERE platform = ? AND event_id = ? AND status = 'pending'",
                (now_text(), platform, event_id),
            )

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
        cutoff = stamp(scope.expire_before)
        # ISO-8601 UTC stamps sort as text, so "no bound" is any stamp from this millennium.
        before = "9999" if scope.taken_before is None else stamp(scope.taken_before)
        chosen = scope.platforms
        # Rows are stamped with the real clock; ``now`` only measures ages (tests pass one).
        changed_at = now_text()
        async with self._db.transaction("recover", None, write=True) as conn:
            expired = await write(
                conn,
                "UPDATE inbox SET status = 'expired', updated_at = ? "
                "WHERE status = 'pending' AND received_at < ?",
                (changed_at, cutoff),
            )
            if expired:
                _log.info("inbox: %d pending event(s) expired unanswered", expired)
            await write(
                conn,
                "DELETE FROM handled WHERE handled_at < ?",
                (stamp(scope.now - HANDLED_KEPT),),
            )
            if not chosen:
                return []
            given_up = await _quarantine(conn, chosen, scope.max_attempts, changed_at, before)
            taken = await _take_over(conn, chosen, changed_at, before)
            return given_up + taken + await _deliveries(conn, chosen, before)


async def _link_turn(
    conn: aiosqlite.Connection, platform: str, event_id: str, turn_id: int
) -> None:
    await write(
        conn,
        "UPDATE inbox SET turn_id = ? WHERE platform = ? AND event_id = ?",
        (turn_id, platform, event_id),
    )


async def _quarantine(
    conn: aiosqlite.Connection,
    platforms: Sequence[str],
    max_attempts: int,
    changed_at: str,
    before: str,
) -> list[RecoveredEvent]:
    rows = await fetchall(
        conn,
        "UPDATE inbox SET status = 'quarantined', updated_at = ? "
        f"WHERE status = 'pending' AND platform IN ({placeholders(len(platforms))}) "
        "  AND attempts >= ? AND received_at < ? "
        "RETURNING platform, event_id, conversation, message, reply_id, attempts, "
        "          received_at",
        (changed_at, *platforms, max_attempts, before),
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
    return sorted(quarantined, key=lambda e: (e.received_at, e.platform, e.event_id))


async def _take_over(
    conn: aiosqlite.Connection, platforms: Sequence[str], changed_at: str, before: str
) -> list[RecoveredEvent]:
    marks = placeholders(len(platforms))
    await write(
        conn,
        "UPDATE inbox SET attempts = attempts + 1, updated_at = ? "
        f"WHERE status = 'pending' AND platform IN ({marks}) AND received_at < ?",
        (changed_at, *platforms, before),
    )
    rows = await fetchall(
        conn,
        f"SELECT {_COLUMNS}, c.created_at AS conversation_started FROM inbox AS i "
        "LEFT JOIN turns AS t ON t.id = i.turn_id "
        "LEFT JOIN conversations AS c ON c.key = t.conversation "
        f"WHERE i.status = 'pending' AND i.platform IN ({marks}) AND i.received_at < ? "
        "ORDER BY i.received_at, i.platform, i.event_id",
        (*platforms, before),
    )
    recovered = []
    for row in rows:
        if row["turn_id"] is None or row["conversation_started"] is None:
            # A reset deleted the turn: begin it again, in a conversation created anew.
            claim = await start_turn(
                conn, str(row["conversation"]), str(row["question"]), changed_at
            )
            await _link_turn(conn, str(row["platform"]), str(row["event_id"]), claim.turn_id)
        else:
            claim = Claim(int(row["turn_id"]), moment(row["conversation_started"]))
        recovered.append(_recovered(row, claim))
    return recovered


async def _deliveries(
    conn: aiosqlite.Connection, platforms: Sequence[str], before: str
) -> list[RecoveredEvent]:
    rows = await fetchall(
        conn,
        f"SELECT {_COLUMNS}, i.reply, i.deliver_by FROM inbox AS i "
        f"WHERE i.status = 'delivering' AND i.platform IN ({placeholders(len(platforms))}) "
        "  AND i.received_at < ? "
        "ORDER BY i.received_at, i.platform, i.event_id",
        (*platforms, before),
    )
    return [
        dataclasses.replace(
            _recovered(row, None),
            reply=str(row["reply"]),
            deliver_by=moment(row["deliver_by"]),
        )
        for row in rows
    ]


def _recovered(row: sqlite3.Row, claim: Claim | None) -> RecoveredEvent:
    return RecoveredEvent(
        platform=str(row["platform"]),
        event_id=str(row["event_id"]),
        conversation=str(row["conversation"]),
        message=str(row["message"]),
        reply_id=None if row["reply_id"] is None else str(row["reply_id"]),
        attempts=int(row["attempts"]),
        received_at=moment(row["received_at"]),
        claim=claim,
    )
