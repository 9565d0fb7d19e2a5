"""Embedding vectors by (model, text hash): in memory, and in the store across restarts.

A follow-up, or another conversation about the same article, fetches mostly the same texts
again; embedding them is most of a turn's compute. :class:`VectorCache` keeps the vectors
of recent texts in a bounded LRU (``[embeddings].cache_entries``) and, when given a store,
in its ``embedding_cache`` table (bounded by ``[embeddings].stored_cache_entries``), so a
restarted bot does not embed them again either.

Keys are the SHA-256 of the text as it is embedded; the model label is part of every
lookup, so vectors of another model (or another ``max_seq_length``) are never mixed in.

Store writes happen in the background, off the turn's critical path; :meth:`flush` waits
for them (the embedding agent calls it before closing). A failing store is logged and
skipped: the cache is an optimisation, never a reason for a turn to fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.agents.embeddings.vectors import FloatArray
from bot.errors import StoreError
from bot.store.protocols import VectorStore

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class CacheStats:
    """Lookups since start-up: found in memory, found in the store, computed."""

    memory_hits: int = 0
    store_hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.memory_hits + self.store_hits + self.misses
        return (self.memory_hits + self.store_hits) / total if total else 0.0


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class VectorCache:
    """A bounded LRU of vectors in front of an optional persistent store."""

    def __init__(
        self,
        model: str,
        *,
        entries: int,
        store: VectorStore | None = None,
        stored_entries: int = 0,
    ) -> None:
        self.model = model
        self._entries = entries
        self._store = store if stored_entries > 0 else None
        self._stored_entries = stored_entries
        self._memory: OrderedDict[str, FloatArray] = OrderedDict()
        self._writes: set[asyncio.Task[None]] = set()
        self.stats = CacheStats()

    def attach_store(self, store: VectorStore) -> None:
        """Use ``store`` from now on (it may open after the cache is built)."""
        if self._stored_entries > 0:
            self._store = store

    async def lookup(self, texts: Sequence[str]) -> list[FloatArray | None]:
        """The cached vector of each text, or None; store hits are kept in memory too."""
        keys = [text_hash(t) for t in texts]
        found: list[FloatArray | None] = [self._get(k) for k in keys]
        self.stats.memory_hits += sum(v is not None for v in found)
        missing = [k for k, v in zip(keys, found, strict=True) if v is None]
        if missing and self._store is not None:
            try:
                stored = await self._store.vectors(self.model, sorted(set(missing)))
            except StoreError:
                _log.warning("the vector store failed; embedding without it", exc_info=True)
                stored = {}
            for i, key in enumerate(keys):
                blob = stored.get(key)
                if found[i] is None and blob is not None:
                    vector = np.frombuffer(blob, dtype=np.float32).copy()
                    self._put(key, vector)
                    found[i] = vector
                    self.stats.store_hits += 1
        self.stats.misses += sum(v is None for v in found)
        return found

    def add(self, texts: Sequence[str], vectors: FloatArray) -> None:
        """Remember freshly computed vectors; the store gets them in the background."""
        rows = []
        for text, vector in zip(texts, vectors, strict=True):
            key = text_hash(text)
            self._put(key, np.array(vector, dtype=np.float32))
            rows.append((key, np.asarray(vector, dtype=np.float32).tobytes()))
        if rows and self._store is not None:
            task = asyncio.get_running_loop().create_task(self._save(rows))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def flush(self) -> None:
        """Wait for the background writes to the store."""
        while self._writes:
            await asyncio.wait(list(self._writes))

    def __len__(self) -> int:
        return len(self._memory)

    def _get(self, key: str) -> FloatArray | None:
        vector = self._memory.get(key)
        if vector is not None:
            self._memory.move_to_end(key)
        return vector

    def _put(self, key: str, vector: FloatArray) -> None:
        if self._entries <= 0:
            return
        self._memory[key] = vector
        self._memory.move_to_end(key)
        while len(self._memory) > self._entries:
            self._memory.popitem(last=False)

    async def _save(self, rows: list[tuple[str, bytes]]) -> None:
        assert self._store is not None
        try:
            await self._store.save_vectors(self.model, rows, max_entries=self._stored_entries)
        except StoreError:
            _log.warning("could not store %d vectors; they stay in memory", len(rows))
