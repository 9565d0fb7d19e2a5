"""What users read that the bot writes itself, rather than the model.

One job: the fixed lines (the hint for an empty question, the failure line, the user
lines of notices) and the text built from sources without the model (the answer when the
model is unavailable, a source's first sentence). Every line here is safe in a public
channel: no hosts, config keys or commands; those go in a notice's operator hint. How the
Sources list and notices look is each adapter's business (:mod:`bot.adapters.render`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence

from bot.contract import Source
from bot.domain import SOURCE_LABELS
from bot.pipeline.text import truncate_words

__all__ = [
    "ANSWER_BROKEN",
    "ANSWER_CUT",
    "ANSWER_ECHOED",
    "ANSWER_LONG",
    "ANSWER_SLOW",
    "ASKED_AGAIN",
    "EMPTY_HINT",
    "FAILURE_LINE",
    "FALLBACK_LEAD",
    "GIVEN_UP",
    "LLM_DOWN",
    "LLM_SLOW",
    "NOTHING_WRITTEN",
    "NOT_RANKED",
    "NOT_RESTORED",
    "NOT_SAVED",
    "TURN_SLOW",
    "UNCITED",
    "UNCITED_ATTRIBUTED",
    "UNDELIVERED",
    "UNMATCHED",
    "fallback_answer",
    "first_sentence",
    "nothing_found",
    "question_cut_line",
    "split_sentences",
    "unavailable_line",
]

EMPTY_HINT = "Ask me a research question, for example: “How does attention work in transformers?”"
FAILURE_LINE = "Sorry, something went wrong while researching that. Please try again."
FALLBACK_LEAD = (
    "I could not write an answer just now because the language model is unavailable. "
    "Here is what the most relevant sources say:"
)
NOTHING_WRITTEN = (
    "The language model wrote no answer this time. Here is what the most relevant sources say:"
)
# The longest sentence quoted from a source in an answer the bot writes itself.
QUOTE_CHARS = 240
ASKED_AGAIN = "I could not match this answer to its sources. A second answer, checked against them:"
UNMATCHED = "I could not match this answer to its sources. Here is what the most relevant ones say:"
# Notices: each a user line (safe in a public channel) for a bot.contract.Notice.
LLM_DOWN = "The language model is unavailable right now, so this lists sources only."
ANSWER_CUT = "The answer was cut off because the language model stopped responding."
ANSWER_BROKEN = "Something went wrong while I was writing this answer; it may be incomplete."
LLM_SLOW = "The language model was too slow to answer, so this lists sources only."
ANSWER_SLOW = "The answer was cut off because the language model was taking too long."
ANSWER_LONG = "The answer was cut off at its maximum length."
ANSWER_ECHOED = "The language model repeated its instructions; I left them out of this answer."
UNCITED = "The language model did not say which source supports what."
UNCITED_ATTRIBUTED = (
    "The language model did not cite its sources; the citations here were added by the bot."
)
TURN_SLOW = "This took too long, so I stopped; the answer may be incomplete."
GIVEN_UP = (
    "Sorry, I could not answer this question: trying to answer it made me fail twice, so I "
    "have set it aside. Asking it in other words may work."
)
NOT_SAVED = "I could not save this exchange; it will not be remembered."
UNDELIVERED = (
    "Sorry, I could not post my answer to your question here in time. Please ask again in a "
    "little while."
)
NOT_RANKED = (
    "I could not rank the sources by meaning this time, only by their words and the search order."
)
NOT_RESTORED = "I could not restore our earlier conversation for this answer."


def unavailable_line(source: str) -> str:
    """The note for a source (by its label) that could not be reached this turn."""
    return f"{source} was unavailable for this question."


def nothing_found(unavailable: Sequence[str]) -> str:
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


def question_cut_line(length: int, limit: int) -> str:
    """The notice for a question cut to ``[chat].max_question_chars``."""
    return f"Your message was {length:,} characters long; I used only its first {limit:,}."


def fallback_answer(
    sources: Sequence[tuple[Source, str]],
    lead: str = FALLBACK_LEAD,
    quotes: Mapping[int, str] | None = None,
) -> str:
    """The answer without the model's: ``lead`` (by default, that it is unavailable), then
    the sources.

    Lists ``sources`` (the caller picks the best few) as ``[n] Title: sentence.`` lines,
    the sentence being the source's entry in ``quotes`` (by number: the one that answers
    the question best) or else its first; their links are in the reply's Sources list.
    """
    lines = [lead]
    for source, text in sources:
        line = f"[{source.n}] {source.title}"
        quote = (quotes or {}).get(source.n)
        sentence = (
            truncate_words(" ".join(quote.split()), QUOTE_CHARS, ellipsis=True)
            if quote
            else first_sentence(text)
        )
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


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, whitespace collapsed.

    Does not cut at common abbreviations ("e.g.", "Dr.", "U.S.") or initials; text after
    the last sentence's end is a sentence too.
    """
    return list(_sentences(text))


def first_sentence(text: str, *, max_chars: int = QUOTE_CHARS) -> str:
    """The first sentence of ``text`` (whitespace collapsed), at most ``max_chars`` long.

    Sentences are cut as :func:`split_sentences` cuts them. A sentence longer than
    ``max_chars`` is cut at a word boundary and ends with "…".
    """
    if max_chars <= 0:
        return ""
    # The generator stops at the first sentence: the rest of the text is never scanned.
    first = next(_sentences(text), "")
    return truncate_words(first, max_chars, ellipsis=True)


def _sentences(text: str) -> Iterator[str]:
    flat = " ".join(text.split())
    start = 0
    for match in _SENTENCE_END.finditer(flat):
        if _ends_sentence(flat, match.end()):
            # Never empty: the match itself is a mark.
            yield flat[start : match.end()].strip()
            start = match.end()
    if flat[start:].strip():
        yield flat[start:].strip()
