"""Copy one store's durable state into another: an SQLite file into PostgreSQL (or back).

What moves: conversations with their turns, summaries and votes; the inbox (so that a
platform's late redelivery of an old event is still recognised, and questions a stopped
bot left pending are answered by the new deployment); the record of handled commands;
the embedding cache. What does not: heartbeats, shard leases, rate buckets and the
inbox's leases, which describe running processes (a pending question goes to whichever
replica of the new deployment looks first). Turn ids are kept (the inbox, the votes and each summary
refer to them), so the target must hold no conversations yet; the copy is one
transaction on the target: all of it lands, or none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.errors import StoreError
from bot.store.sql.driver import Conn, Database, moment, placeholders

_log = logging.getLogger(__name__)

PAGE = 1000


@dataclass(frozen=True, slots=True)
class Table:
    """How one table is copied: its columns, those holding a timestamp, its key order."""

    name: str
    columns: tuple[str, ...]
    stamps: frozenset[str]
    order: str

    def convert(self, row: Any) -> list[Any]:
        values = []
        for column in self.columns:
            value = row[column]
            if value is not None and column in self.stamps:
                value = moment(value)
            elif isinstance(value, memoryview):
                value = bytes(value)
            values.append(value)
        return values


TABLES = (
    Table(
        "conversations",
        ("key", "created_at", "updated_at", "summary", "summary_upto"),
        frozenset({"created_at", "updated_at"}),
        "key",
    ),
    Table(
        "turns",
        (
            "id",
            "conversation",
            "question",
            "answer",
            "status",
            "created_at",
            "answered_at",
            "sources",
        ),
        frozenset({"created_at", "answered_at"}),
        "id",
    ),
    Table(
        "feedback",
        ("turn_id", "user_id", "rating", "created_at"),
        frozenset({"created_at"}),
        "turn_id, user_id",
    ),
    Table(
        "inbox",
        (
            "platform",
            "event_id",
            "conversation",
            "question",
            "turn_id",
            "status",
            "attempts",
            "message",
            "reply_id",
            "received_at",
            "updated_at",
            "reply",
            "deliver_by",
            "fence",
        ),
        frozenset({"received_at", "updated_at", "deliver_by"}),
        "platform, event_id",
    ),
    Table(
        "handled",
        ("platform", "event_id", "handled_at"),
        frozenset({"handled_at"}),
        "platform, event_id",
    ),
    Table(
        "embedding_cache",
        ("model", "text_hash", "vector", "stored_at"),
        frozenset(),
        "model, text_hash",
    ),
)

Progress = Callable[[str, int], None]


async def copy_store(
    source: Database, target: Database, *, progress: Progress | None = None
) -> dict[str, int]:
    """Copy every durable table of ``source`` into ``target``; rows copied, by table.

    Both are at the current schema version (opening a store migrates it).

    Raises:
        StoreError: the target already holds conversations, or either database failed
            (nothing was written then).
    """
    counts: dict[str, int] = {}
    async with target.transaction("store migrate", None, write=True) as into:
        found = await into.fetchone("SELECT COUNT(*) FROM conversations")
        if found is not None and int(found[0]):
            raise StoreError(
                f"{target.location} already holds {int(found[0])} conversation(s); "
                "migrate into an empty database"
            )
        for table in TABLES:
            counts[table.name] = await _copy(source, into, table, target.dialect)
            if progress is not None:
                progress(table.name, counts[table.name])
        await _after(into, target.dialect)
    _log.info("copied %s from %s to %s", counts, source.location, target.location)
    return counts


async def _copy(source: Database, into: Conn, table: Table, dialect: str) -> int:
    columns = ", ".join(table.columns)
    # Turn ids are kept; PostgreSQL hands out identity values itself unless told not to.
    keep_ids = table.name == "turns" and dialect == "postgresql"
    override = " OVERRIDING SYSTEM VALUE" if keep_ids else ""
    insert = (
        f"INSERT INTO {table.name} ({columns}){override} "
        f"VALUES ({placeholders(len(table.columns))})"
    )
    copied = 0
    while True:
        async with source.transaction("store migrate", None, write=False) as conn:
            rows = await conn.fetchall(
                f"SELECT {columns} FROM {table.name} ORDER BY {table.order} LIMIT ? OFFSET ?",
                PAGE,
                copied,
            )
        if not rows:
            return copied
        await into.executemany(insert, [table.convert(row) for row in rows])
        copied += len(rows)


async def _after(into: Conn, dialect: str) -> None:
    if dialect == "postgresql":
        # The identity must go on after the copied ids: a turn id is never handed out twice.
        await into.execute(
            "SELECT setval(pg_get_serial_sequence('turns', 'id'), "
            "GREATEST((SELECT COALESCE(MAX(id), 0) FROM turns), 1), "
            "(SELECT COUNT(*) > 0 FROM turns))"
        )
