"""What users read that the bot writes itself, rather than the model.

One job: the fixed lines (the hint for an empty question, the failure line, the notes for
a source that is down or found nothing) and the text built from sources without the model
(the ``Sources:`` footer, the answer when the model is unavailable, a source's first
sentence).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.domain import SOURCE_LABELS, Source
from bot.pipeline.text import truncate_words

__all__ = [
    "CITED_HEADING",
    "CONSULTED_HEADING",
    "EMPTY_HINT",
    "FAILURE_LINE",
    "fallback_answer",
    "first_sentence",
    "sources_footer",
]

EMPTY_HINT = "Ask me a research question, for example: “How does attention work in transformers?”"
FAILURE_LINE = "Sorry, something went wrong while researching that. Please try again."
CITED_HEADING = "Sources:"
"""Opens :func:`sources_footer` when the answer cited sources."""
CONSULTED_HEADING = "Sources consulted (none cited directly):"
"""Opens :func:`sources_footer` when the answer cited none of them."""


def _unavailable(source: str) -> str:
    """The note for a source (by its label) that could not be reached this turn."""
    return f"{source} was unavailable for this question."


def _nothing_found(unavailable: Sequence[str]) -> str:
    """The answer when no source gave anything; ``unavailable`` are the sources that failed."""
    if len(unavailable) == len(SOURCE_LABELS):
        return (
            "I could not reach Wikipedia or Hacker News just now, so I have no sources "
            "for this. Please try again in a minute."
        )
    return (
        "I found no Wikipedia articles or Hacker News stories for that. "
        "Try naming the topic more directly (for example “transformer neural network”)."
    )


def sources_footer(sources: Sequence[Source], cited: Sequence[int]) -> str:
    """The list appended to an answer: ``Sources:`` then ``[n] Title — url`` lines.

    Lists the cited sources in number order. If none of ``cited`` is among ``sources``,
    lists every source under a heading saying they were consulted but not cited. No
    sources gives ``""``.
    """
    if not sources:
        return ""
    wanted = set(cited)
    chosen = sorted((s for s in sources if s.n in wanted), key=lambda s: s.n)
    heading = CITED_HEADING
    if not chosen:
        chosen, heading = sorted(sources, key=lambda s: s.n), CONSULTED_HEADING
    lines = [heading, *(f"[{s.n}] {s.title} — {s.url}" for s in chosen)]
    return "\n".join(lines)


def fallback_answer(sources: Sequence[tuple[Source, str]], *, reason: str, limit: int = 3) -> str:
    """The answer when the model is unavailable: the ``reason`` line, then the sources.

    Lists the first ``limit`` sources (they are expected best first) as
    ``[n] Title — url: first sentence.`` lines.
    """
    lines = [reason.strip()]
    if not sources:
        lines.append("No sources were found for this question.")
        return "\n".join(lines)
    for source, text in sources[: max(limit, 0)]:
        line = f"[{source.n}] {source.title} — {source.url}"
        sentence = first_sentence(text)
        if sentence:
            if sentence[-1] not in ".!?…":
                sentence += "."
            line += f": {sentence}"
        lines.append(line)
    return "\n".join(lines)


_ABBREVIATIONS = frozenset(
    {
        *("e.g", "i.e", "etc", "vs", "cf", "al", "approx", "ca", "c", "no", "fig"),
        *("mr", "mrs", "ms", "dr", "st", "mt", "ft", "prof", "jr", "sr", "inc", "ltd", "co"),
        *("corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct"),
        *("nov", "dec"),
    }
)
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)")


def _ends_sentence(text: str, end: int) -> bool:
    before = text[:end].rstrip("\"'”’)]")
    if before.endswith(("!", "?", "…")):
        pass
    elif before.endswith("."):
        word = re.search(r"(\S+)\.$", before)
        token = word.group(1).lower().lstrip("(\"'“‘") if word else ""
        if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
            return False
        if re.fullmatch(r"(?:[a-z]\.)+[a-z]", token):  # "U.S." "D.C."
            return False
    rest = text[end:].lstrip()
    return not rest or not rest[0].islower()


def first_sentence(text: str, *, max_chars: int = 240) -> str:
    """The first sentence of ``text`` (whitespace collapsed), at most ``max_chars`` long.

    Does not stop at common abbreviations ("e.g.", "Dr.", "U.S.") or initials. A sentence
    longer than ``max_chars`` is cut at a word boundary and ends with "…".
    """
    flat = " ".join(text.split())
    if not flat or max_chars <= 0:
        return ""
    sentence = flat
    for match in _SENTENCE_END.finditer(flat):
        if _ends_sentence(flat, match.end()):
            sentence = flat[: match.end()]
            break
    return truncate_words(sentence, max_chars, ellipsis=True)
