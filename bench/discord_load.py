"""A burst of questions through Discord: how fast do people see progress and answers?

The real runtime and the real Discord adapter (discord.py over real sockets) with the real
embedding model, against a fake Discord and the fake sources and LLM, each in a process of
its own (as the real services are), all with injected latency. One question is asked
alone, then a burst of ``--burst`` questions in as many research channels at once.
Printed:

* time to first visible progress (the reply's first post) and to the final edit (answer
  and Sources), p50 and p95, for the single question and for the burst;
* burst throughput, against the embedding pool's measured capacity (turns' worth of
  embeddings per second, measured alone);
* edits per answer, 429s received, answers lost or duplicated (both must be 0).

Times are measured by the fake Discord (``time.monotonic`` is system-wide on Linux): from
the MESSAGE_CREATE it dispatched to the request that posted or edited the reply.

    python bench/discord_load.py [--burst 50] [--source-latency 0.3] [--llm-latency 0.2]
                                 [--discord-latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_services import QUESTIONS, FakeServices
from bot.adapters.discord import DiscordAdapter
from bot.adapters.discord.pacing import GLOBAL_BUDGET
from bot.agents.fetch import FetchAgent
from bot.config import Secret, load_settings
from bot.runtime import Runtime
from tests.conftest import config_text
from tests.fakes.discord import TOKEN, FakeDiscord, user
from tests.fakes.ollama import derive_keywords


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--source-latency", type=float, default=0.3)
    parser.add_argument("--llm-latency", type=float, default=0.2)
    parser.add_argument("--discord-latency", type=float, default=0.05)
    return parser.parse_args()


# ----------------------------------------------------------------------------- the fake Discord


class DiscordProcess:
    """The fake Discord in a child process, driven over a pipe."""

    def __init__(self, channels: int, latency_s: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve, args=(child, channels, latency_s), name="fake-discord", daemon=True
        )
        self._proc.start()
        child.close()
        self.api_url, self.gateway_url, self.channels = self._conn.recv()

    async def call(self, *command: Any) -> Any:
        return await asyncio.to_thread(self._roundtrip, command)

    def _roundtrip(self, command: tuple[Any, ...]) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    async def close(self) -> None:
        if self._proc.is_alive():
            await self.call("stop")
        await asyncio.to_thread(self._proc.join, 10)
        self._conn.close()


def _serve(conn: Connection, channels: int, latency_s: float) -> None:
    asyncio.run(_main(conn, channels, latency_s))


async def _main(conn: Connection, channels: int, latency_s: float) -> None:
    async with FakeDiscord() as fake:
        fake.latency_s = latency_s
        guild = fake.add_guild(channels=tuple(f"research-{n}" for n in range(channels)))
        ids = [int(c["id"]) for c in fake.guilds[guild]["channels"]]
        conn.send((fake.api_url, fake.gateway_url, ids))
        asked: dict[int, float] = {}
        ann = user(fake.new_id(), "ann")
        while True:
            command = await asyncio.to_thread(conn.recv)
            if command[0] == "ask":
                for channel, text in command[1]:
                    sent = time.monotonic()
                    message = await fake.send_message(channel, text, author=ann)
                    asked[int(message["id"])] = sent
                conn.send(None)
            elif command[0] == "wait":
                await fake.wait_for(lambda: _finished(fake, asked) >= len(asked))
                conn.send(None)
            elif command[0] == "stats":
                conn.send((_stats(fake, asked), len(fake.rate_limited), len(fake.requests)))
                asked.clear()
            else:
                conn.send(None)
                return


def _replies(fake: FakeDiscord, question: int) -> list[dict[str, Any]]:
    return [
        m
        for channel in list(fake.messages)
        for m in fake.bot_messages(channel)
        if (m.get("message_reference") or {}).get("message_id") == str(question)
    ]


def _finished(fake: FakeDiscord, asked: dict[int, float]) -> int:
    return sum(any("**Sources" in r["content"] for r in _replies(fake, q)) for q in asked)


def _stats(fake: FakeDiscord, asked: dict[int, float]) -> list[tuple[float, float, int, int]]:
    """Per question: (to first progress, to final edit, edits, replies)."""
    rows = []
    for question, sent in asked.items():
        replies = _replies(fake, question)
        if not replies:
            rows.append((float("nan"), float("nan"), 0, 0))
            continue
        reply = int(replies[0]["id"])
        edits = fake.edited_at.get(reply, [])
        final = edits[-1] if edits else fake.posted_at[reply]
        rows.append((fake.posted_at[reply] - sent, final - sent, len(edits), len(replies)))
    return rows


# ----------------------------------------------------------------------------- the bot side


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    services = FakeServices()
    discord = DiscordProcess(args.burst + 2, args.discord_latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config.toml"
            config.write_text(
                config_text(
                    ollama_url=services.urls.ollama,
                    wikipedia_url=services.urls.wikipedia,
                    hackernews_url=services.urls.hackernews,
                    database=Path(tmp) / "bench.db",
                    backend="sentence-transformers",
                ),
                encoding="utf-8",
            )
            settings = load_settings(config, env={})
            sources = dataclasses.replace(settings.sources, cache_ttl_s=0.0)
            intake = dataclasses.replace(settings.intake, rate_limit_per_minute=0.0)
            chat = dataclasses.replace(
                settings.discord,
                api_url=discord.api_url,
                gateway_url=discord.gateway_url,
                research_channels=tuple(discord.channels),
            )
            settings = dataclasses.replace(settings, sources=sources, intake=intake, discord=chat)
            async with await Runtime.start(settings) as runtime:
                await measure(runtime, services, discord, args)
    finally:
        await discord.close()
        await services.close()


async def measure(
    runtime: Runtime, services: FakeServices, discord: DiscordProcess, args: argparse.Namespace
) -> None:
    adapter = DiscordAdapter(
        runtime.settings.discord,
        Secret(TOKEN),
        inbox_max_age_s=runtime.settings.intake.inbox_max_age_s,
        guild_ready_timeout_s=0.1,
    )
    await runtime.add_adapter(adapter)
    channels = discord.channels
    # Warm-up (imports, first connections, the model's first batch), not counted.
    await ask(discord, [(channels[-1], QUESTIONS[0])])
    await runtime.pipeline.memory.settle()
    await services.set_latency(source_s=args.source_latency, llm_s=args.llm_latency)

    single, before, requests_before = await ask(discord, [(channels[-2], QUESTIONS[1])])
    await runtime.pipeline.memory.settle()
    start = time.monotonic()
    burst_questions = [(channels[n], QUESTIONS[n % len(QUESTIONS)]) for n in range(args.burst)]
    burst, limited, requests = await ask(discord, burst_questions)
    limited -= before
    elapsed = time.monotonic() - start
    # Every REST call the burst made (posts, edits, typing), against the bot's own budget.
    rate = (requests - requests_before) / elapsed
    await runtime.pipeline.memory.settle()

    await services.set_latency(source_s=0.0, llm_s=0.0)
    capacity = await embedding_capacity(runtime)
    report(
        args,
        single=single,
        burst=burst,
        limited=limited,
        elapsed=elapsed,
        capacity=capacity,
        rate=rate,
    )


async def ask(
    discord: DiscordProcess, questions: list[tuple[int, str]]
) -> tuple[list[tuple[float, float, int, int]], int, int]:
    """Per-question rows, and the fake's counts so far: 429s sent, requests received."""
    await discord.call("ask", questions)
    await discord.call("wait")
    rows, limited, requests = await discord.call("stats")
    return rows, limited, requests


