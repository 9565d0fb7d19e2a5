"""Benchmark: which ranker puts the right source first, on confusable topics?

Runs every conversation of the labelled set (tests/fakes/confusable.py: 15 clusters of
confusable topics, chat-style questions with follow-ups, each with its gold source) through
the real pipeline (the runtime, the intake, the fetch agent, the embedding pool with the real
model) against the fakes serving that set's articles and stories. Every candidate of a turn
comes back as a numbered source with its score parts, so each ranker is scored on exactly the
same candidates:

* source order: the sources' own ranks (Wikipedia's search, then Algolia's);
* BM25 alone, dense alone;
* the hybrid, by reciprocal-rank fusion and by a weighted sum (with the pipeline's rules:
  disambiguation pages last, Hacker News capped);

and prints hit@1, hit@3 and MRR, overall and per kind of question, then a small grid over
the fusion constants with two-fold cross-validation by cluster (fit on half the clusters,
score on the others), so the defaults in bot/pipeline/ranking.py are not just fitted to the
figures they are judged by.

With ``--keyword-modes``, the set runs again with keyword replies like the ones real small
models give (tests/fakes/keyword_modes.py: prose, a wrong topic, nothing, a numbered list, a
quoted line, a reply cut off by the token limit), each with the server honouring the
request's JSON schema (as Ollama's grammar does) and ignoring it, and prints the hit@1 of
the pipeline's ranking for each next to the well-behaved reply's; then (unless
``--no-grid``) the grid again, each setting judged by its worst mode: the RRF weights in
bot/pipeline/ranking.py are that grid's choice.

    python bench/retrieval.py [--backend sentence-transformers|hashing] [--no-grid]
                              [--keyword-modes all|MODE,...]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import itertools
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.adapters.inmemory import InMemoryAdapter
from bot.config import Settings, load_settings
from bot.contract import ScoreParts, Source
from bot.pipeline import ranking
from bot.runtime import Runtime
from tests.conftest import config_text
from tests.fakes import confusable
from tests.fakes.hackernews import FakeHackerNews
from tests.fakes.keyword_modes import MODES, Mode, misbehaving
from tests.fakes.ollama import FakeOllama, Responder
from tests.fakes.wikipedia import FakeWikipedia

Ranker = Callable[["Case"], list[int]]


@dataclass(frozen=True)
class Case:
    cluster: str
    kind: str
    question: str
    gold: tuple[str, ...]
    sources: tuple[Source, ...]
    disambiguation: tuple[bool, ...]

    @property
    def parts(self) -> list[ScoreParts]:
        return [s.parts or ScoreParts() for s in self.sources]

    @property
    def stories(self) -> list[bool]:
        return [s.source == "Hacker News" for s in self.sources]

    def gold_at(self, order: Sequence[int]) -> int | None:
        """1-based position of the first gold source in ``order``."""
        for position, i in enumerate(order, start=1):
            if self.sources[i].title in self.gold:
                return position
        return None


def source_order(case: Case) -> list[int]:
    return sorted(
        range(len(case.sources)), key=lambda i: (case.parts[i].source_rank, case.stories[i], i)
    )


def by_part(name: str) -> Ranker:
    def ranker(case: Case) -> list[int]:
        parts = case.parts
        tiebreak = source_order(case)
        return sorted(tiebreak, key=lambda i: -float(getattr(parts[i], name)))

    return ranker


def fused(fuse: Callable[[Sequence[ScoreParts]], list[float]]) -> Ranker:
    def ranker(case: Case) -> list[int]:
        return ranking.order(
            fuse(case.parts),
            stories=case.stories,
            demoted=case.disambiguation,
            ranks=[p.source_rank for p in case.parts],
        )

    return ranker


def metrics(cases: Sequence[Case], ranker: Ranker) -> tuple[float, float, float]:
    if not cases:
        return 0.0, 0.0, 0.0
    hit1 = hit3 = rr = 0.0
    for case in cases:
        position = case.gold_at(ranker(case))
        if position is not None:
            hit1 += position == 1
            hit3 += position <= 3
            rr += 1.0 / position
    n = len(cases)
    return hit1 / n, hit3 / n, rr / n


def bench_settings(
    tmp: Path, backend: str, urls: tuple[str, str, str], max_seq_length: int = 0
) -> Settings:
    path = tmp / "config.toml"
    path.write_text(
        config_text(
            ollama_url=urls[0],
            wikipedia_url=urls[1],
            hackernews_url=urls[2],
            database=tmp / "bench.db",
            backend=backend,
        ),
        encoding="utf-8",
    )
    settings = load_settings(path, env={})
    sources = settings.sources
    sources = dataclasses.replace(
        sources,
        wikipedia=dataclasses.replace(sources.wikipedia, results_per_keyword=5),
        hackernews=dataclasses.replace(sources.hackernews, results_per_keyword=3),
    )
    return dataclasses.replace(
        settings,
        sources=sources,
        # Every candidate comes back as a numbered source, with its score parts.
        chat=dataclasses.replace(settings.chat, max_sources_in_prompt=20),
        analysis=dataclasses.replace(settings.analysis, enabled=False),
        citations=dataclasses.replace(settings.citations, check=False),
        embeddings=dataclasses.replace(settings.embeddings, max_seq_length=max_seq_length),
    )


@dataclass(frozen=True)
class Run:
    """One pass over the labelled set: the keyword replies, and whether ``format`` holds."""

    label: str
    responder: Responder
    honours_format: bool = True


async def collect(backend: str, max_seq_length: int = 0) -> list[Case]:
    """The set through the pipeline with the scripted (well-behaved) keyword replies."""
    runs = [Run("scripted", confusable.keyword_responder)]
    return (await collect_runs(backend, runs, max_seq_length))["scripted"]


async def collect_runs(
    backend: str, runs: Sequence[Run], max_seq_length: int = 0
) -> dict[str, list[Case]]:
    """Each run's cases, every run through the same runtime (its own conversations)."""
    out: dict[str, list[Case]] = {}
    async with (
        FakeOllama() as ollama,
        FakeWikipedia(confusable.pages()) as wiki,
        FakeHackerNews(confusable.stories()) as hn,
    ):
        with tempfile.TemporaryDirectory() as tmp:
            urls = (ollama.url, wiki.url, hn.url)
            settings = bench_settings(Path(tmp), backend, urls, max_seq_length)
            async with await Runtime.start(settings) as runtime:
                bot = InMemoryAdapter()
                await runtime.add_adapter(bot)
                for run in runs:
                    ollama.responder = run.responder
                    ollama.honours_format = run.honours_format
                    out[run.label] = await _ask_all(runtime, bot, run.label)
    return out


