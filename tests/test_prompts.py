"""Tests of the pipeline's prompts and the pure helpers around them."""

from __future__ import annotations

import itertools
import random

import pytest

from bot.domain import Source
from bot.pipeline.prompts import (
    SUMMARY_MARKER,
    SUMMARY_PROMPT,
    SYNTHESIS_MARKER,
    SYNTHESIS_PROMPT,
    TOPIC_MARKER,
    TOPIC_PROMPT,
    AnswerFilter,
    fallback_answer,
    first_sentence,
    format_history,
    format_sources,
    parse_keywords,
    sources_footer,
)

QUESTION = "What is the transformer architecture in deep learning?"
FALLBACK = ["transformer architecture deep learning", "transformer architecture"]

# ---------------------------------------------------------------------------------------
# parse_keywords
# ---------------------------------------------------------------------------------------

KEYWORD_CASES: list[tuple[str, str, list[str]]] = [
    (
        "clean",
        "Transformer (deep learning architecture)\nattention mechanism\nBERT",
        ["Transformer (deep learning architecture)", "attention mechanism", "BERT"],
    ),
    (
        "preamble, numbered, quoted",
        'Sure! Here are the keywords:\n1. "Transformer"\n2. "attention"\n3. "BERT"',
        ["Transformer", "attention", "BERT"],
    ),
    (
        "preamble and closing remark",
        "Here are some search keywords for your question:\n\n1. Transformer (deep learning)"
        "\n2. Attention mechanism\n3. Neural networks\n\nLet me know if you need more!",
        ["Transformer (deep learning)", "Attention mechanism", "Neural networks"],
    ),
    ("numbered with parenthesis", "1) `transformer`\n2) `attention`", ["transformer", "attention"]),
    (
        "parenthesised numbers",
        "(1) Transformer\n(2) Attention Is All You Need",
        ["Transformer", "Attention Is All You Need"],
    ),
    (
        "dash bullets",
        "- transformer\n- self-attention\n- encoder-decoder",
        ["transformer", "self-attention", "encoder-decoder"],
    ),
    ("star bullets", "* Transformer\n* GPT", ["Transformer", "GPT"]),
    (
        "unicode bullets with explanations",
        "• Transformer – the architecture behind GPT\n• Self-attention",
        ["Transformer", "Self-attention"],
    ),
    (
        "bold with colon explanations",
        "- **Transformer**: the neural network architecture introduced in 2017\n"
        "- **Attention**: the mechanism it is built on",
        ["Transformer", "Attention"],
    ),
    (
        "quoted with dash explanation",
        '"transformer" - the architecture\n"attention" - its key idea',
        ["transformer", "attention"],
    ),
    (
        "comma separated on one line",
        "transformer, attention mechanism, BERT",
        ["transformer", "attention mechanism", "BERT"],
    ),
    (
        "label line",
        "Keywords: transformer, attention mechanism, self-attention",
        ["transformer", "attention mechanism", "self-attention"],
    ),
    (
        "label inside a sentence",
        "The keywords are: transformer, attention",
        ["transformer", "attention"],
    ),
    (
        "labelled lines",
        "Primary topic: Transformer (deep learning)\nSecondary: attention",
        ["Transformer (deep learning)", "attention"],
    ),
    (
        "think block",
        "<think>\nThe user asks about transformers. I'll pick...\n</think>\n\n"
        "Transformer (machine learning)\nAttention",
        ["Transformer (machine learning)", "Attention"],
    ),
    (
        "closing think tag only (the template opened it)",
        "The user wants transformers.\n</think>\nTransformer model",
        ["Transformer model"],
    ),
    (
        "case duplicates",
        "transformer\nTransformer\nTRANSFORMER\nattention",
        ["transformer", "attention"],
    ),
    ("more than the limit", "a1\nb2\nc3\nd4\ne5", ["a1", "b2", "c3"]),
    (
        "code fence and heading",
        "### Keywords\n```\ntransformer\nattention\n```",
        ["transformer", "attention"],
    ),
    (
        "comma inside a title on a multi-line list",
        "Washington, D.C.\nUnited States Capitol",
        ["Washington, D.C.", "United States Capitol"],
    ),
    (
        "colon inside a title",
        "Star Wars: Episode IV\nDarth Vader",
        ["Star Wars: Episode IV", "Darth Vader"],
    ),
    (
        "titles starting like chatter",
        "This American Life\nOK Computer",
        ["This American Life", "OK Computer"],
    ),
    (
        "interjection preamble",
        "Okay, here you go:\nGreat Wall of China",
        ["Great Wall of China"],
    ),
    ("trailing period", "Transformer.\nAttention.", ["Transformer", "Attention"]),
    ("hash numbering", "#1 Transformer\n#2 Attention", ["Transformer", "Attention"]),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [pytest.param(text, expected, id=name) for name, text, expected in KEYWORD_CASES],
)
def test_parse_keywords_survives_messy_output(text: str, expected: list[str]) -> None:
    assert parse_keywords(text, QUESTION) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\n  ",
        "<think>\nThe user asks about transformers, so I",  # unclosed: all reasoning
        "I think the best keywords are transformer and attention.",  # prose only
        "Sure! Here are the keywords:",
        "1. \n2. ",
    ],
)
def test_parse_keywords_falls_back_to_the_questions_content_words(text: str) -> None:
    assert parse_keywords(text, QUESTION) == FALLBACK


