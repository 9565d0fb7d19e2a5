"""The vector cache: bounded in memory, kept in the store across restarts, never fatal."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bot.agents.embeddings import EmbeddingAgent
from bot.agents.embeddings.cache import VectorCache
from bot.config import EmbeddingSettings
from bot.store.sqlite import SqliteStore

HASHING = EmbeddingSettings(backend="hashing", hashing_dim=64)


def vectors(n: int, dim: int = 4) -> np.ndarray:
    return np.arange(n * dim, dtype=np.float32).reshape(n, dim)


async def test_the_memory_lru_is_bounded_and_keeps_the_recent_ones() -> None:
    cache = VectorCache("m", entries=2)
    cache.add(["a", "b", "c"], vectors(3))
    assert len(cache) == 2
    found = await cache.lookup(["a", "b", "c"])
    assert found[0] is None
    assert found[1] is not None and found[2] is not None
    assert (cache.stats.memory_hits, cache.stats.misses) == (2, 1)


async def test_the_store_survives_a_restart_and_is_bounded(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    store = await SqliteStore.open(db)
    try:
        cache = VectorCache("m", entries=10, store=store.vectors, stored_entries=3)
        cache.add(["a", "b", "c", "d"], vectors(4))
        await cache.flush()
    finally:
        await store.close()
    store = await SqliteStore.open(db)
    try:
        fresh = VectorCache("m", entries=10, store=store.vectors, stored_entries=3)
        found = await fresh.lookup(["a", "b", "c", "d"])
        assert found[0] is None, "the oldest row was evicted"
        assert found[3] is not None
        np.testing.assert_array_equal(found[3], vectors(4)[3])
        assert fresh.stats.store_hits == 3
        # Another model's vectors are never mixed in.
        other = VectorCache("other", entries=10, store=store.vectors, stored_entries=3)
        assert await other.lookup(["d"]) == [None]
    finally:
        await store.close()


async def test_a_broken_store_is_skipped(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "bot.db")
    await store.close()  # every call now raises StoreError
    cache = VectorCache("m", entries=10, store=store.vectors, stored_entries=10)
    assert await cache.lookup(["a"]) == [None]
    cache.add(["a"], vectors(1))
    await cache.flush()
    assert (await cache.lookup(["a"]))[0] is not None


async def test_the_agent_embeds_each_text_once(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "bot.db")
    agent = EmbeddingAgent(HASHING, store=store.vectors)
    try:
        await agent.start()
        first = await agent.embed(["alpha beta", "gamma", "alpha beta"])
        again = await agent.embed(["gamma", "alpha beta"])
        np.testing.assert_array_equal(again, first[[1, 0]])
        stats = agent.cache_stats
        assert (stats.memory_hits, stats.misses) == (2, 3)
        uncached = await agent.embed(["gamma"], use_cache=False)
        np.testing.assert_allclose(uncached[0], first[1])
        assert agent.cache_stats.misses == 3
    finally:
        await agent.close()
    restarted = EmbeddingAgent(dataclasses.replace(HASHING), store=store.vectors)
    try:
        await restarted.start()
        await restarted.embed(["gamma"])
        assert restarted.cache_stats.store_hits == 1
    finally:
        await restarted.close()
        await store.close()
