"""bench/real_model.py's replay: a real model's recorded keyword replies, no model needed.

The bench itself is run by hand against a real model; its replay mode is what makes a
change to the search plan measurable on real keywords in seconds, so it must not rot.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "bench" / "data" / "smollm2-135m-keywords-inline-format.json"


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    """bench/real_model.py with ``args``, the hashing backend and no model download."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "real_model.py"), *args, "--backend", "hashing"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )


def test_replayed_keyword_replies_reach_the_pipeline_as_recorded(tmp_path: Path) -> None:
    saved = tmp_path / "replies.json"
    done = _bench("--replay-keywords", str(RECORDED), "--save-keywords", str(saved), "--turns", "6")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "; 6 turns" in done.stdout and "hit@1" in done.stdout
    assert "model citations" in done.stdout  # with how many of them are weak
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    replayed = json.loads(saved.read_text(encoding="utf-8"))
    assert len(replayed) == 6
    # The pipeline saw each reply exactly as the model wrote it, copied format and all.
    assert all(replayed[question] == recorded[question] for question in replayed)
    assert '{"keywords": ["first", "second"]}' in replayed.values()


def test_a_model_server_that_fails_the_start_up_check_stops_the_bench() -> None:
    # Without it, every turn would be the sources-only fallback, measured as the model's.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the bench starts: nobody listens
    done = _bench(
        "--base-url", f"http://127.0.0.1:{port}/v1", "--provider", "openai", "--turns", "1"
    )
    assert done.returncode != 0
    assert "the model server is not ready" in done.stderr
    assert f"No OpenAI-compatible server is reachable at http://127.0.0.1:{port}/v1" in done.stderr
    assert "hit@1" not in done.stdout
