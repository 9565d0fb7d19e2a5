"""Discord's gateway shards: how many, where each runs, how they IDENTIFY, what they carry.

In-process tests run the real adapter against the fake Discord (which routes a guild's
events to its shard's connection only, as Discord does), and the shard set alone with a
stand-in cluster; the process tests run real ``python -m bot`` replicas, on one PostgreSQL
database or alone on SQLite.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import discord
import discord.http
import pytest

from bot.adapters.discord.inbound import SHARED_NO_S, Answered
from bot.adapters.discord.pacing import (
    GLOBAL_BUDGET,
    HTTP_LOGGER,
    RetriedLimits,
    SendBudget,
    note_429,
)
from bot.adapters.discord.reply import TYPING_SPARE
from bot.adapters.discord.shards import GatewayPlan, ShardSet, gateway_plan
from bot.contract import Platform
from bot.errors import PlatformSetupError, StoreError
from bot.runtime import Runtime
from tests.fakes.discord import TOKEN, Connection, FakeDiscord, Json, user
from tests.fakes.ollama import FakeOllama
from tests.processes import ServedBot, bot_env, bots, local_ports
from tests.test_discord import (
    WAIT_S,
    Outcomes,
    SettingsFactory,
    World,
    discord_429s,
    discord_settings,
)

QUESTION = "What is the transformer architecture in deep learning?"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as found:
        yield found


def first_channel(fake: FakeDiscord, guild: int) -> int:
    return int(fake.guilds[guild]["channels"][0]["id"])


async def answered(world: World, channel: int, question: Json) -> None:
    await world.final(channel, question)
    replies = [
        m
        for m in world.fake.bot_messages(channel)
        if (m.get("message_reference") or {}).get("message_id") == question["id"]
    ]
    assert len(replies) == 1, "answered once"


@pytest.fixture
async def sharded(
    make_settings: SettingsFactory, fake: FakeDiscord
) -> AsyncIterator[tuple[World, list[int]]]:
    """A bot alone on SQLite, with one guild on each of two shards (channels returned)."""
    guilds = [fake.add_guild(f"shard {i}", shard=(i, 2)) for i in (0, 1)]
    channels = [first_channel(fake, g) for g in guilds]
    settings = discord_settings(make_settings, fake, channels[0])
    async with await Runtime.start(settings) as runtime:
        world = World(fake, guilds[0], channels[0], channels[0], settings, runtime,
                      Outcomes(runtime.intake), ann=user(fake.new_id(), "ann"))  # fmt: skip
        yield world, channels


# ----------------------------------------------------------------------------- in process


async def test_the_recommended_shards_all_run_alone_paced_and_each_gets_only_its_guilds(
    sharded: tuple[World, list[int]], ollama: FakeOllama
) -> None:
    world, channels = sharded
    fake = world.fake
    fake.recommended_shards, fake.max_concurrency = 2, 1  # one IDENTIFY per 5 s
    await world.start()  # shard_count = 0: as Discord recommends
    assert fake.requests_to("/api/v10/gateway/bot")
    first, second = fake.identified()
    assert {first.shard, second.shard} == {(0, 2), (1, 2)}
    assert first.identified_at is not None and second.identified_at is not None
    assert second.identified_at - first.identified_at >= 5.0, "Discord's 5 s per key"
    assert fake.too_early() == []
    assert set(fake.live()) == {0, 1}
    by_shard = {c.shard[0]: c for c in (first, second) if c.shard is not None}
    for index, channel in enumerate(channels):
        question = await world.ask(channel, world.mention(QUESTION))
        await answered(world, channel, question)
        guild = int(fake.channels[channel]["guild_id"])
        for shard_id, connection in by_shard.items():
            got = {name for name, g in connection.events if g == guild}
            assert ("MESSAGE_CREATE" in got) == (shard_id == index), "only its shard's"
    dm = fake.new_id()
    asked = await fake.send_message(dm, "What is BERT in language models?", author=world.ann)
    await answered(world, dm, asked)
    assert ("MESSAGE_CREATE", None) in by_shard[0].events
    assert ("MESSAGE_CREATE", None) not in by_shard[1].events, "DMs come on shard 0"


async def test_a_configured_shard_count_wins_and_commands_sync_once(
    sharded: tuple[World, list[int]], ollama: FakeOllama
) -> None:
    world, channels = sharded
    fake = world.fake
    fake.recommended_shards, fake.max_concurrency = 1, 3
    await world.start(shard_count=3)
    assert fake.requests_to("/api/v10/gateway/bot"), "max_concurrency is still asked for"
    assert sorted(c.shard for c in fake.identified() if c.shard) == [(0, 3), (1, 3), (2, 3)]
    assert fake.too_early() == []
    syncs = [r for r in fake.requests if r.method == "PUT" and r.path.endswith("/commands")]
    assert len(syncs) == 1
    question = await world.ask(channels[1], world.mention(QUESTION))
    await answered(world, channels[1], question)
    assert world.adapter is not None
    await world.adapter.close()
    await fake.wait_for(lambda: not fake.live())


class StubHttp:
    def __init__(self, answer: tuple[int, str, dict[str, int]] | None) -> None:
        self.answer = answer

    async def get_bot_gateway(self) -> tuple[int, str, dict[str, int]]:
        if self.answer is None:
            raise discord.GatewayNotFound()  # type: ignore[no-untyped-call]
        return self.answer


async def test_the_gateway_plan_reads_discord_and_falls_back_only_when_configured() -> None:
    def http(answer: tuple[int, str, dict[str, int]] | None) -> discord.http.HTTPClient:
        return cast(discord.http.HTTPClient, StubHttp(answer))

    said = (4, "wss://g", {"max_concurrency": 2})
    assert await gateway_plan(http(said), 0) == GatewayPlan(4, 2)
    assert await gateway_plan(http(said), 6) == GatewayPlan(6, 2)
    assert await gateway_plan(http((1, "wss://g", {})), 0) == GatewayPlan(1, 1)
    assert await gateway_plan(http(None), 2) == GatewayPlan(2, 1)
    with pytest.raises(PlatformSetupError, match="shard_count"):
        await gateway_plan(http(None), 0)


class StubCluster:
    """The cluster as a shard set sees it, its answer set by the test."""

    def __init__(self, owned: set[int]) -> None:
        self.owned = owned
        self.released = 0
        self.down = False

    shared = True
    replicas = 2
    lease_s = 3.0

    async def pace(self, key: str, *, per_minute: float, burst: int = 1) -> float:
        return 0.0

    async def shards(self, platform: Platform, count: int) -> frozenset[int]:
        if self.down:
            raise StoreError("the database is away")
        return frozenset(self.owned)

    async def release_shards(self, platform: Platform) -> None:
        self.released += 1


class StubClient:
    """A shard's client: ready once connected, connected until closed (or dropped)."""

    def __init__(self, shard_id: int, fail: BaseException | None = None) -> None:
        self.shard_id = shard_id
        self._fail = fail
        self._ready = asyncio.Event()
        self._closed = asyncio.Event()

    async def connect(self, *, reconnect: bool = True) -> None:
        if self._fail is not None:
            raise self._fail
        self._ready.set()
        await self._closed.wait()

    async def wait_until_ready(self) -> None:
        await self._ready.wait()

    def is_ready(self) -> bool:
        return self._ready.is_set()

    async def close(self) -> None:
        self._closed.set()

    def drop(self) -> None:
        self._closed.set()