async def embedding_capacity(runtime: Runtime, rounds: int = 16) -> float:
    """Turns' worth of embeddings per second the pool sustains alone (concurrent calls).

    Each turn's texts are what a turn embeds: the question and the articles fetched for
    its keywords (from the fake sources, with no latency now).
    """
    fetcher = FetchAgent(runtime.http, runtime.settings.sources)
    turns = []
    for question in QUESTIONS:
        found = await fetcher.fetch(derive_keywords(question))
        turns.append([question, *(f"{a.title}. {a.text}" for a in found.articles)])
    # Past the vector cache: this is what the pool computes, not what it remembers.
    await runtime.embeddings.embed(turns[0], use_cache=False)
    start = time.perf_counter()
    await asyncio.gather(
        *(runtime.embeddings.embed(turns[n % len(turns)], use_cache=False) for n in range(rounds))
    )
    return rounds / (time.perf_counter() - start)


def report(
    args: argparse.Namespace,
    *,
    single: list[tuple[float, float, int, int]],
    burst: list[tuple[float, float, int, int]],
    limited: int,
    elapsed: float,
    capacity: float,
    rate: float,
) -> None:
    print(
        f"burst: {args.burst} questions in {args.burst} channels; machine: {os.cpu_count()} cores"
    )
    print(
        f"injected: {args.source_latency * 1000:.0f} ms per source request, "
        f"{args.llm_latency * 1000:.0f} ms per LLM call, "
        f"{args.discord_latency * 1000:.0f} ms per Discord request"
    )
    print()
    for label, rows in (("single question", single), (f"burst of {args.burst}", burst)):
        first = [r[0] for r in rows]
        final = [r[1] for r in rows]
        print(
            f"{label:<18} first progress p50 {percentile(first, 0.5) * 1000:6.0f} ms  "
            f"p95 {percentile(first, 0.95) * 1000:6.0f} ms   final edit p50 "
            f"{percentile(final, 0.5) * 1000:6.0f} ms  p95 {percentile(final, 0.95) * 1000:6.0f} ms"
        )
    print()
    throughput = len(burst) / elapsed
    print(f"{'burst throughput':<44}{throughput:8.2f} answers/s")
    print(f"{'embedding pool capacity (measured alone)':<44}{capacity:8.2f} turns/s")
    print(f"{'throughput / capacity':<44}{throughput / capacity:8.2f}")
    print(
        f"{'Discord requests during the burst':<44}{rate:8.1f} /s  "
        f"(the bot's budget: {GLOBAL_BUDGET}/s, Discord's limit 50/s)"
    )
    edits = [r[2] for r in burst]
    print(f"{'edits per answer (median, max)':<44}{statistics.median(edits):8.0f} {max(edits):4d}")
    print(f"{'429s received during the burst':<44}{limited:8d}")
    lost = sum(1 for r in burst if r[3] == 0)
    duplicated = sum(1 for r in burst if r[3] > 1)
    print(f"{'answers lost / duplicated (must be 0 / 0)':<44}{lost:8d} / {duplicated}")


def main() -> None:
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
