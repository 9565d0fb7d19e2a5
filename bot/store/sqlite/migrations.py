"""The SQLite schema, as the migrations that build it, and the step that applies them.

Schema (version 7; ``PRAGMA user_version`` holds the version)::

    conversations (v5; "sessions" before)    turns
    ┌────────────────────────────────┐       ┌──────────────────────────────────────────┐
    │ key           TEXT  PK         │◄──┐   │ id           INTEGER PK AUTOINCREMENT    │◄─┐
    │ created_at    TEXT  ISO-8601   │   └───┤ conversation TEXT FK ON DELETE CASCADE   │  │
    │ updated_at    TEXT  ISO-8601   │       │ question     TEXT                        │  │
    │ summary       TEXT  ('' = none)│       │ answer       TEXT NULL (NULL = pending)  │  │
    │ summary_upto  INTEGER turn id  │       │ status       'pending' | 'answered'      │  │
    └────────────────────────────────┘       │ created_at   TEXT ISO-8601               │  │
                                             │ answered_at  TEXT NULL                   │  │
                                             │ sources      TEXT JSON list (v2)         │  │
                                             └──────────────────────────────────────────┘  │
    inbox (v2)                                                                             │
    ┌────────────────────────────────────────────────────────────────────────────┐         │
    │ platform      TEXT  ┐ PK                                                   │         │
    │ event_id      TEXT  ┘                                                      │         │
    │ conversation  TEXT  conversation key (no FK: the row outlives a reset)     │         │
    │ question      TEXT  to begin a new turn if a reset deleted the old one     │         │
    │ turn_id       INTEGER NULL FK ON DELETE SET NULL, unique ──────────────────┼─────────┘
    │ status        'pending' | 'delivering' | 'answered' | 'undelivered'       │
    │               | 'expired' | 'quarantined'                                  │
    │ attempts      INTEGER >= 0                                                 │
    │ message       TEXT  opaque JSON from the intake, to rebuild the event      │
    │ reply_id      TEXT NULL  the platform's id of the bot's reply              │
    │ received_at   TEXT  ISO-8601                                               │
    │ updated_at    TEXT  ISO-8601                                               │
    │ reply         TEXT NULL  the encoded answer awaiting delivery (v6)          │
    │ deliver_by    TEXT NULL  when its delivery is given up (v6)                 │
    │ owner         TEXT NULL  the replica answering it (v7)                      │
    │ lease_until   TEXT NULL  until when its owner holds it, unless renewed (v7) │
    │ fence         INTEGER    bumped by every take-over; writes check it (v7)    │
    └────────────────────────────────────────────────────────────────────────────┘
    feedback (v3)  turn_id INTEGER FK turns ON DELETE CASCADE ┐ PK, user_id TEXT ┘,
                   rating 'up' | 'down', created_at TEXT: one vote per reader and turn
    index turns_by_conversation (conversation, id)
    index inbox_by_status  (status, received_at)   serves recover()
    index inbox_by_turn    (turn_id) unique        serves ON DELETE SET NULL and transcript()

    embedding_cache (v4): model TEXT, text_hash TEXT (PK together), vector BLOB (float32),
    stored_at INTEGER (a counter, for evicting the oldest), index embedding_cache_by_age
    handled (v6): platform, event_id (PK together), handled_at: commands answered, so a
    replay of one is recognised; index handled_by_age
    replicas (v7): id PK, seen_at: each live replica's heartbeat
    shards (v7): platform, shard (PK together), owner, lease_until: who runs which shard
    rate_buckets (v7): key PK, tokens, counted_at: per-user buckets shared by replicas

Timestamps are ISO-8601 in UTC with microseconds (``2024-05-01T12:00:00.123456+00:00``),
so they sort as text. ``AUTOINCREMENT`` makes turn ids grow forever and never be reused,
even after a reset: a late ``finish_turn`` for a deleted turn can then never land on
somebody else's new turn, and ``summary_upto`` comparisons stay meaningful.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import aiosqlite

from bot.errors import StoreError
from bot.store.sqlite.database import fetchone, rollback

_log = logging.getLogger(__name__)

# Migration N (1-based) is MIGRATIONS[N - 1]; a database at user_version V gets the steps
# after V, all in one transaction together with the new user_version, so a crash while
# migrating leaves the old version intact. Append new steps; never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE sessions (
            key          TEXT    NOT NULL PRIMARY KEY CHECK (typeof(key) = 'text'),
            created_at   TEXT    NOT NULL,
            updated_at   TEXT    NOT NULL,
            summary      TEXT    NOT NULL DEFAULT '' CHECK (typeof(summary) = 'text'),
            summary_upto INTEGER NOT NULL DEFAULT 0 CHECK (summary_upto >= 0)
        )
        """,
        """
        CREATE TABLE turns (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            session_key TEXT    NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
            question    TEXT    NOT NULL CHECK (typeof(question) = 'text'),
            answer      TEXT    CHECK (answer IS NULL OR typeof(answer) = 'text'),
            status      TEXT    NOT NULL CHECK (status IN ('pending', 'answered')),
            created_at  TEXT    NOT NULL,
            answered_at TEXT,
            CHECK ((status = 'answered') = (answer IS NOT NULL))
        )
        """,
        # Serves load()/transcript() and the ON DELETE CASCADE lookup of a session's turns.
        "CREATE INDEX turns_by_session ON turns (session_key, id)",
    ),
    (
        "ALTER TABLE turns ADD COLUMN sources TEXT NOT NULL DEFAULT '[]'",
        # No foreign key on conversation: a reset deletes the session, and the row must stay
        # so a redelivery of the same event is still recognised as a duplicate.
        """
        CREATE TABLE inbox (
            platform     TEXT    NOT NULL CHECK (typeof(platform) = 'text'),
            event_id     TEXT    NOT NULL CHECK (typeof(event_id) = 'text'),
            conversation TEXT    NOT NULL CHECK (typeof(conversation) = 'text'),
            question     TEXT    NOT NULL CHECK (typeof(question) = 'text'),
            turn_id      INTEGER REFERENCES turns (id) ON DELETE SET NULL,
            status       TEXT    NOT NULL CHECK (status IN
                             ('pending', 'answered', 'undelivered', 'expired', 'quarantined')),
            attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            message      TEXT    NOT NULL CHECK (typeof(message) = 'text'),
            reply_id     TEXT    CHECK (reply_id IS NULL OR typeof(reply_id) = 'text'),
            received_at  TEXT    NOT NULL,
            updated_at   TEXT    NOT NULL,
            PRIMARY KEY (platform, event_id)
        )
        """,
        "CREATE INDEX inbox_by_status ON inbox (status, received_at)",
        # Without it every turn a reset deletes would scan the inbox for ON DELETE SET NULL.
        # Unique, so transcript()'s LEFT JOIN can never repeat a turn; NULLs do not collide.
        "CREATE UNIQUE INDEX inbox_by_turn ON inbox (turn_id)",
    ),
    (
        # One vote per reader and turn; a second click replaces the first. The votes go
        # with their turn when a reset deletes it.
        """
        CREATE TABLE feedback (
            turn_id    INTEGER NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
            user_id    TEXT    NOT NULL CHECK (typeof(user_id) = 'text'),
            rating     TEXT    NOT NULL CHECK (rating IN ('up', 'down')),
            created_at TEXT    NOT NULL,
            PRIMARY KEY (turn_id, user_id)
        )
        """,
    ),
    (
        # Vectors by (model, text hash), so a restart does not embed the same articles again.
        # Its own table, dropped and rebuilt freely: nothing else refers to it.
        """
        CREATE TABLE embedding_cache (
            model      TEXT    NOT NULL CHECK (typeof(model) = 'text'),
            text_hash  TEXT    NOT NULL CHECK (typeof(text_hash) = 'text'),
            vector     BLOB    NOT NULL CHECK (typeof(vector) = 'blob'),
            stored_at  INTEGER NOT NULL,
            PRIMARY KEY (model, text_hash)
        )
        """,
        # Serves the eviction of the oldest rows once the table is over its bound.
        "CREATE INDEX embedding_cache_by_age ON embedding_cache (stored_at)",
    ),
    (
        # One name per concept: a conversation is a conversation, in the schema too.
        # SQLite rewrites the foreign key of turns to follow the renamed table.
        "ALTER TABLE sessions RENAME TO conversations",
        "ALTER TABLE turns RENAME COLUMN session_key TO conversation",
        "DROP INDEX turns_by_session",
        "CREATE INDEX turns_by_conversation ON turns (conversation, id)",
    ),
    (
        # The outbox: an answer that could not be posted at once waits here ('delivering',
        # its reply encoded) until it lands or its time is up. SQLite cannot change a CHECK,
        # so the table is rebuilt; nothing refers to it.
        """
        CREATE TABLE inbox_v6 (
            platform     TEXT    NOT NULL CHECK (typeof(platform) = 'text'),
            event_id     TEXT    NOT NULL CHECK (typeof(event_id) = 'text'),
            conversation TEXT    NOT NULL CHECK (typeof(conversation) = 'text'),
            question     TEXT    NOT NULL CHECK (typeof(question) = 'text'),
            turn_id      INTEGER REFERENCES turns (id) ON DELETE SET NULL,
            status       TEXT    NOT NULL CHECK (status IN ('pending', 'delivering',
                             'answered', 'undelivered', 'expired', 'quarantined')),
            attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            message      TEXT    NOT NULL CHECK (typeof(message) = 'text'),
            reply_id     TEXT    CHECK (reply_id IS NULL OR typeof(reply_id) = 'text'),
            received_at  TEXT    NOT NULL,
            updated_at   TEXT    NOT NULL,
            reply        TEXT    CHECK (reply IS NULL OR typeof(reply) = 'text'),
            deliver_by   TEXT,
            PRIMARY KEY (platform, event_id),
            CHECK ((status = 'delivering') = (reply IS NOT NULL))
        )
        """,
        "INSERT INTO inbox_v6 (platform, event_id, conversation, question, turn_id, status, "
        "                      attempts, message, reply_id, received_at, updated_at) "
        "SELECT platform, event_id, conversation, question, turn_id, status, attempts, "
        "       message, reply_id, received_at, updated_at FROM inbox",
        "DROP TABLE inbox",
        "ALTER TABLE inbox_v6 RENAME TO inbox",
        "CREATE INDEX inbox_by_status ON inbox (status, received_at)",
        "CREATE UNIQUE INDEX inbox_by_turn ON inbox (turn_id)",
        # Commands and shortcuts are answered at once and never reach the inbox; a replay of
        # one (a platform's retry, a replayed signed request) must still be recognised.
        """
        CREATE TABLE handled (
            platform   TEXT NOT NULL CHECK (typeof(platform) = 'text'),
            event_id   TEXT NOT NULL CHECK (typeof(event_id) = 'text'),
            handled_at TEXT NOT NULL,
            PRIMARY KEY (platform, event_id)
        )
        """,
        "CREATE INDEX handled_by_age ON handled (handled_at)",
    ),
    (
        # Several processes on one store: each event is leased to the replica answering
        # it, which renews the lease while it works; another takes it over only once the
        # lease has run out, and every write checks the fence it was given.
        "ALTER TABLE inbox ADD COLUMN owner TEXT",
        "ALTER TABLE inbox ADD COLUMN lease_until TEXT",
        "ALTER TABLE inbox ADD COLUMN fence INTEGER NOT NULL DEFAULT 0",
        # Serves the turn order of a conversation and the queue count.
        "CREATE INDEX inbox_by_conversation ON inbox (conversation, status, received_at)",
        "CREATE INDEX inbox_by_owner ON inbox (owner, status)",
        # Who is alive, for what is divided among the replicas.
        "CREATE TABLE replicas (id TEXT NOT NULL PRIMARY KEY, seen_at TEXT NOT NULL)",
        # Which replica runs which shard of a platform's connection.
        """
        CREATE TABLE shards (
            platform    TEXT    NOT NULL,
            shard       INTEGER NOT NULL CHECK (shard >= 0),
            owner       TEXT    NOT NULL,
            lease_until TEXT    NOT NULL,
            PRIMARY KEY (platform, shard)
        )
        """,
        # Per-user token buckets, when the rate limit is shared by several processes.
        """
        CREATE TABLE rate_buckets (
            key        TEXT NOT NULL PRIMARY KEY,
            tokens     REAL NOT NULL,
            counted_at TEXT NOT NULL
        )
        """,
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(conn: aiosqlite.Connection, migrations: Iterable[Sequence[str]]) -> None:
    """Bring the schema to ``len(migrations)``; a no-op when it is already there.

    Raises:
        StoreError: the file was written by a newer version of this code.
        sqlite3.Error: a step failed (the caller translates it).
    """
    steps = list(migrations)

    async def version() -> int:
        row = await fetchone(conn, "PRAGMA user_version")
        current = int(row[0]) if row is not None else 0
        if current > len(steps):
            raise StoreError(
                f"the database has schema version {current}, but this version of "
                f"research-agent only knows versions up to {len(steps)}; upgrade "
                "research-agent or point [memory].database at another file"
            )
        return current

    # Most opens find the schema current: check without taking the write lock, so the CLI
    # opening the file while the bot writes does not queue behind it.
    if await version() == len(steps):
        return
    await conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the lock: another process may have migrated meanwhile.
        current = await version()
        for number, statements in enumerate(steps[current:], start=current + 1):
            for statement in statements:
                await conn.execute(statement)
            # PRAGMA does not take parameters; ``number`` is an int we computed.
            await conn.execute(f"PRAGMA user_version = {int(number)}")
            _log.info("store schema migrated to version %d", number)
        await conn.execute("COMMIT")
    except BaseException:
        await rollback(conn)
        raise