async def _ask_all(runtime: Runtime, bot: InMemoryAdapter, prefix: str) -> list[Case]:
    texts = {p.title: p for p in confusable.pages()}
    cases: list[Case] = []
    for n, conversation in enumerate(confusable.conversations()):
        for turn in conversation.turns:
            reply = await bot.ask(turn.question, channel=f"{prefix}-c{n}")
            flags = tuple(
                s.source == "Wikipedia"
                and s.title in texts
                and ranking.is_disambiguation_text(s.title, texts[s.title].text)
                for s in reply.sources
            )
            cases.append(
                Case(
                    conversation.cluster,
                    turn.kind,
                    turn.question,
                    turn.gold,
                    tuple(reply.sources),
                    flags,
                )
            )
        await runtime.pipeline.memory.settle()
    return cases


def keyword_modes(
    backend: str,
    modes: Sequence[Mode],
    max_seq_length: int,
    *,
    show_misses: bool = False,
    calibrate: bool = False,
) -> None:
    """hit@1 of the pipeline's own ranking with each kind of keyword reply, the server
    honouring ``format`` (a grammar) and ignoring it; ``show_misses``: the questions each
    mode's pipeline ranking missed, with the grammar; ``calibrate``: the fusion grid with
    every mode's cases."""
    runs = [
        Run(
            f"{mode}/{'format' if honoured else 'raw'}",
            misbehaving(
                mode, base=confusable.keyword_responder, keywords=confusable.scripted_keywords
            ),
            honoured,
        )
        for mode in modes
        for honoured in (True, False)
    ]
    started = time.perf_counter()
    cases = asyncio.run(collect_runs(backend, runs, max_seq_length))
    print()
    print(
        f"keyword replies like small models give ({time.perf_counter() - started:.0f} s): hit@1 "
        "/ hit@3 / MRR"
    )
    pipeline: Ranker = lambda case: list(range(len(case.sources)))  # noqa: E731
    rankers = {"the pipeline's ranking": pipeline, "hybrid: RRF": fused(ranking.rrf)}
    rankers["hybrid: weighted sum"] = fused(ranking.weighted)
    for name, ranker in rankers.items():
        print()
        print(f"{name:<28}{'format honoured (grammar)':>28}{'format ignored':>28}")
        print("-" * 84)
        for mode in modes:
            cells = []
            for kind in ("format", "raw"):
                h1, h3, mrr = metrics(cases[f"{mode}/{kind}"], ranker)
                cells.append(f"{h1:.3f} / {h3:.3f} / {mrr:.3f}")
            print(f"{mode:<28}{cells[0]:>28}{cells[1]:>28}")
    if show_misses:
        pipeline_misses(cases, modes)
    if calibrate:  # ``cases`` holds every mode's runs, format honoured and ignored
        grid(cases, "every keyword mode, format honoured and ignored")


