"""Conversations, their turns and readers' votes, in the SQL both backends speak.

A turn is stored in two steps so a crash mid-answer still leaves the question on record:
the inbox's claim inserts it ``pending`` (:func:`start_turn`), and :meth:`finish_turn`
adds the answer and its numbered sources. Older turns are folded into a rolling
``summary``; ``summary_upto`` is the id of the last turn it covers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import cast, get_args

from bot.contract import Rating, Source
from bot.store.codec import decode_sources, encode_sources
from bot.store.sql.driver import Conn, Database, Row, moment, now
from bot.store.values import (
    Claim,
    ConversationInfo,
    ConversationState,
    StoredTurn,
    TurnStatus,
)

_TURN_STATUSES: frozenset[str] = frozenset(get_args(TurnStatus))
_RATINGS: frozenset[str] = frozenset(get_args(Rating))

_TURN_COLUMNS = "id, question, answer, status, created_at"

_INFO_SELECT = (
    "SELECT c.key, c.created_at, c.updated_at, c.summary != '' AS has_summary, "
    "       COUNT(t.id) AS turn_count, COALESCE(MAX(t.id), 0) AS last_turn, "
    "       (SELECT COUNT(*) FROM feedback AS f JOIN turns AS ft ON ft.id = f.turn_id "
    "        WHERE ft.conversation = c.key AND f.rating = 'up') AS feedback_up, "
    "       (SELECT COUNT(*) FROM feedback AS f JOIN turns AS ft ON ft.id = f.turn_id "
    "        WHERE ft.conversation = c.key AND f.rating = 'down') AS feedback_down "
    "FROM conversations AS c LEFT JOIN turns AS t ON t.conversation = c.key "
)


async def start_turn(conn: Conn, conversation: str, question: str, at: datetime) -> Claim:
    """Create or touch the conversation and insert a pending turn for ``question``.

    Runs inside the caller's write transaction (the inbox's claim and recovery). The
    claim's fence is the first one; a take-over gives the right one.
    """
    started = await conn.fetchone(
        "INSERT INTO conversations (key, created_at, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at "
        "RETURNING created_at",
        conversation,
        at,
        at,
    )
    turn = await conn.fetchone(
        "INSERT INTO turns (conversation, question, status, created_at) "
        "VALUES (?, ?, 'pending', ?) RETURNING id",
        conversation,
        question,
        at,
    )
    if started is None or turn is None:  # pragma: no cover - RETURNING always gives a row
        raise AssertionError("INSERT ... RETURNING returned no row")
    return Claim(turn_id=int(turn["id"]), conversation_started=moment(started["created_at"]))


class SqlConversations:
    """:class:`~bot.store.protocols.ConversationStore` on a backend's database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self, conversation: str) -> ConversationState:
        async with self._db.transaction("load", conversation, write=False) as conn:
            head = await _head(conn, conversation)
            if head is None:
                return ConversationState(conversation=conversation)
            rows = await conn.fetchall(
                f"SELECT {_TURN_COLUMNS} FROM turns "
                "WHERE conversation = ? AND id > ? AND status = 'answered' ORDER BY id",
                conversation,
                head["summary_upto"],
            )
        return _state(conversation, head, rows)

    async def transcript(self, conversation: str) -> ConversationState | None:
        async with self._db.transaction("transcript", conversation, write=False) as conn:
            head = await _head(conn, conversation)
            if head is None:
                return None
            # A pending turn whose event was given up on will never be answered; say so.
            rows = await conn.fetchall(
                "SELECT t.id, t.question, t.answer, t.created_at, "
                "       (SELECT COUNT(*) FROM feedback AS f "
                "        WHERE f.turn_id = t.id AND f.rating = 'up') AS feedback_up, "
                "       (SELECT COUNT(*) FROM feedback AS f "
                "        WHERE f.turn_id = t.id AND f.rating = 'down') AS feedback_down, "
                "       CASE WHEN t.status = 'pending' "
                "                 AND i.status IN ('expired', 'quarantined') "
                "            THEN i.status ELSE t.status END AS status "
                "FROM turns AS t LEFT JOIN inbox AS i ON i.turn_id = t.id "
                "WHERE t.conversation = ? ORDER BY t.id",
                conversation,
            )
        return _state(conversation, head, rows)

    async def finish_turn(
        self, turn_id: int, answer: str, *, sources: Sequence[Source] = ()
    ) -> bool:
        at = now()
        encoded = encode_sources(sources)
        async with self._db.transaction("finish_turn", None, write=True) as conn:
            changed = await conn.execute(
                "UPDATE turns SET answer = ?, sources = ?, status = 'answered', answered_at = ? "
                "WHERE id = ?",
                answer,
                encoded,
                at,
                turn_id,
            )
            if changed:
                await conn.execute(
                    "UPDATE conversations SET updated_at = ? "
                    "WHERE key = (SELECT conversation FROM turns WHERE id = ?)",
                    at,
                    turn_id,
                )
        return changed > 0

    async def save_summary(self, conversation: str, summary: str, upto_turn_id: int) -> bool:
        async with self._db.transaction("save_summary", conversation, write=True) as conn:
            changed = await conn.execute(
                "UPDATE conversations SET summary = ?, summary_upto = ? "
                "WHERE key = ? AND summary_upto <= ? AND EXISTS ("
                "  SELECT 1 FROM turns"
                "  WHERE id = ? AND conversation = ? AND status = 'answered')",
                summary,
                upto_turn_id,
                conversation,
                upto_turn_id,
                upto_turn_id,
                conversation,
            )
        return changed > 0

    async def list_all(self) -> list[ConversationInfo]:
        async with self._db.transaction("list_all", None, write=False) as conn:
            rows = await conn.fetchall(
                _INFO_SELECT + "GROUP BY c.key "
                # The newest turn breaks ties between equal timestamps (a coarse clock).
                "ORDER BY c.updated_at DESC, last_turn DESC, c.key",
            )
        return [_info(row) for row in rows]

    async def info(self, conversation: str) -> ConversationInfo | None:
        async with self._db.transaction("info", conversation, write=False) as conn:
            row = await conn.fetchone(_INFO_SELECT + "WHERE c.key = ? GROUP BY c.key", conversation)
        return None if row is None else _info(row)

    async def last_sources(self, conversation: str) -> tuple[Source, ...]:
        async with self._db.transaction("last_sources", conversation, write=False) as conn:
            row = await conn.fetchone(
                "SELECT sources FROM turns WHERE conversation = ? AND status = 'answered' "
                "ORDER BY answered_at DESC, id DESC LIMIT 1",
                conversation,
            )
        return () if row is None else decode_sources(str(row["sources"]))

    async def reset(self, conversation: str) -> bool:
        async with self._db.transaction("reset", conversation, write=True) as conn:
            # The turns go with it: ON DELETE CASCADE, with foreign_keys on. Their inbox
            # rows stay (turn_id becomes NULL), so redeliveries are still recognised.
            deleted = await conn.execute("DELETE FROM conversations WHERE key = ?", conversation)
        return deleted > 0