async def test_the_shard_set_follows_the_cluster_and_gives_up_after_a_lost_shard() -> None:
    cluster = StubCluster({0, 1})
    clients: dict[int, StubClient] = {}
    lost: list[tuple[int, BaseException | None]] = []
    was_lost = asyncio.Event()

    def report(shard_id: int, exc: BaseException | None) -> None:
        lost.append((shard_id, exc))
        was_lost.set()

    async def launch(shard_id: int) -> StubClient:
        clients[shard_id] = StubClient(shard_id)
        return clients[shard_id]

    clock = [0.0]
    shards = ShardSet(cluster, 3, launch=launch, lost=report, clock=lambda: clock[0])
    await shards.start()
    assert shards.running == {0, 1} and all(c.is_ready() for c in clients.values())
    cluster.owned = {1, 2}  # 0 went to a newcomer, 2's replica died
    await shards.reconcile()
    assert shards.running == {1, 2} and clients[0]._closed.is_set()
    cluster.down = True
    clock[0] = 2.0  # within a lease: keep running
    with pytest.raises(StoreError):
        await shards.reconcile()
    assert shards.running == {1, 2}
    clock[0] = 4.0  # past it: another replica may run them now
    with pytest.raises(StoreError):
        await shards.reconcile()
    assert shards.running == frozenset()
    cluster.down = False
    await shards.reconcile()
    await asyncio.wait_for(clients[2].wait_until_ready(), WAIT_S)
    clients[2].drop()  # discord.py gave up reconnecting
    await asyncio.wait_for(was_lost.wait(), WAIT_S)
    assert lost == [(2, None)]
    cluster.owned = {1, 2}
    await shards.reconcile()
    assert shards.running == {1}, "nothing new starts once the adapter gave up"
    await shards.close()
    assert shards.running == frozenset() and cluster.released == 1


