"""How a turn's numbered sources are written down: JSON, the same in every backend.

Turns stored before a field existed still decode (``parts``, ``revision``, ``permalink``
have defaults); anything else that is not ours raises :class:`~bot.errors.StoreError`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from bot.contract import ScoreParts, Source
from bot.errors import StoreError


def encode_source(source: Source) -> dict[str, Any]:
    """One source as plain JSON data."""
    return dataclasses.asdict(source)


def encode_sources(sources: Iterable[Source]) -> str:
    return json.dumps([encode_source(s) for s in sources], ensure_ascii=False)


def decode_source(item: Mapping[str, Any]) -> Source:
    """One source back from :func:`encode_source`.

    Raises:
        ValueError, TypeError, KeyError, AttributeError: ``item`` is not such a source.
    """
    return Source(
        n=int(item["n"]),
        title=str(item["title"]),
        url=str(item["url"]),
        source=str(item["source"]),
        score=float(item["score"]),
        cited=bool(item.get("cited", False)),
        parts=decode_parts(item.get("parts")),
        revision=str(item.get("revision", "")),
        permalink=str(item.get("permalink", "")),
    )


def decode_sources(text: str) -> tuple[Source, ...]:
    """Decode what :func:`encode_sources` wrote; raises StoreError when it is not ours."""
    try:
        return tuple(decode_source(item) for item in json.loads(text))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StoreError(f"the stored sources are not valid: {exc}") from exc


def decode_parts(value: object) -> ScoreParts | None:
    """Score parts as stored; turns saved before they existed have none."""
    if not isinstance(value, dict):
        return None
    return ScoreParts(
        dense=float(value["dense"]),
        bm25=float(value["bm25"]),
        prior=float(value["prior"]),
        source_rank=int(value["source_rank"]),
    )
