"""Plain-text pieces shared by the pipeline's pure modules.

One job: the primitives that several of :mod:`bot.pipeline.prompts`,
:mod:`bot.pipeline.keywords`, :mod:`bot.pipeline.answer_filter` and
:mod:`bot.pipeline.wording` need and none of them owns: cutting text at a word boundary,
and the patterns of the ``<think>`` tags that reasoning models wrap their reasoning in.
"""

from __future__ import annotations

import re

__all__ = [
    "THINK_BLOCK",
    "THINK_CLOSE",
    "THINK_OPEN",
    "THINK_TAG",
    "THINK_TAGS",
    "truncate_words",
]

THINK_TAGS = ("<think>", "</think>")
"""The opening and the closing tag, as written (matched case-insensitively)."""
THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
THINK_TAG = re.compile(r"<(/?)think>", re.IGNORECASE)
"""Either tag; group 1 is ``"/"`` for the closing one, ``""`` for the opening one."""
THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
"""A whole (closed) block, tags included."""


def truncate_words(text: str, max_chars: int, *, ellipsis: bool) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a word boundary when possible."""
    if len(text) <= max_chars:
        return text
    room = max_chars - 1 if ellipsis else max_chars
    if room <= 0:
        return "…"[:max_chars]
    cut = text[:room]
    space = cut.rfind(" ")
    if not text[room].isspace() and space >= room // 2:
        cut = cut[:space]
    cut = cut.rstrip(" ,;:-–—")
    return cut + "…" if ellipsis else cut
