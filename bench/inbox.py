"""Benchmark: the latency of the inbox's claim, the intake's dedupe step, on SQLite and on
PostgreSQL.

Every inbound event waits for one claim before anything else happens, so its p99 is added
to the worst reply time. On a fresh database file in a temporary directory (WAL, as the bot
runs it), and on a fresh database of a PostgreSQL server (``--postgres URL``, or a
throwaway local server this script starts with ``scripts/postgres``; fsync is off there,
as in the tests: the figures show the round trips and the statements, not a disk), the
script times, one claim after another:

* distinct, own conversation: ``--claims`` new events, each in a conversation of its own
  (a claim then also creates the session);
* distinct, shared conversations: ``--claims`` new events spread over a few conversations
  (a claim touches an existing session, whose turns keep growing);
* duplicate: ``--claims`` redeliveries of events already claimed (the insert conflicts and
  nothing is written).

It prints p50 and p99 in milliseconds for each backend and variant, and whether the p99
target (< 5 ms) is met.
The p99 of new claims is set by SQLite's WAL auto-checkpoint (every 1000 WAL pages, about
one claim in a hundred copies the WAL back into the database and syncs it), not by the
claim's own statements: with the checkpoint off, p99 is within 0.2 ms of p50.

Usage::

    python bench/inbox.py [--claims N] [--shared K] [--postgres URL | --no-postgres]

With the defaults it takes a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

# Run as ``python bench/inbox.py``: make ``bot`` importable from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.store import Store
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore
from tests.databases import NO_SERVER, SCRIPT, Server, fresh_database

P99_TARGET_MS = 5.0
QUESTION = "How does attention work in transformer language models, and who came up with it?"


def message_json(event_id: str, conversation: str) -> str:
    """About what an intake would store to rebuild a Discord message after a crash."""
    return json.dumps(
        {
            "platform": "discord",
            "event_id": event_id,
            "conversation": conversation,
            "text": QUESTION,
            "author": {"id": "112233445566778899", "name": "someone", "is_admin": False},
            "sent_at": "2024-05-01T12:00:00.000000+00:00",
            "target": {"channel_id": "998877665544332211", "message_id": event_id},
        }
    )


Event = tuple[str, str]  # (event id, conversation)


async def time_claims(store: Store, events: Sequence[Event], *, expect_new: bool) -> list[float]:
    """Claim each event in turn; return the latencies in milliseconds."""
    times = []
    for event_id, conversation in events:
        message = message_json(event_id, conversation)
        started = time.perf_counter()
        got = await store.inbox.claim("discord", event_id, conversation, QUESTION, message)
        times.append((time.perf_counter() - started) * 1000)
        if (got is not None) != expect_new:
            raise RuntimeError(f"claim of {event_id} gave {got!r}; the benchmark is broken")
    return times


def percentile(times: Sequence[float], pct: int) -> float:
    # "inclusive" keeps p99 inside the measured range even for small samples.
    return statistics.quantiles(times, n=100, method="inclusive")[pct - 1]


async def variants(store: Store, args: argparse.Namespace) -> list[tuple[str, list[float]]]:
    own = [(f"own-{n}", f"discord:g:own-{n}") for n in range(args.claims)]
    shared = [(f"shared-{n}", f"discord:g:shared-{n % args.shared}") for n in range(args.claims)]
    # Redeliveries of both kinds of event, interleaved, ``--claims`` of them.
    redelivered = [event for pair in zip(own, shared, strict=True) for event in pair]
    redelivered = redelivered[: args.claims]
    # Warm the connection and the page cache, as a running bot has them.
    await time_claims(store, [("warm-up", "discord:g:warm-up")], expect_new=True)
    return [
        ("distinct, own conversation", await time_claims(store, own, expect_new=True)),
        ("distinct, shared conversations", await time_claims(store, shared, expect_new=True)),
        ("duplicate", await time_claims(store, redelivered, expect_new=False)),
    ]


async def on_sqlite(args: argparse.Namespace) -> list[tuple[str, list[float]]]:
    with tempfile.TemporaryDirectory(prefix="bench-inbox-") as directory:
        store = await SqliteStore.open(Path(directory) / "memory.db")
        try:
            return await variants(store, args)
        finally:
            await store.close()


async def on_postgres(args: argparse.Namespace) -> list[tuple[str, list[float]]] | str:
    server = Server(args.postgres) if args.postgres else await start_server()
    if isinstance(server, str):
        return server
    try:
        with fresh_database(server) as url:
            store = await PostgresStore.open(url)
            try:
                return await variants(store, args)
            finally:
                await store.close()
    finally:
        server.stop()


async def start_server() -> Server | str:
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), "start", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode == NO_SERVER:
        return "skipped: PostgreSQL's server binaries are not installed (or pass --postgres)"
    if proc.returncode != 0:
        return f"skipped: scripts/postgres failed: {err.decode().strip()}"
    url, directory = out.decode().split()
    return Server(url, directory)


async def run(args: argparse.Namespace) -> None:
    print(
        f"claims per variant: {args.claims}; shared conversations: {args.shared}; "
        f"SQLite {sqlite3.sqlite_version}; cpus={len(os.sched_getaffinity(0))}"
    )
    results: list[tuple[str, list[tuple[str, list[float]]] | str]] = [
        ("SQLite", await on_sqlite(args))
    ]
    if not args.no_postgres:
        results.append(("PostgreSQL", await on_postgres(args)))
    print()
    print(
        f"{'backend':<12}{'variant':<32}{'claims':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        "  p99 < 5 ms"
    )
    print("-" * 91)
    for backend, rows in results:
        if isinstance(rows, str):
            print(f"{backend:<12}{rows}")
            continue
        for name, times in rows:
            p99 = percentile(times, 99)
            met = "yes" if p99 < P99_TARGET_MS else "NO"
            print(
                f"{backend:<12}{name:<32}{len(times):>8}{statistics.median(times):>9.3f}"
                f"{p99:>9.3f}{max(times):>9.3f}  {met}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--claims", type=int, default=2000, help="claims per variant (default 2000)"
    )
    parser.add_argument(
        "--shared", type=int, default=4, help="conversations the shared variant uses (default 4)"
    )
    parser.add_argument("--postgres", default="", help="a PostgreSQL server URL")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    if args.claims < 2 or args.shared < 1:
        parser.error("--claims must be at least 2 and --shared at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
