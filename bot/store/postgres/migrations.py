"""The PostgreSQL schema, as the same numbered migrations as SQLite's, and their runner.

Migration N here does what migration N does in :mod:`bot.store.sqlite.migrations`, in
PostgreSQL's types (``timestamptz``, ``bytea``, an identity column), so a database of
either kind at version N holds the same tables and the shared SQL runs on both. The
version is the one row of ``schema_version``.

Several replicas may start at the same moment against an empty database: the migration
runs in one transaction under a transaction-scoped advisory lock, and reads the version
again once it holds the lock, so exactly one replica migrates and the others find the
schema current (a crash half-way rolls the whole step back).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg

from bot.errors import StoreError

_log = logging.getLogger(__name__)

# The advisory lock's key: any constant, the same in every replica ("research" in ASCII).
MIGRATION_LOCK = 0x7265736561726368

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE sessions (
            key          TEXT        NOT NULL PRIMARY KEY,
            created_at   TIMESTAMPTZ NOT NULL,
            updated_at   TIMESTAMPTZ NOT NULL,
            summary      TEXT        NOT NULL DEFAULT '',
            summary_upto BIGINT      NOT NULL DEFAULT 0 CHECK (summary_upto >= 0)
        )
        """,
        # An identity never hands out a number twice, even after a reset deletes the
        # turn (see the SQLite schema's AUTOINCREMENT for why that matters).
        """
        CREATE TABLE turns (
            id          BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            session_key TEXT        NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
            question    TEXT        NOT NULL,
            answer      TEXT,
            status      TEXT        NOT NULL CHECK (status IN ('pending', 'answered')),
            created_at  TIMESTAMPTZ NOT NULL,
            answered_at TIMESTAMPTZ,
            CHECK ((status = 'answered') = (answer IS NOT NULL))
        )
        """,
        "CREATE INDEX turns_by_session ON turns (session_key, id)",
    ),
    (
        "ALTER TABLE turns ADD COLUMN sources TEXT NOT NULL DEFAULT '[]'",
        """
        CREATE TABLE inbox (
            platform     TEXT        NOT NULL,
            event_id     TEXT        NOT NULL,
            conversation TEXT        NOT NULL,
            question     TEXT        NOT NULL,
            turn_id      BIGINT      REFERENCES turns (id) ON DELETE SET NULL,
            status       TEXT        NOT NULL CONSTRAINT inbox_status CHECK (status IN
                             ('pending', 'answered', 'undelivered', 'expired', 'quarantined')),
            attempts     INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            message      TEXT        NOT NULL,
            reply_id     TEXT,
            received_at  TIMESTAMPTZ NOT NULL,
            updated_at   TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (platform, event_id)
        )
        """,
        "CREATE INDEX inbox_by_status ON inbox (status, received_at)",
        "CREATE UNIQUE INDEX inbox_by_turn ON inbox (turn_id)",
    ),
    (
        """
        CREATE TABLE feedback (
            turn_id    BIGINT      NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
            user_id    TEXT        NOT NULL,
            rating     TEXT        NOT NULL CHECK (rating IN ('up', 'down')),
            created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (turn_id, user_id)
        )
        """,
    ),
    (
        """
        CREATE TABLE embedding_cache (
            model      TEXT   NOT NULL,
            text_hash  TEXT   NOT NULL,
            vector     BYTEA  NOT NULL,
            stored_at  BIGINT NOT NULL,
            PRIMARY KEY (model, text_hash)
        )
        """,
        "CREATE INDEX embedding_cache_by_age ON embedding_cache (stored_at)",
    ),
    (
        "ALTER TABLE sessions RENAME TO conversations",
        "ALTER TABLE turns RENAME COLUMN session_key TO conversation",
        "DROP INDEX turns_by_session",
        "CREATE INDEX turns_by_conversation ON turns (conversation, id)",
    ),
    (
        # PostgreSQL changes a CHECK in place; SQLite had to rebuild the table.
        "ALTER TABLE inbox DROP CONSTRAINT inbox_status",
        "ALTER TABLE inbox ADD CONSTRAINT inbox_status CHECK (status IN ('pending', "
        "'delivering', 'answered', 'undelivered', 'expired', 'quarantined'))",
        "ALTER TABLE inbox ADD COLUMN reply TEXT",
        "ALTER TABLE inbox ADD COLUMN deliver_by TIMESTAMPTZ",
        "ALTER TABLE inbox ADD CONSTRAINT inbox_reply_while_delivering "
        "CHECK ((status = 'delivering') = (reply IS NOT NULL))",
        """
        CREATE TABLE handled (
            platform   TEXT        NOT NULL,
            event_id   TEXT        NOT NULL,
            handled_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (platform, event_id)
        )
        """,
        "CREATE INDEX handled_by_age ON handled (handled_at)",
    ),
    (
        "ALTER TABLE inbox ADD COLUMN owner TEXT",
        "ALTER TABLE inbox ADD COLUMN lease_until TIMESTAMPTZ",
        "ALTER TABLE inbox ADD COLUMN fence BIGINT NOT NULL DEFAULT 0",
        "CREATE INDEX inbox_by_conversation ON inbox (conversation, status, received_at)",
        "CREATE INDEX inbox_by_owner ON inbox (owner, status)",
        "CREATE TABLE replicas (id TEXT NOT NULL PRIMARY KEY, seen_at TIMESTAMPTZ NOT NULL)",
        """
        CREATE TABLE shards (
            platform    TEXT        NOT NULL,
            shard       INTEGER     NOT NULL CHECK (shard >= 0),
            owner       TEXT        NOT NULL,
            lease_until TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (platform, shard)
        )
        """,
        """
        CREATE TABLE rate_buckets (
            key        TEXT             NOT NULL PRIMARY KEY,
            tokens     DOUBLE PRECISION NOT NULL,
            counted_at TIMESTAMPTZ      NOT NULL
        )
        """,
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


async def schema_version(conn: asyncpg.Connection) -> int:
    """The database's schema version (0: nothing of ours in it yet)."""
    # A catalog scan, not to_regclass(): that reads a cached catalog snapshot which, just
    # after the advisory lock was granted, can miss the table another replica committed.
    exists = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables "
        "WHERE schemaname = current_schema() AND tablename = 'schema_version')"
    )
    if not exists:
        return 0
    version = await conn.fetchval("SELECT version FROM schema_version")
    return int(version or 0)


async def migrate(conn: asyncpg.Connection, migrations: Sequence[Sequence[str]]) -> None:
    """Bring the schema to ``len(migrations)``; a no-op when it is already there.

    Raises:
        StoreError: the database was migrated by a newer version of this code.
        asyncpg.PostgresError: a step failed (the caller translates it).
    """
    steps = list(migrations)

    def checked(current: int) -> int:
        if current > len(steps):
            raise StoreError(
                f"the database has schema version {current}, but this version of "
                f"research-agent only knows versions up to {len(steps)}; upgrade "
                "research-agent or point [memory].database at another database"
            )
        return current

    # Most starts find the schema current: look before taking the lock.
    if checked(await schema_version(conn)) == len(steps):
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        # Read again under the lock: another replica may have migrated meanwhile.
        current = checked(await schema_version(conn))
        if current == 0:
            await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        for number, statements in enumerate(steps[current:], start=current + 1):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("UPDATE schema_version SET version = $1", number)
            _log.info("store schema migrated to version %d", number)
