"""Tests of the text the bot writes itself: the sources footer, the fallback answer."""

from __future__ import annotations

import pytest

from bot.domain import Source
from bot.pipeline.wording import fallback_answer, first_sentence, sources_footer
from tests.samples import SOURCES


def test_sources_footer_lists_cited_in_number_order() -> None:
    assert sources_footer(SOURCES, [3, 1]) == (
        "Sources:\n"
        "[1] Python (programming language) — https://en.wikipedia.org/wiki/Python\n"
        "[3] Guido van Rossum — https://en.wikipedia.org/wiki/Guido"
    )


def test_sources_footer_without_citations_lists_all_as_consulted() -> None:
    footer = sources_footer(SOURCES, [])
    first, *rest = footer.splitlines()
    assert "consulted" in first.lower()
    assert [line[:3] for line in rest] == ["[1]", "[2]", "[3]"]
    assert sources_footer(SOURCES, [7]) == footer
    assert sources_footer([], [1]) == ""


def test_fallback_answer() -> None:
    items = [
        (SOURCES[0], "Python is a programming language. It is popular."),
        (SOURCES[1], ""),
        (SOURCES[2], "Guido van Rossum is a Dutch programmer"),
        (Source(4, "Extra", "https://x", "wikipedia", 0.1), "Not shown."),
    ]
    answer = fallback_answer(items, reason="The language model is unavailable right now.")
    assert answer.splitlines() == [
        "The language model is unavailable right now.",
        "[1] Python (programming language) — https://en.wikipedia.org/wiki/Python: "
        "Python is a programming language.",
        "[2] Python 3.13 released — https://news.ycombinator.com/item?id=1",
        "[3] Guido van Rossum — https://en.wikipedia.org/wiki/Guido: "
        "Guido van Rossum is a Dutch programmer.",
    ]
    empty = fallback_answer([], reason="Down.")
    assert empty.startswith("Down.\n") and "No sources" in empty


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Python is a language. It is popular.", "Python is a language."),
        ("  Spread\n over   lines!  Next one.", "Spread over lines!"),
        ("It is used e.g. in science. More.", "It is used e.g. in science."),
        (
            "J. R. R. Tolkien was an English writer. He wrote.",
            "J. R. R. Tolkien was an English writer.",
        ),
        ("The U.S. Army is big. Yes.", "The U.S. Army is big."),
        ('He said "stop." Then left.', 'He said "stop."'),
        ("Version 3.12 is out now", "Version 3.12 is out now"),
        ("Dr. Who is a show. It runs.", "Dr. Who is a show."),
        ("", ""),
    ],
)
def test_first_sentence(text: str, expected: str) -> None:
    assert first_sentence(text) == expected


def test_first_sentence_truncates_long_sentences() -> None:
    sentence = first_sentence("word " * 100, max_chars=30)
    assert len(sentence) <= 30 and sentence.endswith("…")
    assert sentence == "word word word word word word…"
