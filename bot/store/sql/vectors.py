"""The embedding cache's vectors, bounded by a counter of their age."""

from __future__ import annotations

from collections.abc import Sequence

from bot.store.sql.driver import Database, placeholders

# SQLite allows 999 parameters in older builds; a turn has a few dozen texts.
_CHUNK = 500


class SqlVectors:
    """:class:`~bot.store.protocols.VectorStore` on a backend's database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def vectors(self, model: str, hashes: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        async with self._db.transaction("vectors", None, write=False) as conn:
            for start in range(0, len(hashes), _CHUNK):
                chunk = list(hashes[start : start + _CHUNK])
                rows = await conn.fetchall(
                    "SELECT text_hash, vector FROM embedding_cache WHERE model = ? AND "
                    f"text_hash IN ({placeholders(len(chunk))})",
                    model,
                    *chunk,
                )
                found.update((str(r["text_hash"]), bytes(r["vector"])) for r in rows)
        return found

    async def save_vectors(
        self, model: str, vectors: Sequence[tuple[str, bytes]], *, max_entries: int
    ) -> None:
        if not vectors:
            return
        async with self._db.transaction("save_vectors", None, write=True) as conn:
            row = await conn.fetchone("SELECT COALESCE(MAX(stored_at), 0) FROM embedding_cache")
            counter = int(row[0]) if row is not None else 0
            await conn.executemany(
                "INSERT INTO embedding_cache (model, text_hash, vector, stored_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (model, text_hash) "
                "DO UPDATE SET vector = excluded.vector, stored_at = excluded.stored_at",
                [(model, h, v, counter + i) for i, (h, v) in enumerate(vectors, start=1)],
            )
            await conn.execute(
                "DELETE FROM embedding_cache WHERE stored_at <= "
                "(SELECT COALESCE(MAX(stored_at), 0) FROM embedding_cache) - ?",
                max_entries,
            )
