"""Tests of the keywords parsed from the model's reply, and of the fallback keywords."""

from __future__ import annotations

import pytest

from bot.pipeline.keywords import parse_keywords

QUESTION = "What is the transformer architecture in deep learning?"
FALLBACK = ["transformer architecture deep learning", "transformer architecture"]

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
    question = "  what is   Rust?  see <https://example.com/x|this> " + ("very long " * 30)
    keywords = parse_keywords("", question)
    assert keywords == ["Rust see very long", "Rust see"]
    assert parse_keywords("", "How do GPT and BERT differ?") == ["GPT BERT"]
    assert parse_keywords("", "How do GPT and BERT differ?", limit=1) == ["GPT BERT"]
    assert parse_keywords("", "what is it?") == ["what is it"]  # nothing but filler
    assert parse_keywords("", "???") == ["???"]
    assert parse_keywords("", "   ") == []


def test_parse_keywords_fallback_leaves_mentions_to_the_adapters() -> None:
    # Removing the bot's mention is the platform adapter's job, so a mention that reaches
    # the pipeline stays in the fallback (only its closing ">" goes with the edge junk).
    assert parse_keywords("", "<@U0AB> what is Rust?") == ["<@U0AB Rust"]
    assert parse_keywords("", "<#C1|general> <!here> Rust?") == [
        "<#C1|general <!here Rust",
        "<#C1|general <!here",
    ]


def test_parse_keywords_limit_and_long_lines() -> None:
    assert parse_keywords("a1\nb2\nc3", QUESTION, limit=1) == ["a1"]
    [long] = parse_keywords("1. " + "word " * 40, QUESTION)
    assert len(long) <= 80 and long.startswith("word word")
    with pytest.raises(ValueError, match="limit"):
        parse_keywords("a", QUESTION, limit=0)