def pipeline_misses(cases: Mapping[str, Sequence[Case]], modes: Sequence[Mode]) -> None:
    """Per mode, the questions whose gold source the pipeline did not put first."""

    def missed(mode: str) -> list[str]:
        return [
            c.question for c in cases[f"{mode}/format"] if c.gold_at(range(len(c.sources))) != 1
        ]

    print()
    for mode in modes:
        print(f"{mode} misses: " + ("; ".join(missed(mode)) or "none"))


def report(cases: Sequence[Case], rankers: dict[str, Ranker]) -> None:
    found = sum(1 for c in cases if c.gold_at(range(len(c.sources))) is not None)
    sizes = sorted(len(c.sources) for c in cases)
    print(
        f"{len(cases)} questions, {len({c.cluster for c in cases})} clusters; gold among the "
        f"candidates in {found}; candidates per turn {sizes[0]}-{sizes[-1]} "
        f"(median {sizes[len(sizes) // 2]})"
    )
    kinds = sorted({c.kind for c in cases})
    print()
    print(f"{'ranker':<22}{'hit@1':>7}{'hit@3':>7}{'MRR':>7}   hit@1 by kind")
    print("-" * 80)
    for name, ranker in rankers.items():
        h1, h3, mrr = metrics(cases, ranker)
        by_kind = "  ".join(
            f"{k} {metrics([c for c in cases if c.kind == k], ranker)[0]:.2f}" for k in kinds
        )
        print(f"{name:<22}{h1:>7.3f}{h3:>7.3f}{mrr:>7.3f}   {by_kind}")
    counts: defaultdict[str, int] = defaultdict(int)
    for c in cases:
        counts[c.kind] += 1
    print("-" * 80)
    print("questions per kind: " + ", ".join(f"{k} {counts[k]}" for k in kinds))


