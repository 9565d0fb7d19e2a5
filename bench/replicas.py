"""Replicas on one PostgreSQL: a burst through one and two replicas, and a take-over.

Real ``python -m bot`` processes (Slack's HTTP mode, the real embedding model unless
``--backend hashing``) share a PostgreSQL database: the one named by ``--postgres``, or a
throwaway server this script starts with ``scripts/postgres`` (Debian's server binaries).
Ollama, Wikipedia and Hacker News are the fakes in a process of their own, with the
injected latencies; the fake Slack runs on this script's event loop.

* burst: ``--questions`` questions, each in a thread of its own, delivered at once and
  spread over the replicas (a third of them also redelivered to another replica, as
  Slack's retries land anywhere). Prints the wall time until every answer is finished,
  the time to each answer (p50, p99), and the duplicates (must be 0). With 1 replica, and
  with 2: once each taking every core for its embedding threads (the default), once with
  the cores divided between them (``[embeddings].threads``). On a machine with few cores
  two replicas share the same cores: what is measured is the cost of coordination and of
  sharing there, not a speed-up.
* take-over: two replicas; a question is taken by one, which is SIGKILLed as soon as its
  reply is posted (mid-turn); the other finishes it, in that message, once the lease
  (``--lease``) has run out. Prints the time from the kill to the finished answer, against
  the lease, and the bot's messages in the thread (1: the one it had started).

    python bench/replicas.py [--questions 50] [--lease 5] [--backend hashing]
                             [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from bench.fake_services import QUESTIONS, FakeServices
from tests.conftest import config_text
from tests.databases import SCRIPT, Server, fresh_database
from tests.fakes.slack import SIGNING_SECRET, FakeSlack
from tests.processes import ServedBot, bot_env

CHANNEL = "C0GENERAL"
ENV = {"SLACK_BOT_TOKEN": "xoxb-bench", "SLACK_SIGNING_SECRET": SIGNING_SECRET}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--lease", type=float, default=5.0, help="[memory].lease_s (default 5)")
    parser.add_argument("--source-latency", type=float, default=0.3)
    parser.add_argument("--llm-latency", type=float, default=0.2)
    parser.add_argument(
        "--backend", choices=("sentence-transformers", "hashing"), default="sentence-transformers"
    )
    parser.add_argument("--postgres", default="", help="a server URL (default: start one)")
    return parser.parse_args()


@asynccontextmanager
async def server(url: str) -> AsyncIterator[Server]:
    if url:
        yield Server(url)
        return
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), "start", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"cannot start PostgreSQL ({err.decode().strip()}); pass --postgres")
    url, directory = out.decode().split()
    started = Server(url, directory)
    try:
        yield started
    finally:
        started.stop()


class Replicas:
    """N bots on one database, their configs in a temporary directory."""

    def __init__(self, args: argparse.Namespace, services: FakeServices, slack: FakeSlack):
        self._args = args
        self._services = services
        self._slack = slack
        self.bots: list[ServedBot] = []
        self.urls: list[str] = []

    async def start(self, tmp: Path, database: str, count: int, *, divide: bool = True) -> None:
        configs = []
        for n in range(count):
            home = tmp / f"replica{n}"
            home.mkdir()
            port = _free_port()
            self.urls.append(f"http://127.0.0.1:{port}/slack/events")
            text = config_text(
                ollama_url=self._services.urls.ollama,
                wikipedia_url=self._services.urls.wikipedia,
                hackernews_url=self._services.urls.hackernews,
                database=home / "unused.db",
                backend=self._args.backend,
                extra=f'\n[slack]\nmode = "http"\nhttp_host = "127.0.0.1"\n'
                f'http_port = {port}\napi_url = "{self._slack.api_url}"\n\n'
                "[intake]\nrate_limit_per_minute = 0\n",
            ).replace("[memory]\n", f"[memory]\nlease_s = {self._args.lease}\n")
            # Replicas on one machine divide its cores, or their torch threads fight.
            threads = max(1, len(os.sched_getaffinity(0)) // count) if divide else 0
            text = text.replace("[embeddings]\n", f"[embeddings]\nthreads = {threads}\n")
            text = text.replace("[sources]\n", "[sources]\ncache_ttl_s = 0\n")
            (home / "config.toml").write_text(text, encoding="utf-8")
            configs.append(home / "config.toml")
        env = bot_env(DATABASE_URL=database, **ENV)
        self.bots = list(await asyncio.gather(*(ServedBot.start(c, env) for c in configs)))

    async def stop(self) -> None:
        for bot in self.bots:
            if bot.proc.returncode is None:
                await bot.terminate()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def burst(
    args: argparse.Namespace, services: FakeServices, db: Server, count: int, *, divide: bool
) -> str:
    async with FakeSlack() as slack:
        replicas = Replicas(args, services, slack)
        with tempfile.TemporaryDirectory() as tmp, fresh_database(db) as database:
            await replicas.start(Path(tmp), database, count, divide=divide)
            loop = asyncio.get_running_loop()
            sent: dict[str, float] = {}

            async def deliver(i: int) -> None:
                event = slack.user_says(QUESTIONS[i % len(QUESTIONS)], user=f"U{i:04d}")
                body = slack.callback(event)
                sent[str(event["ts"])] = loop.time()
                copies = [replicas.urls[i % count]]
                if i % 3 == 0:
                    copies.append(replicas.urls[(i + 1) % count])  # a retry, elsewhere
                for n, url in enumerate(copies):
                    status, _ = await slack.post_signed(url, body, retry_num=n or None)
                    if status != 200:
                        raise RuntimeError(f"delivery got HTTP {status}")

            started = loop.time()
            await asyncio.gather(*(deliver(i) for i in range(args.questions)))

            def done() -> bool:
                return all(slack.finished_at(ts) for ts in sent)

            await asyncio.wait_for(slack.until(done), 600)
            wall = loop.time() - started
            to_answer = [min(slack.finished_at(ts)) - at for ts, at in sent.items()]
            duplicates = sum(
                max(0, len([m for m in slack.in_thread(CHANNEL, ts) if m.by_bot]) - 1)
                for ts in sent
            )
            await replicas.stop()
    cores = "divided" if divide else "all each"
    return (
        f"{count:>8} {cores:>9} {args.questions:>9} {wall:>9.1f} "
        f"{statistics.median(to_answer):>8.2f} {_p99(to_answer):>8.2f} {duplicates:>10}"
    )


async def takeover(args: argparse.Namespace, services: FakeServices, db: Server) -> str:
    async with FakeSlack() as slack:
        replicas = Replicas(args, services, slack)
        with tempfile.TemporaryDirectory() as tmp, fresh_database(db) as database:
            await replicas.start(Path(tmp), database, 2)
            event = slack.user_says(QUESTIONS[0])
            await slack.post_signed(replicas.urls[0], slack.callback(event))
            await _replied(database, f"{CHANNEL}:{event['ts']}")
            await replicas.bots[0].kill()
            kill_at = asyncio.get_running_loop().time()
            await asyncio.wait_for(slack.until(lambda: bool(slack.finished_at(event["ts"]))), 600)
            answered = min(slack.finished_at(event["ts"])) - kill_at
            answers = len([m for m in slack.in_thread(CHANNEL, event["ts"]) if m.by_bot])
            await replicas.stop()
    return f"{args.lease:>8.1f} {answered:>17.1f} {answers:>9}"


async def _replied(database: str, event_id: str) -> None:
    """Until the replica has posted its reply and recorded the message's id: mid-turn."""
    conn = await asyncpg.connect(database)
    try:
        while True:
            if await conn.fetchval(
                "SELECT 1 FROM inbox WHERE event_id = $1 AND reply_id IS NOT NULL", event_id
            ):
                return
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    services = FakeServices()
    try:
        await services.set_latency(source_s=args.source_latency, llm_s=args.llm_latency)
        async with server(args.postgres) as db:
            print(
                f"cpus={len(os.sched_getaffinity(0))}; embeddings: {args.backend}; latencies: "
                f"sources {args.source_latency} s, LLM {args.llm_latency} s per call"
            )
            print()
            print("burst: every question at once, a third also redelivered elsewhere")
            print(f"{'replicas':>8} {'cores':>9} {'questions':>9} {'wall s':>9} {'p50 s':>8} "
                  f"{'p99 s':>8} {'duplicates':>10}")  # fmt: skip
            for count, divide in ((1, True), (2, False), (2, True)):
                print(await burst(args, services, db, count, divide=divide), flush=True)
            print()
            print("take-over: a replica SIGKILLed as soon as its reply was posted")
            print(f"{'lease s':>8} {'kill to answer s':>17} {'messages':>9}")
            print(await takeover(args, services, db), flush=True)
    finally:
        await services.close()


def main() -> None:
    args = parse_args()
    if args.questions < 2 or args.lease < 1:
        raise SystemExit("--questions must be at least 2 and --lease at least 1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
