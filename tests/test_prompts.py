"""Tests of the pipeline's prompt templates and the rendering of their inputs."""

from __future__ import annotations

import json

from bot.domain import AnalysisReport
from bot.pipeline import citations
from bot.pipeline.layout import SIGNATURES
from bot.pipeline.prompts import (
    ANSWER_EXAMPLE,
    ANSWER_EXAMPLE_SOURCES,
    KEYWORD_EXAMPLES,
    SUMMARY_MARKER,
    SUMMARY_PROMPT,
    SYNTHESIS_MARKER,
    SYNTHESIS_PROMPT,
    TOPIC_MARKER,
    TOPIC_PROMPT,
    describe_report,
    format_history,
    format_sources,
)
from tests.samples import SOURCES


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


def test_format_history_shortens_an_oversized_newest_turn() -> None:
    answer = "A long answer [1]. " * 50
    text = format_history([("old", "old answer"), ("What is it?", answer)], max_chars=120)
    assert len(text) <= 120
    assert text.startswith("User: What is it?\nAssistant: A long answer [1].")
    assert text.endswith("…")
    # The store keeps answer bodies, so what comes back in is used as it is.
    assert format_history([("q", " answer [1]\n")]) == "User: q\nAssistant: answer [1]"


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


def test_the_keyword_prompt_shows_its_format_as_worked_examples_then_the_question() -> None:
    # Small models copy a format written inline ("first", "second") word for word; an
    # exchange they follow. The real question is always the last message.
    messages = TOPIC_PROMPT.format_messages(question="why is mars red?", context="")
    kinds = [m.type for m in messages]
    assert kinds == ["system"] + ["human", "ai"] * len(KEYWORD_EXAMPLES) + ["human"]
    for (context, question, keywords), asked, answered in zip(
        KEYWORD_EXAMPLES, messages[1:-1:2], messages[2:-1:2], strict=True
    ):
        assert str(asked.content).endswith(f"Question: {question}")
        assert context in str(asked.content)
        assert json.loads(str(answered.content)) == {"keywords": list(keywords)}
    assert str(messages[-1].content).endswith("Question: why is mars red?")
    assert '"first"' not in str(messages[0].content)


def test_the_answer_prompt_shows_one_worked_answer_laid_out_as_a_turn_is() -> None:
    inputs = {
        "question": "why is mars red?",
        "summary": "(none)",
        "history": "(none)",
        "sources": format_sources([(SOURCES[0], "Python is a language.")]),
        "analysis": "1 articles",
        "notes": "(none)",
    }
    system, asked, answered, question = SYNTHESIS_PROMPT.format_messages(**inputs)
    assert [m.type for m in (system, asked, answered, question)] == [
        "system",
        "human",
        "ai",
        "human",
    ]
    example, real = str(asked.content), str(question.content)
    # The same sections in the same order: the example is read as a turn like the real one.
    labels = [line for line in real.splitlines() if line.endswith(":")]
    assert labels == [line for line in example.splitlines() if line.endswith(":")]
    assert example.endswith(f"Question: {ANSWER_EXAMPLE[0]}")
    assert real.endswith("Question: why is mars red?")
    # Every sentence of the worked answer cites a source the example shows, by its number.
    assert str(answered.content) == ANSWER_EXAMPLE[1]
    cited = citations.cited_sentences(ANSWER_EXAMPLE[1])
    assert len(cited) == 2
    for n in {n for sentence in cited for n in sentence.numbers}:
        assert 1 <= n <= len(ANSWER_EXAMPLE_SOURCES)
        title, url, _ = ANSWER_EXAMPLE_SOURCES[n - 1]
        assert f"[{n}] {title} (Wikipedia)\n{url}" in example


def test_the_layout_filter_knows_the_statistics_line_by_its_phrases() -> None:
    report = AnalysisReport(
        article_count=3,
        per_source={"wikipedia": 2, "hackernews": 1},
        average_relevance=0.5,
        keyword_frequencies=(("rust", 4),),
        top_articles=(),
    )
    line = describe_report(report)
    assert all(signature in line.casefold() for signature in SIGNATURES)