def grid(sets: Mapping[str, Sequence[Case]], title: str) -> None:
    """Two-fold cross-validation by cluster over the fusion constants. A setting scores its
    worst over ``sets`` (the scripted replies alone, or every keyword mode), so constants are
    chosen for the replies they will meet, not only the well-behaved one."""
    clusters = sorted({c.cluster for cases in sets.values() for c in cases})
    folds = [set(clusters[0::2]), set(clusters[1::2])]
    candidates: dict[str, dict[str, Ranker]] = {"rrf": {}, "weighted": {}}
    for k, wb, wp in itertools.product(
        (5.0, 10.0, 20.0, 60.0), (0.5, 0.75, 1.0, 1.5), (0.0, 0.05, 0.15, 0.3, 0.5)
    ):
        weights = {"dense": 1.0, "bm25": wb, "prior": wp}
        candidates["rrf"][f"k={k:g} bm25={wb:g} prior={wp:g}"] = fused(
            functools.partial(ranking.rrf, k=k, weights=weights)
        )
    for wb, wp in itertools.product((0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5), (0.0, 0.05, 0.1, 0.2)):
        weights = {"dense": 1.0, "bm25": wb, "prior": wp}
        candidates["weighted"][f"bm25={wb:g} prior={wp:g}"] = fused(
            functools.partial(ranking.weighted, weights=weights)
        )

    def subset(fold: set[str]) -> dict[str, list[Case]]:
        return {name: [c for c in cases if c.cluster in fold] for name, cases in sets.items()}

    def score(chosen: Mapping[str, Sequence[Case]], ranker: Ranker) -> tuple[float, float]:
        per = []
        for cases in chosen.values():
            h1, h3, mrr = metrics(cases, ranker)
            per.append(h1 + h3 / 2 + mrr / 4)
        return min(per), sum(per)

    print()
    print(f"fusion constants, 2-fold cross-validation by cluster, {title}")
    print("(fit on half the clusters, score the other half; a setting counts its worst set)")
    for fusion, options in candidates.items():
        held: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in sets}
        chosen = []
        for train, test in ((folds[0], folds[1]), (folds[1], folds[0])):
            fitted = subset(train)
            best = max(options, key=lambda name: score(fitted, options[name]))
            chosen.append(best)
            for name, cases in subset(test).items():
                for i, value in enumerate(metrics(cases, options[best])):
                    held[name][i] += value * len(cases) / len(sets[name])
        best_all = max(options, key=lambda name: score(sets, options[name]))
        worst = min(held, key=lambda name: held[name][0])
        h1, h3, mrr = held[worst]
        label = f" (worst: {worst})" if len(sets) > 1 else ""
        print(
            f"  {fusion:<9} held-out hit@1 {h1:.3f} hit@3 {h3:.3f} MRR {mrr:.3f}{label}"
            f"   (chosen per fold: {chosen[0]} | {chosen[1]}; best on all: {best_all})"
        )


def misses(cases: Sequence[Case], ranker: Ranker) -> None:
    """The questions the hybrid does not answer with a gold source first, with the parts."""
    print()
    for case in cases:
        order = ranker(case)
        if case.gold_at(order) == 1:
            continue
        print(f"[{case.kind}] {case.question}  (gold at {case.gold_at(order)})")
        for i in order[:4]:
            s, p = case.sources[i], case.parts[i]
            mark = "*" if s.title in case.gold else " "
            print(
                f"   {mark} {s.title[:48]:<48} dense {p.dense:.3f} bm25 {p.bm25:.3f} "
                f"rank {p.source_rank}"
            )


async def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    cases = await collect(args.backend, args.max_seq_length)
    print(f"backend: {args.backend}; {time.perf_counter() - started:.0f} s through the pipeline")
    rankers: dict[str, Ranker] = {
        "source order": source_order,
        "BM25 alone": by_part("bm25"),
        "dense alone": by_part("dense"),
        "hybrid: RRF": fused(ranking.rrf),
        "hybrid: weighted sum": fused(ranking.weighted),
    }
    report(cases, rankers)
    if args.misses:
        misses(cases, rankers["hybrid: RRF"])
    if args.grid:
        grid({"scripted": cases}, "scripted keyword replies")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend", choices=("sentence-transformers", "hashing"), default="sentence-transformers"
    )
    parser.add_argument("--no-grid", dest="grid", action="store_false")
    parser.add_argument("--max-seq-length", type=int, default=0, help="0: the model's own")
    parser.add_argument("--misses", action="store_true", help="print the hybrid's misses")
    parser.add_argument(
        "--keyword-modes",
        default="",
        help="also run the set with keyword replies like small models give: 'all' or a "
        f"comma-separated list of {', '.join(MODES)}",
    )
    args = parser.parse_args()
    modes = _modes(parser, args.keyword_modes)
    asyncio.run(run(args))
    if modes:
        keyword_modes(
            args.backend,
            modes,
            args.max_seq_length,
            show_misses=args.misses,
            calibrate=args.grid,
        )


def _modes(parser: argparse.ArgumentParser, text: str) -> list[Mode]:
    if not text:
        return []
    if text == "all":
        return list(MODES)
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODES]
    if unknown:
        parser.error(f"unknown keyword mode(s): {', '.join(unknown)}")
    return [m for m in MODES if m in chosen]


if __name__ == "__main__":
    main()
