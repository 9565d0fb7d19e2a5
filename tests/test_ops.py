"""/healthz, /readyz and /metrics of a running bot, read over HTTP as a probe reads them."""

from __future__ import annotations

import socket
from collections.abc import Callable

import aiohttp
import pytest

from bot.adapters.inmemory import InMemoryAdapter
from bot.config import Settings
from bot.errors import StartupError
from bot.runtime import Runtime
from tests.fakes.ollama import FakeOllama

SettingsFactory = Callable[..., Settings]
QUESTION = "What is the transformer architecture in deep learning?"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


def value(metrics: str, series: str) -> float:
    """The value of one series (name and labels exactly as exposed), 0 when absent."""
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_ready_once_the_platforms_are_connected_and_not_while_shutting_down(
    make_settings: SettingsFactory,
) -> None:
    port = free_port()
    settings = make_settings(metrics={"port": port, "host": "127.0.0.1"})
    bot = InMemoryAdapter()
    runtime = await Runtime.start(settings, adapters=[bot])
    try:
        assert await get(port, "/healthz") == (200, "ok\n")
        status, text = await get(port, "/readyz")
        assert status == 503 and "inmemory: not started yet" in text
        await runtime.add_adapter(bot)
        assert await get(port, "/readyz") == (200, "ready\n")
        await bot.close()
        status, text = await get(port, "/readyz")
        assert status == 503 and "inmemory: not connected" in text
        assert runtime.probes is not None
        runtime.probes.closing = True
        assert "shutting down" in (await get(port, "/readyz"))[1]
    finally:
        await runtime.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(port, "/healthz")


async def test_metrics_count_questions_steps_and_duplicates_without_user_ids(
    make_settings: SettingsFactory, ollama: FakeOllama
) -> None:
    port = free_port()
    settings = make_settings(metrics={"port": port, "host": "127.0.0.1"})
    async with await Runtime.start(settings) as runtime:
        bot = InMemoryAdapter()
        await runtime.add_adapter(bot)
        _, before = await get(port, "/metrics")
        message = bot.message(QUESTION, author="alice-4711", channel="secret-plans")
        first = await bot.submit(message)
        assert first.done is not None
        await first.done
        assert (await bot.submit(message)).outcome == "duplicate"

        status, after = await get(port, "/metrics")

    assert status == 200
    received = 'research_agent_questions_received_total{platform="inmemory"}'
    deduplicated = 'research_agent_questions_deduplicated_total{platform="inmemory"}'
    assert value(after, received) - value(before, received) == 2
    assert value(after, deduplicated) - value(before, deduplicated) == 1
    turns = 'research_agent_turns_total{platform="inmemory",status="answered"}'
    assert value(after, turns) - value(before, turns) == 1
    total = 'research_agent_turn_step_seconds_count{step="total"}'
    assert value(after, total) - value(before, total) == 1
    assert 'research_agent_turn_step_seconds_bucket{le="0.5",step="fetch"}' in after
    assert "research_agent_inbox_pending 0.0" in after
    assert 'research_agent_platform_connected{platform="inmemory"} 1.0' in after
    assert "research_agent_embedding_cache_lookups_total{result=" in after
    assert "research_agent_replicas 1.0" in after
    # Who asked, and where, stays out of the monitoring system.
    assert "alice-4711" not in after and "secret-plans" not in after


async def test_a_taken_port_stops_the_start_naming_the_setting(
    make_settings: SettingsFactory,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(metrics={"port": port, "host": "127.0.0.1"})
        with pytest.raises(StartupError) as caught:
            await Runtime.start(settings)
    assert "[metrics].port" in str(caught.value)


async def test_no_port_serves_nothing(make_settings: SettingsFactory) -> None:
    async with await Runtime.start(make_settings()) as runtime:
        assert runtime.settings.metrics.port == 0
        assert runtime.probes is not None
        assert await runtime.probes.problems() == []