async def test_a_shard_that_cannot_connect_fails_the_start() -> None:
    async def launch(shard_id: int) -> StubClient:
        return StubClient(shard_id, fail=discord.PrivilegedIntentsRequired(shard_id))

    shards = ShardSet(StubCluster({0}), 1, launch=launch, lost=lambda s, e: None)
    with pytest.raises(discord.PrivilegedIntentsRequired):
        await shards.start()
    await shards.close()


# ----------------------------------------------------------------------------- what replicas share


def test_the_bots_request_budget_is_divided_among_the_live_replicas() -> None:
    replicas, now = [1], [0.0]
    budget = SendBudget(replicas=lambda: replicas[0], clock=lambda: now[0])

    def burst() -> int:
        """Requests that may go in one second (each in a channel of its own)."""
        now[0] += 2.0
        return sum(budget.take(channel, "create") for channel in range(100))

    def typing() -> int:
        now[0] += 2.0
        return sum(budget.take_global(spare=TYPING_SPARE) for _ in range(100))

    assert burst() == GLOBAL_BUDGET == 40
    assert typing() == 40 - TYPING_SPARE
    replicas[0] = 3  # two more joined: each takes a third
    assert burst() == 13
    assert typing() == 13 - 5, "typing leaves as large a part of it for answers"
    replicas[0] = 1  # alone again
    assert burst() == 40


@pytest.mark.parametrize("shared", [False, True], ids=["alone", "shared"])
async def test_a_thread_not_answered_in_is_asked_again_only_when_replicas_share_the_store(
    shared: bool,
) -> None:
    answered_elsewhere: set[str] = set()
    lookups: list[str] = []

    async def lookup(key: str) -> bool:
        lookups.append(key)
        return key in answered_elsewhere

    now = [0.0]
    answered = Answered(lookup, shared=lambda: shared, clock=lambda: now[0])
    assert not await answered.has_answered("t")
    assert not await answered.has_answered("t"), "believed for a moment either way"
    assert lookups == ["t"]
    answered_elsewhere.add("t")  # another replica answered there
    now[0] += SHARED_NO_S
    assert await answered.has_answered("t") == shared
    now[0] += 3600
    assert await answered.has_answered("t") == shared
    assert lookups == (["t", "t"] if shared else ["t"]), "a yes is kept for good"
    answered.answered_in("u")
    assert await answered.has_answered("u") and "u" not in lookups


def test_429s_are_counted_once_whoever_meets_them() -> None:
    counted = discord_429s()
    note_429(discord.RateLimited(45.0))  # too long for discord.py to wait: raised to us
    refused: Any = SimpleNamespace(status=429, reason="Too Many Requests")
    note_429(discord.HTTPException(refused, {"message": "banned", "code": 0}))  # no Via
    missing: Any = SimpleNamespace(status=404, reason="Not Found")
    note_429(discord.NotFound(missing, "gone"))
    assert discord_429s() == counted + 2
    handler = RetriedLimits()
    handler.attach()
    http = logging.getLogger(HTTP_LOGGER)
    try:
        # What discord.py logs for one 429 it retries, one it gives up on, a global one.
        http.warning(
            "We are being rate limited. %s %s responded with 429. Retrying in %.2f seconds.",
            "PATCH", "/x", 0.5,
        )  # fmt: skip
        http.warning(
            "We are being rate limited. %s %s responded with 429. Timeout of %.2f was too "
            "long, erroring instead.", "PATCH", "/x", 45.0,
        )  # fmt: skip
        http.warning("Global rate limit has been hit. Retrying in %.2f seconds.", 0.5)
    finally:
        handler.detach()
        handler.detach()
    assert discord_429s() == counted + 3
    assert handler not in http.handlers


# ----------------------------------------------------------------------------- real processes

LEASE_S = 2.0  # short, so a dead replica's shard moves in seconds (at least 1 is allowed)
PROCESS_WAIT_S = 60.0


