"""Real databases for the store's tests: SQLite files, and a real PostgreSQL server.

The server is the one ``scripts/test`` (and so ``.ci/run``) started and named in
``TEST_DATABASE_URL``; without it, one is started here for the session with
``scripts/postgres`` (PostgreSQL refuses to run as root, so that script runs it as an
unprivileged user). Only when the server binaries are missing do the PostgreSQL tests skip,
saying so. Each test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bot.store import Store
from bot.store.postgres import PostgresStore
from bot.store.postgres.database import dialect
from bot.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "postgres"
NO_SERVER = 3  # scripts/postgres's exit status when the binaries are missing

# Leases the tests' stores hold: short, so a "crashed" store's events can be taken over
# a moment later instead of after the default half minute.
TEST_LEASE_S = 0.05


@dataclass
class Server:
    """A PostgreSQL server for the session, and the directory to remove afterwards."""

    url: str
    directory: str | None = None
    _databases: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.directory is not None:
            subprocess.run([str(SCRIPT), "stop", self.directory], check=False)


def start_server() -> Server | str:
    """The session's server, or why there is none (then the PostgreSQL tests skip)."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return Server(url)
    done = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, check=False)
    if done.returncode == NO_SERVER:
        return "PostgreSQL's server binaries are not installed (apt-get install postgresql)"
    if done.returncode != 0:
        raise RuntimeError(f"scripts/postgres start failed: {done.stderr.strip()}")
    url, directory = done.stdout.split()
    return Server(url, directory)


def database_url(server_url: str, name: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


@contextlib.contextmanager
def fresh_database(server: Server) -> Iterator[str]:
    """A new, empty database on ``server`` for one test; its URL.

    Synchronous (on a thread of its own), so that sync fixtures can use it while the
    test's event loop is not running yet.
    """
    name = f"test_{uuid.uuid4().hex[:12]}"
    _admin(server.url, f'CREATE DATABASE "{name}"')
    try:
        yield database_url(server.url, name)
    finally:
        _admin(server.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(url: str, statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@dataclass
class Backend:
    """One backend's data for one test: open stores on it, and peek at its tables."""

    name: str
    database: str  # a file path or a postgresql:// URL
    opened: list[Store] = field(default_factory=list)

    @property
    def shared(self) -> bool:
        return self.name == "postgres"

    async def open(self, *, lease_s: float = TEST_LEASE_S, replica: str | None = None) -> Store:
        """A store on this data, as one more process would open it."""
        store: Store
        if self.name == "postgres":
            store = await PostgresStore.open(
                self.database, lease_s=lease_s, replica=replica, pool_size=4
            )
        else:
            store = await SqliteStore.open(self.database, lease_s=lease_s, replica=replica)
        self.opened.append(store)
        return store

    async def restart(self, crashed: Store) -> Store:
        """The process of ``crashed`` died; a new one starts on the same data.

        The old store's leases are left as a crash leaves them. With SQLite the new
        process owns the file (so knows it is alone); with PostgreSQL it waits until the
        old leases ran out, as a replica must.
        """
        await crashed.close()
        store = await self.open()
        if self.shared:
            await asyncio.sleep(TEST_LEASE_S * 2)
        else:
            await store.take_ownership()
        return store

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (``?`` placeholders), read on a connection of its own, as
        another process would."""
        if self.name == "postgres":
            conn = await asyncpg.connect(self.database)
            try:
                return [tuple(r) for r in await conn.fetch(dialect(sql), *params)]
            finally:
                await conn.close()
        with contextlib.closing(sqlite3.connect(self.database, isolation_level=None)) as raw:
            return [tuple(r) for r in raw.execute(sql, params).fetchall()]

    async def row(self, sql: str, *params: Any) -> tuple[Any, ...] | None:
        found = await self.rows(sql, *params)
        return found[0] if found else None

    async def close(self) -> None:
        for store in reversed(self.opened):
            await store.close()


def sqlite_path(tmp_path: Path) -> str:
    return str(tmp_path / "memory.db")