def test_parse_keywords_fallback_is_cleaned_and_short() -> None:
    question = "  <@123> <@U0AB|bob> what is   Rust?  see <https://example.com/x|this> " + (
        "very long " * 30
    )
    keywords = parse_keywords("", question)
    assert keywords == ["Rust see very long", "Rust see"]
    assert parse_keywords("", "How do GPT and BERT differ?") == ["GPT BERT"]
    assert parse_keywords("", "How do GPT and BERT differ?", limit=1) == ["GPT BERT"]
    assert parse_keywords("", "what is it?") == ["what is it"]  # nothing but filler
    assert parse_keywords("", "???") == ["???"]
    assert parse_keywords("", "   ") == []


def test_parse_keywords_limit_and_long_lines() -> None:
    assert parse_keywords("a1\nb2\nc3", QUESTION, limit=1) == ["a1"]
    [long] = parse_keywords("1. " + "word " * 40, QUESTION)
    assert len(long) <= 80 and long.startswith("word word")
    with pytest.raises(ValueError, match="limit"):
        parse_keywords("a", QUESTION, limit=0)


# ---------------------------------------------------------------------------------------
# AnswerFilter
# ---------------------------------------------------------------------------------------


def run_filter(chunks: list[str], valid: set[int]) -> tuple[str, list[int]]:
    answer_filter = AnswerFilter(valid)
    out = "".join(answer_filter.feed(chunk) for chunk in chunks) + answer_filter.flush()
    return out, answer_filter.cited


FILTER_CASES: list[tuple[str, str, list[int]]] = [
    (
        "Python is a language [1]. It was made by Guido [9].",
        "Python is a language [1]. It was made by Guido.",
        [1],
    ),
    (
        "Word [9]. Next [2][1] and [1, 9] and [8, 9] and [1-3].",
        "Word. Next [2][1] and [1] and and [1, 2].",
        [2, 1],
    ),
    (
        "<think>I should cite [1]</think>\n\nAnswer [2] here [3] end",
        "Answer [2] here end",
        [2],
    ),
    ("[9] Start of line\n[9] Another [1]", "Start of line\nAnother [1]", [1]),
    (
        "a < b and <thin is no tag, arr[x] and [2019] stay",
        "a < b and <thin is no tag, arr[x] and [2019] stay",
        [],
    ),
    ("Grouped [ 2 ; 1 ] here [9] , and [7]here", "Grouped [2, 1] here, and here", [2, 1]),
    ("Before <THINK>hidden</Think> after [2]", "Before after [2]", [2]),
    ("done</think>  Answer [1]", "doneAnswer [1]", [1]),
    ("open [1", "open [1", []),
    ("unclosed <think> hidden [1] forever", "unclosed ", []),
]


@pytest.mark.parametrize(("text", "expected", "cited"), FILTER_CASES)
def test_answer_filter_one_shot(text: str, expected: str, cited: list[int]) -> None:
    assert run_filter([text], {1, 2}) == (expected, cited)


