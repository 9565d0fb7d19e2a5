"""Reading the loosely typed fields of a source's JSON: strings, whole numbers, capped text."""

from __future__ import annotations


def str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def cap(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters, with an ellipsis when it was cut."""
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1].rstrip() + "…"