class SqlFeedback:
    """:class:`~bot.store.protocols.FeedbackStore`: votes kept with the answer's turn."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, platform: str, event_id: str, user_id: str, rating: Rating) -> bool:
        if rating not in _RATINGS:
            raise ValueError(f"a rating is up or down, not {rating!r}")
        async with self._db.transaction("record_feedback", None, write=True) as conn:
            changed = await conn.execute(
                "INSERT INTO feedback (turn_id, user_id, rating, created_at) "
                "SELECT turn_id, ?, ?, ? FROM inbox "
                "WHERE platform = ? AND event_id = ? AND turn_id IS NOT NULL "
                "ON CONFLICT (turn_id, user_id) DO UPDATE "
                "SET rating = excluded.rating, created_at = excluded.created_at",
                user_id,
                rating,
                now(),
                platform,
                event_id,
            )
        return changed > 0


async def _head(conn: Conn, conversation: str) -> Row | None:
    return await conn.fetchone(
        "SELECT summary, summary_upto FROM conversations WHERE key = ?", conversation
    )


def _state(conversation: str, head: Row, rows: Iterable[Row]) -> ConversationState:
    return ConversationState(
        conversation=conversation,
        summary=str(head["summary"]),
        summary_upto=int(head["summary_upto"]),
        turns=tuple(_turn(row) for row in rows),
    )


def _turn(row: Row) -> StoredTurn:
    raw = str(row["status"])
    status = cast(TurnStatus, raw) if raw in _TURN_STATUSES else "pending"
    return StoredTurn(
        id=int(row["id"]),
        question=str(row["question"]),
        answer=None if row["answer"] is None else str(row["answer"]),
        status=status,
        created_at=moment(row["created_at"]),
        feedback_up=_column(row, "feedback_up"),
        feedback_down=_column(row, "feedback_down"),
    )


def _column(row: Row, name: str) -> int:
    # ``name in row`` would search the values: a Row is a sequence, not a mapping.
    return int(row[name]) if name in row.keys() else 0  # noqa: SIM118


def _info(row: Row) -> ConversationInfo:
    return ConversationInfo(
        conversation=str(row["key"]),
        created_at=moment(row["created_at"]),
        updated_at=moment(row["updated_at"]),
        turn_count=int(row["turn_count"]),
        has_summary=bool(row["has_summary"]),
        feedback_up=int(row["feedback_up"]),
        feedback_down=int(row["feedback_down"]),
    )