def splits(text: str, cuts: tuple[int, ...]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize(("text", "expected", "cited"), FILTER_CASES)
def test_answer_filter_any_chunking_gives_the_same_result(
    text: str, expected: str, cited: list[int]
) -> None:
    want = (expected, cited)
    assert run_filter(list(text), {1, 2}) == want
    positions = range(1, len(text))
    for cuts in itertools.chain(
        itertools.combinations(positions, 1), itertools.combinations(positions, 2)
    ):
        assert run_filter(splits(text, cuts), {1, 2}) == want, cuts
    rng = random.Random(text)
    for _ in range(200):
        k = rng.randint(0, min(8, len(text) - 1))
        cuts = tuple(sorted(rng.sample(positions, k)))
        assert run_filter(splits(text, cuts), {1, 2}) == want, cuts


def test_answer_filter_holds_back_only_the_ambiguous_tail() -> None:
    answer_filter = AnswerFilter({1, 2})
    assert answer_filter.feed("Plain text streams at once.") == "Plain text streams at once."
    assert answer_filter.feed(" Then a citation [") == " Then a citation"
    assert answer_filter.feed("1") == ""
    assert answer_filter.feed("]") == " [1]"
    assert answer_filter.feed(" and <th") == " and"
    assert answer_filter.feed("ink>secret</th") == ""
    assert answer_filter.feed("ink> more") == " more"
    assert answer_filter.flush() == ""
    assert answer_filter.cited == [1]


def test_answer_filter_split_invalid_citation_tidies_space() -> None:
    assert run_filter(["The claim [", "9", "]", "."], {1}) == ("The claim.", [])
    assert run_filter(["The claim [", "9] and more"], {1}) == ("The claim and more", [])


def test_answer_filter_fuzz_chunking_matches_one_shot() -> None:
    rng = random.Random(7)
    alphabet = ["a", "b", " ", "\n", ".", "[", "]", "1", "9", ",", "-", "<think>", "</think>", "<"]
    for _ in range(40):
        text = "".join(rng.choice(alphabet) for _ in range(120))
        want = run_filter([text], {1})
        cuts = tuple(sorted(rng.sample(range(1, len(text)), rng.randint(1, 30))))
        assert run_filter(splits(text, cuts), {1}) == want, (text, cuts)


def test_answer_filter_lag_is_bounded_without_think_blocks() -> None:
    answer_filter = AnswerFilter({1})
    text = "word [1, 2, 3" + " " * 10 + "and more text " * 5
    fed, shown = "", ""
    for ch in text:
        fed += ch
        shown += answer_filter.feed(ch)
        assert len(fed) - len(shown) <= 41
    assert shown + answer_filter.flush() == text


def test_answer_filter_cited_order_and_lifecycle() -> None:
    answer_filter = AnswerFilter([1, 2, 3])
    answer_filter.feed("b [3] a [1] b [3] c [2, 3]")
    assert answer_filter.cited == [3, 1, 2]
    answer_filter.flush()
    assert answer_filter.flush() == ""
    with pytest.raises(RuntimeError):
        answer_filter.feed("late")


# ---------------------------------------------------------------------------------------
# Footer, fallback, history, sources, first sentence
# ---------------------------------------------------------------------------------------

SOURCES = [
    Source(
        1, "Python (programming language)", "https://en.wikipedia.org/wiki/Python", "wikipedia", 0.9
    ),
    Source(2, "Python 3.13 released", "https://news.ycombinator.com/item?id=1", "hackernews", 0.7),
    Source(3, "Guido van Rossum", "https://en.wikipedia.org/wiki/Guido", "wikipedia", 0.5),
]


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


def test_format_history_keeps_newest_within_budget() -> None:
    turns = [(f"question {i}", f"answer {i} " + "x" * 50) for i in range(10)]
    text = format_history(turns, max_chars=300)
    assert len(text) <= 300
    assert text.endswith("answer 9 " + "x" * 50)
    assert "question 0" not in text
    blocks = text.split("\n")
    assert blocks[0].startswith("User: question ")
    assert format_history(turns[:2]) == (
        "User: question 0\nAssistant: answer 0 " + "x" * 50 + "\n"
        "User: question 1\nAssistant: answer 1 " + "x" * 50
    )
    assert format_history([]) == ""


def test_format_history_shortens_an_oversized_newest_turn_and_drops_footers() -> None:
    answer = "A long answer [1]. " * 50 + "\n\nSources:\n[1] T — https://x"
    text = format_history([("old", "old answer"), ("What is it?", answer)], max_chars=120)
    assert len(text) <= 120
    assert text.startswith("User: What is it?\nAssistant: A long answer [1].")
    assert text.endswith("…")
    footer_free = format_history([("q", "answer [1]\n\nSources:\n[1] T — https://x")])
    assert footer_free == "User: q\nAssistant: answer [1]"


def test_format_sources() -> None:
    text = format_sources(
        [(SOURCES[0], "Python is a language.\n\n\nIt is popular."), (SOURCES[1], "  ")]
    )
    assert text == (
        "[1] Python (programming language) (Wikipedia)\n"
        "https://en.wikipedia.org/wiki/Python\n"
        "Python is a language.\nIt is popular.\n\n"
        "[2] Python 3.13 released (Hacker News)\n"
        "https://news.ycombinator.com/item?id=1"
    )
    assert "no sources" in format_sources([])


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


# ---------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------


def test_templates_have_the_agreed_variables_and_markers() -> None:
    assert set(TOPIC_PROMPT.input_variables) == {"question", "context"}
    assert set(SYNTHESIS_PROMPT.input_variables) == {
        "question",
        "summary",
        "history",
        "sources",
        "analysis",
        "notes",
    }
    assert set(SUMMARY_PROMPT.input_variables) == {"summary", "transcript"}
    for template, marker in [
        (TOPIC_PROMPT, TOPIC_MARKER),
        (SYNTHESIS_PROMPT, SYNTHESIS_MARKER),
        (SUMMARY_PROMPT, SUMMARY_MARKER),
    ]:
        system = template.format_messages(**dict.fromkeys(template.input_variables, ""))[0]
        assert system.type == "system"
        assert str(system.content).startswith(marker)


def test_templates_do_not_interpret_braces_in_values() -> None:
    messages = TOPIC_PROMPT.format_messages(question="What is {x} in f'{y}'?", context="")
    assert messages[-1].content.endswith("Question: What is {x} in f'{y}'?")  # type: ignore[union-attr]