def replica_config(
    write_config: Callable[..., Path], fake: FakeDiscord, *, database: str | None = None
) -> Path:
    """The bot's config for the fakes: two shards, and ``database`` (PostgreSQL) if given."""
    config = write_config()
    text = config.read_text(encoding="utf-8")
    memory = f"[memory]\nlease_s = {LEASE_S}\n"
    if database is not None:
        text = re.sub(r'\[memory\]\ndatabase = "[^"]*"\n', "[memory]\n", text)
        memory += f'database = "{database}"\n'
    text = text.replace("[memory]\n", memory) + (
        f'\n[discord]\napi_url = "{fake.api_url}"\ngateway_url = "{fake.gateway_url}"\n'
        "edit_interval_s = 0.2\nshard_count = 2\n"
    )
    config.write_text(text, encoding="utf-8")
    return config


class Guilds:
    """One guild on each of the two shards, questions asked there, the answers found."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.channels = [first_channel(fake, fake.add_guild(f"shard {i}", shard=(i, 2)))
                         for i in (0, 1)]  # fmt: skip
        self.ann = user(fake.new_id(), "ann")

    async def ask(self, shard_id: int) -> Json:
        channel = self.channels[shard_id]
        return await self.fake.send_message(
            channel, f"<@{self.fake.bot_id}> {QUESTION}", author=self.ann
        )

    def replies(self, question: Json) -> list[Json]:
        return [
            m
            for m in self.fake.bot_messages(int(question["channel_id"]))
            if (m.get("message_reference") or {}).get("message_id") == question["id"]
        ]

    async def answered_once(self, question: Json) -> None:
        def done() -> bool:
            return any("**Sources" in str(m["content"]) for m in self.replies(question))

        await asyncio.wait_for(self.fake.wait_for(done), PROCESS_WAIT_S)
        assert len(self.replies(question)) == 1, "one reply, from one replica"

    async def until(self, predicate: Callable[[], bool]) -> None:
        await asyncio.wait_for(self.fake.wait_for(predicate), PROCESS_WAIT_S)


def each_shard_once(fake: FakeDiscord) -> bool:
    live = fake.live()
    return set(live) == {0, 1} and all(len(c) == 1 for c in live.values())


def owner(connection: Connection, served: list[ServedBot]) -> ServedBot:
    (found,) = [bot for bot in served if connection.port in local_ports(bot.proc.pid)]
    return found


async def test_two_replicas_on_postgres_divide_the_shards_and_one_takes_over_a_dead_ones(
    write_config: Callable[..., Path], postgres_url: str, fake: FakeDiscord, ollama: FakeOllama
) -> None:
    fake.max_concurrency = 2  # each shard its own IDENTIFY key: no 5 s between them
    guilds = Guilds(fake)
    config = replica_config(write_config, fake, database=postgres_url)
    env = bot_env(DISCORD_TOKEN=TOKEN)
    async with bots() as served:
        served.append(await ServedBot.start(config, env))
        await guilds.until(lambda: each_shard_once(fake))  # alone, it runs both
        served.append(await ServedBot.start(config, env))
        # The first gives one shard back as it sees the second; the second takes it.
        await guilds.until(lambda: each_shard_once(fake) and len(fake.identified()) == 3)
        live = {shard_id: c for shard_id, (c,) in fake.live().items()}
        owners = {shard_id: owner(c, served) for shard_id, c in live.items()}
        assert owners[0] is not owners[1], "disjoint shards, one each"
        for shard_id in (0, 1):
            await guilds.answered_once(await guilds.ask(shard_id))

        victim = owners[0]  # the one running shard 0 (DMs, slash commands sync)
        survivor = owners[1]
        killed_at = time.monotonic()
        await victim.kill()
        await guilds.until(lambda: each_shard_once(fake) and len(fake.identified()) == 4)
        moved = fake.live()[0][0]
        assert owner(moved, [survivor]) is survivor
        assert moved.identified_at is not None
        assert moved.identified_at - killed_at < 4 * LEASE_S, "within a few leases"
        question = await guilds.ask(0)
        await guilds.answered_once(question)
        assert fake.too_early() == []


async def test_alone_on_sqlite_one_process_runs_every_shard(
    write_config: Callable[..., Path], fake: FakeDiscord, ollama: FakeOllama
) -> None:
    fake.max_concurrency = 2
    guilds = Guilds(fake)
    config = replica_config(write_config, fake)
    async with bots() as served:
        served.append(bot := await ServedBot.start(config, bot_env(DISCORD_TOKEN=TOKEN)))
        assert each_shard_once(fake), "both ready before it says it is answering"
        assert sorted(c.shard for c in fake.identified() if c.shard) == [(0, 2), (1, 2)]
        ports = local_ports(bot.proc.pid)
        assert all(c.port in ports for c in fake.identified()), "both from the one process"
        for shard_id in (0, 1):
            await guilds.answered_once(await guilds.ask(shard_id))
