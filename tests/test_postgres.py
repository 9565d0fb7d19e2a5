"""What only the PostgreSQL backend does: a server shared by replicas, migrated once,
reached over a network that can fail. Against a real server (see tests/databases.py)."""

from __future__ import annotations

import asyncio
import logging
import socket

import asyncpg
import pytest

from bot.errors import StoreError
from bot.store import open_store
from bot.store.postgres import SCHEMA_VERSION, PostgresStore, redact
from tests.store_helpers import begin_turn


async def test_replicas_starting_together_on_an_empty_database_migrate_it_once(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bot.store.postgres.migrations"):
        stores = await asyncio.gather(*(PostgresStore.open(postgres_url) for _ in range(3)))
    try:
        migrated = [
            r.getMessage() for r in caplog.records if "migrated to version" in r.getMessage()
        ]
        assert migrated == [f"store schema migrated to version {n}" for n in range(1, 8)]
        for store in stores:
            assert await store.health() is None
        turns = [await begin_turn(store, "k", "q") for store in stores]
        assert len(set(turns)) == 3
    finally:
        for store in stores:
            await store.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT version FROM schema_version") == SCHEMA_VERSION
        assert await conn.fetchval("SELECT COUNT(*) FROM schema_version") == 1
    finally:
        await conn.close()


async def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    store = await PostgresStore.open(postgres_url)
    await store.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("UPDATE schema_version SET version = $1", SCHEMA_VERSION + 1)
    finally:
        await conn.close()

    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}\b.*upgrade"):
        await PostgresStore.open(postgres_url)


async def test_lost_connections_are_replaced_without_a_failed_operation(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = await PostgresStore.open(postgres_url, pool_size=3)
    try:
        # Every pooled connection in use once, so the pool holds several.
        await asyncio.gather(*(begin_turn(store, f"k{n}", "q") for n in range(6)))
        admin = await asyncpg.connect(postgres_url)
        try:
            # What a server restart does to the connections a replica holds.
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()

        with caplog.at_level(logging.WARNING, logger="bot.store.postgres.database"):
            for n in range(6):
                await begin_turn(store, "after", f"q{n}")
        assert len((await store.conversations.load("after")).turns) == 0  # pending, not lost
        transcript = await store.conversations.transcript("after")
        assert transcript is not None and len(transcript.turns) == 6
        assert await store.health() is None
    finally:
        await store.close()


async def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once it is closed
    url = f"postgresql://bot:s3cret@127.0.0.1:{port}/research"

    with pytest.raises(StoreError) as caught:
        await open_store(url)

    assert "s3cret" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    assert redact(url) == f"postgresql://bot:***@127.0.0.1:{port}/research"


async def test_location_hides_the_password(postgres_url: str) -> None:
    with_password = postgres_url.replace("postgres@", "postgres:hunter2@", 1)
    store = await open_store(with_password)  # trust authentication ignores it
    try:
        assert "hunter2" not in store.location
        assert "hunter2" not in repr(store)
        assert store.shared
    finally:
        await store.close()
