"""How close is a turn to its critical path?

Runs real turns (the real runtime: ChatOllama, aiohttp, aiosqlite, the analysis subprocess,
the embedding pool) against the fakes with injected latencies, and prints:

* the measured p50 turn time;
* the critical path: the injected latencies along the longest chain of dependent steps
  (keywords LLM call → one source round trip → answer LLM call) plus the compute of the
  parallel phase measured alone (embedding the articles that were not in the vector cache
  yet, or analysis if that is slower; the question is embedded during the keyword call);
* the same work done sequentially: every LLM call and every source request one after the
  other, plus the embedding and analysis compute;
* the ratios. Target: turn time within 10% of the critical path.

The fakes run in a process of their own (bench/fake_services.py), as the real services do.

    python bench/turn_latency.py [--turns 10] [--source-latency 0.3] [--llm-latency 0.2]
                                 [--backend sentence-transformers|hashing]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_services import QUESTIONS, FakeServices
from bot.adapters.inmemory import InMemoryAdapter
from bot.agents.fetch import FetchAgent
from bot.config import load_settings
from bot.domain import Article
from bot.pipeline.ranking import article_text
from bot.runtime import Runtime
from tests.conftest import config_text


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--source-latency", type=float, default=0.3)
    parser.add_argument("--llm-latency", type=float, default=0.2)
    parser.add_argument(
        "--backend", choices=("sentence-transformers", "hashing"), default="sentence-transformers"
    )
    return parser.parse_args()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


async def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    services = FakeServices()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config.toml"
            config.write_text(
                config_text(
                    ollama_url=services.urls.ollama,
                    wikipedia_url=services.urls.wikipedia,
                    hackernews_url=services.urls.hackernews,
                    database=Path(tmp) / "bench.db",
                    backend=args.backend,
                ),
                encoding="utf-8",
            )
            settings = load_settings(config, env={})
            # Every turn must really fetch: no cache hits between the repeated questions.
            sources = dataclasses.replace(settings.sources, cache_ttl_s=0.0)
            settings = dataclasses.replace(settings, sources=sources)
            async with await Runtime.start(settings) as runtime:
                await measure(runtime, services, args)
    finally:
        await services.close()


@dataclass
class Samples:
    turn: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)
    embed_alone: list[float] = field(default_factory=list)
    analysis_alone: list[float] = field(default_factory=list)
    llm_calls: list[float] = field(default_factory=list)
    source_requests: list[float] = field(default_factory=list)
    # Article texts embedded by an earlier turn: the vector cache has them.
    seen: set[str] = field(default_factory=set)
    uncached: list[float] = field(default_factory=list)


async def measure(runtime: Runtime, services: FakeServices, args: argparse.Namespace) -> None:
    # Turns go through the intake, as a chat platform's would: the inbox claim counts.
    bot = InMemoryAdapter()
    await runtime.add_adapter(bot)
    # Warm-up turn (imports, first connections), not counted.
    warm = await bot.ask(QUESTIONS[0], channel="warm")
    await runtime.pipeline.memory.settle()
    samples = Samples()
    await compute_alone(runtime, QUESTIONS[0], list(warm.topics), Samples(seen=samples.seen))
    for i in range(args.turns):
        question = QUESTIONS[i % len(QUESTIONS)]
        await services.set_latency(source_s=args.source_latency, llm_s=args.llm_latency)
        topics = await timed_turn(runtime, bot, services, question, f"bench-{i}", samples=samples)
        # The same parallel-phase work, measured alone, with no latency injected.
        await services.set_latency(source_s=0.0, llm_s=0.0)
        await compute_alone(runtime, question, topics, samples)
    stats = runtime.embeddings.cache_stats
    report(samples, args, f"vector cache hit rate over the run {stats.hit_rate:.0%}")


async def timed_turn(
    runtime: Runtime,
    bot: InMemoryAdapter,
    services: FakeServices,
    question: str,
    session: str,
    *,
    samples: Samples,
) -> list[str]:
    before = await services.counts()
    start = time.perf_counter()
    result = await bot.ask(question, channel=session)
    samples.turn.append(time.perf_counter() - start)
    after = await services.counts()
    for name, seconds in result.timings.items():
        samples.steps.setdefault(name, []).append(seconds)
    samples.llm_calls.append(after.llm_calls - before.llm_calls)
    samples.source_requests.append(after.source_requests - before.source_requests)
    # The background save must not overlap the next measurement.
    await runtime.pipeline.memory.settle()
    return list(result.topics)


async def compute_alone(
    runtime: Runtime, question: str, topics: list[str], samples: Samples
) -> None:
    articles: list[Article] = list(
        (await FetchAgent(runtime.http, runtime.settings.sources).fetch(topics)).articles
    )
    texts = [article_text(a) for a in articles]
    uncached = sorted(set(texts) - samples.seen)
    samples.seen.update(texts)
    samples.uncached.append(len(uncached))
    start = time.perf_counter()
    if uncached:
        await runtime.embeddings.embed(uncached, use_cache=False)
    samples.embed_alone.append(time.perf_counter() - start)
    if runtime.analysis is not None and articles:
        start = time.perf_counter()
        await runtime.analysis.analyze(articles, topics)
        samples.analysis_alone.append(time.perf_counter() - start)


def report(samples: Samples, args: argparse.Namespace, cache: str) -> None:
    p50 = median(samples.turn)
    embed = median(samples.embed_alone)
    analysis = median(samples.analysis_alone)
    calls = median(samples.llm_calls)
    requests = median(samples.source_requests)
    chain = 2 * args.llm_latency + args.source_latency
    critical = chain + max(embed, analysis)
    sequential = calls * args.llm_latency + requests * args.source_latency + embed + analysis

    print(f"turns: {args.turns}, embeddings: {args.backend}, machine: {os.cpu_count()} cores")
    print(
        f"injected: {args.source_latency * 1000:.0f} ms per source request, "
        f"{args.llm_latency * 1000:.0f} ms per LLM call"
    )
    print(f"per turn: {calls:.0f} LLM calls, {requests:.0f} source requests (median)")
    print(
        f"articles not yet in the vector cache per turn: median "
        f"{median([float(n) for n in samples.uncached]):.0f}; {cache}"
    )
    print()
    rows = [("measured p50 turn time", p50)]
    rows += [
        (f"  step in the turn: {name}", median(samples.steps.get(f"{name}_s", [])))
        for name in ("topics", "fetch", "analysis", "embed", "synthesis")
    ]
    rows += [
        ("  embedding compute alone (median)", embed),
        ("  analysis subprocess alone (median)", analysis),
        ("critical path", critical),
        ("same work done sequentially", sequential),
    ]
    for label, seconds in rows:
        print(f"{label:<44}{seconds * 1000:8.0f} ms")
    print()
    print(f"{'turn / critical path':<44}{p50 / critical:8.2f}x  (target <= 1.10)")
    print(f"{'sequential / turn (speed-up)':<44}{sequential / p50:8.2f}x")


def main() -> None:
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
