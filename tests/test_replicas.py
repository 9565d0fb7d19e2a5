"""Several ``python -m bot`` replicas on one real PostgreSQL: never an answer twice.

Every test starts real processes (tests/processes.py) against the fakes and a database of
its own on the session's PostgreSQL server, delivers what Slack would (each event, and
its retries, to any replica) and checks on the wire what the users saw: one finished
answer per question, in the order asked within each thread.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.pipeline.prompts import SYNTHESIS_MARKER
from tests.conftest import config_text
from tests.databases import SCRIPT, Server, fresh_database
from tests.fakes.hackernews import FakeHackerNews
from tests.fakes.ollama import FakeOllama, default_responder, split_tokens
from tests.fakes.slack import SIGNING_SECRET, FakeSlack, Message
from tests.fakes.wikipedia import FakeWikipedia
from tests.processes import ServedBot, bot_env, bots

CHANNEL = "C0GENERAL"
WAIT_S = 90.0
TOKEN = re.compile(r"\bQ\d+x\d+\b")
HTTP_ENV = {"SLACK_BOT_TOKEN": "xoxb-fake", "SLACK_SIGNING_SECRET": SIGNING_SECRET}
SOCKET_ENV = {"SLACK_BOT_TOKEN": "xoxb-fake", "SLACK_APP_TOKEN": "xapp-fake"}


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answering(body: dict[str, Any]) -> list[str]:
    """The model: the answer names the question's token, so each answer can be matched to
    its question on the wire (and in the next turn's history)."""
    if SYNTHESIS_MARKER not in str(body["messages"][0]["content"]):
        return default_responder(body)
    question = str(body["messages"][-1]["content"]).rsplit("Question:", 1)[-1]
    found = TOKEN.search(question)
    return split_tokens(f"Answer to {found.group(0) if found else 'nothing'} [1].")


@dataclass
class Cluster:
    """The fakes, the database and the replicas' configs of one test."""

    tmp_path: Path
    database: str
    slack: FakeSlack
    ollama: FakeOllama
    wikipedia: FakeWikipedia
    hackernews: FakeHackerNews
    ports: list[int] = field(default_factory=list)

    def config(self, n: int, *, mode: str, lease_s: float = 1.0, extra: str = "") -> Path:
        """Replica ``n``'s config: its own port (HTTP mode) and log, the shared database
        (from DATABASE_URL, as an operator would give it)."""
        home = self.tmp_path / f"replica{n}"
        home.mkdir(exist_ok=True)
        port = free_port()
        self.ports.append(port)
        text = config_text(
            ollama_url=self.ollama.url,
            wikipedia_url=self.wikipedia.url,
            hackernews_url=self.hackernews.url,
            database=home / "unused.db",
            extra=f'\n[slack]\nmode = "{mode}"\napi_url = "{self.slack.api_url}"\n'
            f'http_host = "127.0.0.1"\nhttp_port = {port}\n\n[intake]\n'
            f"rate_limit_per_minute = 0\n{extra}",
        ).replace("[memory]\n", f"[memory]\nlease_s = {lease_s}\n")
        path = home / "config.toml"
        path.write_text(text, encoding="utf-8")
        return path

    def env(self, mode: str) -> dict[str, str]:
        return bot_env(DATABASE_URL=self.database, **(HTTP_ENV if mode == "http" else SOCKET_ENV))

    async def start(self, count: int, *, mode: str, **options: Any) -> list[ServedBot]:
        configs = [self.config(n, mode=mode, **options) for n in range(count)]
        return list(await asyncio.gather(*(ServedBot.start(c, self.env(mode)) for c in configs)))

    async def start_sockets(self, count: int) -> list[ServedBot]:
        """``count`` replicas in Socket Mode, each with its connection to Slack open."""
        started = await self.start(count, mode="socket")
        await asyncio.wait_for(self.slack.until(lambda: self.slack.connected == count), 30)
        return started

    def url(self, replica: int) -> str:
        return f"http://127.0.0.1:{self.ports[replica]}/slack/events"

    async def claimed(self, event_id: str) -> None:
        """Until some replica has claimed the event (read in the database)."""
        await self._until_inbox("TRUE", event_id)

    async def reply_recorded(self, event_id: str) -> None:
        """Until the event's reply message is on record, for a take-over to finish it."""
        await self._until_inbox("reply_id IS NOT NULL", event_id)

    async def _until_inbox(self, condition: str, event_id: str) -> None:
        conn = await asyncpg.connect(self.database)
        try:
            while True:  # another process writes it: nothing to wait on but the table
                if await conn.fetchval(
                    f"SELECT 1 FROM inbox WHERE platform = 'slack' AND event_id = $1 "
                    f"AND {condition}",
                    event_id,
                ):
                    return
                await asyncio.sleep(0.02)
        finally:
            await conn.close()


@pytest.fixture
async def cluster(
    tmp_path: Path,
    postgres_url: str,
    slack: FakeSlack,
    ollama: FakeOllama,
    *,
    wikipedia: FakeWikipedia,
    hackernews: FakeHackerNews,
) -> Cluster:
    ollama.responder = answering
    return Cluster(tmp_path, postgres_url, slack, ollama, wikipedia, hackernews)


Deliver = Callable[[dict[str, Any], int], Awaitable[None]]


def over_http(cluster: Cluster, replicas: int, pick: random.Random) -> Deliver:
    """Each delivery to a replica picked at random, as a load balancer would."""

    async def deliver(body: dict[str, Any], attempt: int) -> None:
        url = cluster.url(pick.randrange(replicas))
        status, _ = await cluster.slack.post_signed(url, body, retry_num=attempt or None)
        assert status == 200

    return deliver


def over_sockets(cluster: Cluster) -> Deliver:
    """Each envelope to one open connection, picked by the fake as Slack would."""

    async def deliver(body: dict[str, Any], attempt: int) -> None:
        await cluster.slack.wait_ack(await cluster.slack.push(body, retry_attempt=attempt))

    return deliver


def question(token: str) -> str:
    """A question the fake sources have articles for, told apart by its token."""
    return f"What is the transformer architecture, question {token}?"


@dataclass
class Asked:
    token: str
    thread: str  # the thread's root ts
    event: dict[str, Any]


async def flood(
    cluster: Cluster,
    deliver: Deliver,
    *,
    questions: int = 50,
    threads: int = 20,
    most_deliveries: int = 4,
    seed: int = 7,
) -> list[list[Asked]]:
    """``questions`` in ``threads`` threads, each delivered 1 to ``most_deliveries``
    times (retries racing the first delivery). Within a thread each question is asked
    once the one before it was taken, as people take turns; the threads go at once."""
    pick = random.Random(seed)
    per_thread = [1] * threads
    for _ in range(questions - threads):
        per_thread[pick.randrange(threads)] += 1

    async def one_thread(t: int) -> list[Asked]:
        asked: list[Asked] = []
        root: str | None = None
        for k in range(per_thread[t]):
            token = f"Q{t}x{k}"
            event = cluster.slack.user_says(question(token), thread_ts=root)
            root = root or str(event["ts"])
            asked.append(Asked(token, root, event))
            body = cluster.slack.callback(event)
            retries = pick.randrange(most_deliveries)
            copies = [deliver(body, 0)]
            copies += [
                _later(pick.uniform(0, 0.3), deliver(body, n)) for n in range(1, retries + 1)
            ]
            if root != event["ts"]:
                # In a thread Slack also sends a `message` event for the same message (with
                # its own envelope): keyed by the message, it counts once with the mention.
                twin = cluster.slack.callback(
                    {**event, "type": "message", "channel_type": "channel"}
                )
                copies.append(_later(pick.uniform(0, 0.3), deliver(twin, 0)))
            await copies[0]
            await asyncio.gather(*copies[1:], cluster.claimed(f"{CHANNEL}:{event['ts']}"))
        return asked

    return list(await asyncio.gather(*(one_thread(t) for t in range(threads))))


async def _later(seconds: float, work: Awaitable[None]) -> None:
    await asyncio.sleep(seconds)
    await work


def answers(slack: FakeSlack, root: str) -> list[Message]:
    """The finished answers in a thread, in the order they were posted."""
    return [
        m
        for m in slack.in_thread(CHANNEL, root)
        if not m.streaming and "Sources" in m.shown() and "Answer to" in m.shown()
    ]


async def all_answered(slack: FakeSlack, asked: list[list[Asked]]) -> None:
    expected = sum(len(thread) for thread in asked)

    def done() -> bool:
        return sum(len(answers(slack, thread[0].thread)) for thread in asked) >= expected

    await asyncio.wait_for(slack.until(done), WAIT_S)


def assert_once_each_in_order(
    slack: FakeSlack, ollama: FakeOllama, asked: list[list[Asked]]
) -> None:
    for thread in asked:
        root = thread[0].thread
        shown = [TOKEN.findall(m.shown()) for m in answers(slack, root)]
        assert shown == [[a.token] for a in thread], f"thread {root}: {shown}"
        bots = [m for m in slack.in_thread(CHANNEL, root) if "Answer to" in m.shown()]
        assert len(bots) == len(thread), "one message per question, none posted twice"
    # Each answer was written seeing the one before it: one turn at a time, in order,
    # whichever replica took which.
    prompts = {
        TOKEN.findall(str(b["messages"][-1]["content"]).rsplit("Question:", 1)[-1])[0]: str(
            b["messages"][-1]["content"]
        )
        for b in ollama.chat_bodies()
        if SYNTHESIS_MARKER in str(b["messages"][0]["content"])
    }
    for thread in asked:
        for before, after in itertools.pairwise(thread):
            assert f"Answer to {before.token}" in prompts[after.token], after.token


def synthesis_calls(ollama: FakeOllama) -> list[str]:
    return [
        TOKEN.findall(str(b["messages"][-1]["content"]).rsplit("Question:", 1)[-1])[0]
        for b in ollama.chat_bodies()
        if SYNTHESIS_MARKER in str(b["messages"][0]["content"])
    ]


# ------------------------------------------------------------------------- HTTP mode


@pytest.mark.parametrize("replicas", [2, 3])
async def test_http_replicas_answer_fifty_questions_once_each_in_order(
    cluster: Cluster, replicas: int
) -> None:
    async with bots() as started:
        started.extend(await cluster.start(replicas, mode="http"))
        asked = await flood(cluster, over_http(cluster, replicas, random.Random(replicas)))
        await all_answered(cluster.slack, asked)
        assert_once_each_in_order(cluster.slack, cluster.ollama, asked)
        assert sorted(synthesis_calls(cluster.ollama)) == sorted(
            a.token for thread in asked for a in thread
        ), "no question was answered twice, even in vain"
        for bot in started:
            assert await bot.terminate() == 128 + 15  # stopped by SIGTERM, cleanly


async def test_http_a_killed_replicas_questions_are_finished_by_another_once(
    cluster: Cluster,
) -> None:
    async with bots() as started:
        started.extend(await cluster.start(2, mode="http"))
        first, _second = started
        cluster.ollama.pace(SYNTHESIS_MARKER, 0.4)
        to_first = over_http(cluster, 1, random.Random(0))  # replica 0 only
        slow = cluster.slack.user_says(question("Q0x0"))
        await to_first(cluster.slack.callback(slow), 0)
        root = str(slow["ts"])
        waiting = cluster.slack.user_says(question("Q0x1"), thread_ts=root)
        await cluster.claimed(f"{CHANNEL}:{slow['ts']}")
        await to_first(cluster.slack.callback(waiting), 0)
        await cluster.claimed(f"{CHANNEL}:{waiting['ts']}")

        def mid_answer() -> bool:
            return any(m.streaming and m.chunks for m in cluster.slack.in_thread(CHANNEL, root))

        await asyncio.wait_for(cluster.slack.until(mid_answer), WAIT_S)
        # The message's id reaches the store a moment after Slack has it (a kill in
        # between leaves that message, and the take-over posts anew): wait for the record.
        await asyncio.wait_for(cluster.reply_recorded(f"{CHANNEL}:{slow['ts']}"), WAIT_S)
        (cut,) = [m for m in cluster.slack.in_thread(CHANNEL, root) if m.streaming]
        await first.kill()
        cluster.ollama.pace(SYNTHESIS_MARKER, 0.0)

        asked = [[Asked("Q0x0", root, slow), Asked("Q0x1", root, waiting)]]
        await all_answered(cluster.slack, asked)
        assert_once_each_in_order(cluster.slack, cluster.ollama, asked)
        # The cut answer was finished in the message it had started; besides the two
        # answers, the thread holds at most the "yours is next" said when Q0x1 came (if
        # it went out before the kill: a take-over does not say it again).
        assert answers(cluster.slack, root)[0].ts == cut.ts
        others = [
            m.shown()
            for m in cluster.slack.in_thread(CHANNEL, root)
            if m.by_bot and m not in answers(cluster.slack, root)
        ]
        assert others in ([], ["I am still working on an earlier question here; yours is next."])


# ------------------------------------------------------------------------ Socket Mode


async def test_socket_mode_replicas_answer_fifty_questions_once_each_in_order(
    cluster: Cluster,
) -> None:
    async with bots() as started:
        started.extend(await cluster.start_sockets(2))
        asked = await flood(cluster, over_sockets(cluster))
        await all_answered(cluster.slack, asked)
        assert_once_each_in_order(cluster.slack, cluster.ollama, asked)


async def test_socket_mode_a_killed_replicas_questions_are_finished_by_another_once(
    cluster: Cluster,
) -> None:
    async with bots() as started:
        started.extend(await cluster.start_sockets(2))
        cluster.ollama.pace(SYNTHESIS_MARKER, 0.4)
        asked = await flood(cluster, over_sockets(cluster), questions=6, threads=3)
        # Whichever replica is mid-answer now dies.
        await asyncio.wait_for(
            cluster.slack.until(
                lambda: any(m.streaming and m.chunks for m in cluster.slack.messages)
            ),
            WAIT_S,
        )
        owner = await scalar(
            cluster.database,
            "SELECT owner FROM inbox WHERE status = 'pending' ORDER BY received_at LIMIT 1",
        )
        victim = next(b for b in started if f":{b.proc.pid}:" in str(owner))
        await victim.kill()
        cluster.ollama.pace(SYNTHESIS_MARKER, 0.0)
        await all_answered(cluster.slack, asked)
        assert_once_each_in_order(cluster.slack, cluster.ollama, asked)


# ------------------------------------------------------------------------ the database


async def test_three_replicas_starting_at_once_migrate_an_empty_database_once(
    cluster: Cluster,
) -> None:
    async with bots() as started:
        started.extend(await cluster.start(3, mode="http"))
    logs = [(cluster.tmp_path / f"replica{n}" / "bot.log").read_text() for n in range(3)]
    migrated = [log.count("store schema migrated to version 7") for log in logs]
    assert sorted(migrated) == [0, 0, 1]
    assert await scalar(cluster.database, "SELECT version FROM schema_version") == 7


async def test_a_replica_whose_database_restarts_is_not_ready_then_goes_on(
    tmp_path: Path,
    slack: FakeSlack,
    ollama: FakeOllama,
    wikipedia: FakeWikipedia,
    hackernews: FakeHackerNews,
) -> None:
    # A server of its own: restarting the session's would disturb the other tests.
    url, directory = (await script("start")).split()
    server = Server(url, directory)
    try:
        with fresh_database(server) as database:
            ollama.responder = answering
            cluster = Cluster(tmp_path, database, slack, ollama, wikipedia, hackernews)
            metrics = free_port()
            extra = f'\n[metrics]\nport = {metrics}\nhost = "127.0.0.1"\n'
            async with bots() as started:
                config = cluster.config(0, mode="http", extra=extra)
                started.append(await ServedBot.start(config, cluster.env("http")))
                assert await readyz(metrics) == 200
                await script("pause", directory)
                await until_status(metrics, 503)
                await script("resume", directory)
                await until_status(metrics, 200)
                asked = await flood(cluster, over_http(cluster, 1, random.Random(1)),
                                    questions=2, threads=1)  # fmt: skip
                await all_answered(slack, asked)
                assert_once_each_in_order(slack, ollama, asked)
    finally:
        server.stop()


async def scalar(database: str, sql: str) -> Any:
    """One value read from ``database``, on a connection of its own."""
    conn = await asyncpg.connect(database)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def script(*args: str) -> str:
    """Run scripts/postgres; its output."""
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def readyz(port: int) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        return response.status


async def until_status(port: int, status: int) -> None:
    async def wait() -> None:
        while True:
            if await readyz(port) == status:
                return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(wait(), 30)
