"""Tests of the text the bot writes itself: the fallback answer, first sentences."""

from __future__ import annotations

import pytest

from bot.contract import Source
from bot.pipeline.wording import FALLBACK_LEAD, fallback_answer, first_sentence, split_sentences
from tests.samples import SOURCES


def test_fallback_answer() -> None:
    items = [
        (SOURCES[0], "Python is a programming language. It is popular."),
        (SOURCES[1], ""),
        (SOURCES[2], "Guido van Rossum is a Dutch programmer"),
        (Source(4, "Extra", "https://x", "wikipedia", 0.1), "Not shown."),
    ]
    answer = fallback_answer(items[:3])
    # The links are in the reply's Sources list, which the adapter renders.
    assert answer.splitlines() == [
        FALLBACK_LEAD,
        "[1] Python (programming language): Python is a programming language.",
        "[2] Python 3.13 released",
        "[3] Guido van Rossum: Guido van Rossum is a Dutch programmer.",
    ]
    assert "ollama" not in answer.lower() and "http" not in answer


def test_fallback_answer_quotes_the_sentence_picked_for_each_source() -> None:
    items = [
        (SOURCES[0], "Python is a programming language. Guido van Rossum made it in 1991."),
        (SOURCES[2], "Guido van Rossum is a Dutch programmer"),
    ]
    picked = {1: "Guido van Rossum made it in 1991.", 3: "word " * 100}
    lines = fallback_answer(items, quotes=picked).splitlines()
    assert lines[1] == "[1] Python (programming language): Guido van Rossum made it in 1991."
    # A quote is bounded like a first sentence.
    assert lines[2].startswith("[3] Guido van Rossum: word word") and lines[2].endswith("…")
    assert len(lines[2]) < 280
    # A source the picker left out is quoted by its first sentence.
    assert fallback_answer(items, quotes={}).splitlines()[1].endswith("programming language.")


def test_split_sentences() -> None:
    text = "It is used e.g. in science.  Dr. Who is a show!\nThe U.S. Army is big. and more"
    assert split_sentences(text) == [
        "It is used e.g. in science.",
        "Dr. Who is a show!",
        "The U.S. Army is big. and more",
    ]
    assert split_sentences("No end here") == ["No end here"]
    assert split_sentences("  ") == []


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
