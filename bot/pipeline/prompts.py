"""The prompts of the answer pipeline, and the rendering of their inputs.

One job: the three prompt templates (:data:`TOPIC_PROMPT`, :data:`SYNTHESIS_PROMPT`,
:data:`SUMMARY_PROMPT`) and the functions that render their variables
(:func:`format_history`, :func:`format_sources`, :func:`prompt_text`,
:func:`describe_report`). Nothing here does I/O: the orchestrator
composes ``TOPIC_PROMPT | llm`` and ``SYNTHESIS_PROMPT | llm`` itself.

The ``*_MARKER`` phrases open the system messages. ``tests/fakes/ollama.py`` recognises
each prompt by its marker to pick a canned behaviour, so change them together.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from langchain_core.prompts import ChatPromptTemplate

from bot.contract import Source
from bot.domain import AnalysisReport, Article, source_label
from bot.pipeline.text import truncate_words

__all__ = [
    "AGAIN",
    "ANSWER_EXAMPLE",
    "ANSWER_EXAMPLE_SHOWN",
    "ANSWER_EXAMPLE_SOURCES",
    "ANSWER_EXAMPLE_STATISTICS",
    "KEYWORD_EXAMPLES",
    "KEYWORD_SCHEMA",
    "SUMMARY_MARKER",
    "SUMMARY_PROMPT",
    "SYNTHESIS_MARKER",
    "SYNTHESIS_PROMPT",
    "TOPIC_MARKER",
    "TOPIC_PROMPT",
    "describe_report",
    "format_history",
    "format_sources",
    "prompt_text",
]

# ---------------------------------------------------------------------------------------
# Prompt templates
# ---------------------------------------------------------------------------------------

# The answer's length the prompt asks for unless told otherwise ([chat].answer_words).
DEFAULT_ANSWER_WORDS = 150

TOPIC_MARKER = "You choose search keywords for a research assistant."
SYNTHESIS_MARKER = "You are a research assistant that answers from numbered sources."
SUMMARY_MARKER = "You keep the running summary of a conversation."

_TOPIC_HUMAN = (
    "Recent conversation (empty if this is the first question):\n{context}\n\nQuestion: {question}"
)

# Worked examples, sent as earlier turns of the chat: small models copy a format shown
# inline ('{"keywords": ["first", "second"]}' came back word for word in 16 of 67 turns of
# SmolLM2-135M) but follow an exchange. A reply that repeats an example's keywords for an
# unrelated question is dropped (bot.pipeline.search_plan).
KEYWORD_EXAMPLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "how tall is the eiffel tower?", ("Eiffel Tower", "height")),
    (
        "User: who designed the eiffel tower?\n"
        "Assistant: Gustave Eiffel's engineering company designed it [1].",
        "when was it finished?",
        ("Eiffel Tower", "construction"),
    ),
)


def _literal(text: str) -> str:
    """``text`` as it must appear in a template: its braces are not variables."""
    return text.replace("{", "{{").replace("}", "}}")


def _keyword_example(context: str, question: str, keywords: Sequence[str]) -> list[tuple[str, str]]:
    asked = _TOPIC_HUMAN.format(context=context, question=question)
    return [("human", _literal(asked)), ("ai", _literal(json.dumps({"keywords": list(keywords)})))]


TOPIC_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            TOPIC_MARKER + "\n"
            "Reply with a JSON object holding 1 to 3 short search keywords or phrases for "
            "the user's question, most important first, and nothing else.\n"
            "The first keyword is the primary topic, written like the title of a Wikipedia "
            "article.\n"
            "If the question is a follow-up, use the recent conversation to work out what it "
            "refers to and name that thing explicitly.",
        ),
        *(turn for example in KEYWORD_EXAMPLES for turn in _keyword_example(*example)),
        ("human", _TOPIC_HUMAN),
    ]
)
"""Keywords for the sources. Variables: ``question``, ``context`` (may be empty)."""

KEYWORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "keywords": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}
    },
    "required": ["keywords"],
}
"""The shape :data:`TOPIC_PROMPT`'s reply is asked for (Ollama enforces it by a grammar)."""


def format_sources(items: Sequence[tuple[Source, str]]) -> str:
    """Render numbered sources for :data:`SYNTHESIS_PROMPT`.

    Each ``(source, text)`` becomes ``[n] Title (Wikipedia)``, the URL, then the text;
    blocks are separated by a blank line. No items gives a line saying so.
    """
    if not items:
        return "(no sources were found)"
    blocks = []
    for source, text in items:
        body = re.sub(r"\n\s*\n+", "\n", text.strip())
        lines = [f"[{source.n}] {source.title} ({source_label(source.source)})", source.url]
        if body:
            lines.append(body)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def describe_report(report: AnalysisReport | None) -> str:
    if report is None:
        return "(not available)"
    counts = ", ".join(f"{name}: {n}" for name, n in report.per_source.items())
    words = ", ".join(f"{w} ({n})" for w, n in report.keyword_frequencies[:8])
    return (
        f"{report.article_count} articles ({counts}); average keyword relevance "
        f"{report.average_relevance:.2f}; frequent terms: {words or 'none'}"
    )


_SYNTHESIS_HUMAN = (
    "Conversation summary:\n{summary}\n\n"
    "Recent conversation:\n{history}\n\n"
    "Sources:\n{sources}\n\n"
    "Source statistics:\n{analysis}\n\n"
    "Notes:\n{notes}\n\n"
    "Question: {question}"
)

# A worked answer, sent as an earlier turn of the chat like the keyword examples: shown
# one, SmolLM2-135M wrote sentences in its sources' words (which the attribution cites)
# in 59 of 67 turns, against 40 with the instructions alone (README, bench/real_model.py).
ANSWER_EXAMPLE_SOURCES: tuple[tuple[str, str, str], ...] = (
    (
        "Eiffel Tower",
        "https://en.wikipedia.org/wiki/Eiffel_Tower",
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
        "France. It is named after the engineer Gustave Eiffel, whose company designed and "
        "built the tower from 1887 to 1889. It is 330 metres tall.",
    ),
    (
        "Champ de Mars",
        "https://en.wikipedia.org/wiki/Champ_de_Mars",
        "The Champ de Mars is a large public green space in Paris, France, located in the "
        "seventh arrondissement.",
    ),
)
ANSWER_EXAMPLE_STATISTICS = describe_report(
    AnalysisReport(2, {"wikipedia": 2}, 0.5, (("tower", 4), ("paris", 2)), ())
)
ANSWER_EXAMPLE = (
    "how tall is the eiffel tower and when was it built?",
    "The Eiffel Tower is 330 metres tall [1]. Gustave Eiffel's company built it from 1887 "
    "to 1889 [1].",
)
"""The worked answer's question and answer; its sources and statistics are above."""


ANSWER_EXAMPLE_SHOWN = format_sources(
    [
        (Source(n, title, url, "wikipedia", 1.0), text)
        for n, (title, url, text) in enumerate(ANSWER_EXAMPLE_SOURCES, start=1)
    ]
)
"""The worked answer's sources, rendered once as a turn's are (:func:`format_sources`)."""


def _answer_example() -> list[tuple[str, str]]:
    question, answer = ANSWER_EXAMPLE
    asked = _SYNTHESIS_HUMAN.format(
        summary="(none)",
        history="(none)",
        sources=ANSWER_EXAMPLE_SHOWN,
        analysis=ANSWER_EXAMPLE_STATISTICS,
        notes="(none)",
        question=question,
    )
    return [("human", _literal(asked)), ("ai", _literal(answer))]


SYNTHESIS_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            SYNTHESIS_MARKER + "\n"
            "Answer the user's question briefly and accurately, in at most {words} words: a "
            "short paragraph or a few bullet points, using ONLY the numbered sources.\n"
            "Cite a source right after the claim it supports, as [1] or [2]; cite only "
            "numbers that appear in the sources.\n"
            "If the sources do not cover the question, or cover only part of it, say so "
            "plainly and answer only the part they cover; never guess.\n"
            "Do not end with a list of sources or links: the bot appends one.\n"
            "Use the conversation summary and the recent conversation only to understand the "
            "question, never as evidence. If the notes affect the answer (a source was "
            "unavailable, the question was shortened), say so in one short sentence.\n"
            "Any section may be empty.",
        ),
        *_answer_example(),
        ("human", _SYNTHESIS_HUMAN),
    ]
).partial(words=str(DEFAULT_ANSWER_WORDS))
"""The answer. Variables: ``question``, ``summary``, ``history``, ``sources``, ``analysis``,
``notes``; every one but ``question`` may be empty. ``words``, the length asked for, is
``[chat].answer_words`` when given (:data:`DEFAULT_ANSWER_WORDS` otherwise)."""

AGAIN = (
    "Answer in one or two sentences, in the words of the source that answers it, with its "
    "number like [1]."
)
"""Added after the question when no sentence of the first answer matched a source: asked
again, SmolLM2-135M wrote one that does in 5 to 7 of 8 such turns of a screening run,
and in 1 of 9 and 3 of 10 in two live runs of the whole pipeline (README)."""

SUMMARY_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            SUMMARY_MARKER + "\n"
            "Update the previous summary with the new exchanges. Keep it concise (at most "
            "five sentences): the topics the user asked about, the key facts given, and "
            "anything the user said about themselves or their goals. Reply with the "
            "summary only.",
        ),
        (
            "human",
            "Previous summary (may be empty):\n{summary}\n\n"
            "New exchanges:\n{transcript}\n\n"
            "Updated summary:",
        ),
    ]
)
"""The running summary. Variables: ``summary`` (previous, may be empty), ``transcript``."""


# ---------------------------------------------------------------------------------------
# Prompt variables
# ---------------------------------------------------------------------------------------


def _render_turn(question: str, answer: str) -> str:
    return f"User: {question}\nAssistant: {answer}"


def format_history(turns: Sequence[tuple[str, str]], *, max_chars: int = 2000) -> str:
    """Render ``(question, answer)`` pairs, oldest first, as ``User:``/``Assistant:`` lines.

    Keeps the newest turns that fit in ``max_chars`` (the result is never longer). If even
    the newest turn alone does not fit, it is shortened: the answer first, then the
    question. Answers are bodies only: the store never holds a rendered footer.
    """
    if max_chars <= 0:
        return ""
    kept: list[str] = []
    used = 0
    for question, answer in reversed(turns):
        q = question.strip()
        a = answer.strip()
        block = _render_turn(q, a)
        cost = len(block) + (1 if kept else 0)
        if used + cost <= max_chars:
            kept.append(block)
            used += cost
            continue
        if not kept:
            kept.append(_shorten_turn(q, a, max_chars))
        break
    return "\n".join(reversed(kept))


def _shorten_turn(question: str, answer: str, max_chars: int) -> str:
    overhead = len(_render_turn("", ""))
    room = max_chars - overhead
    if room <= 0:
        return _render_turn("", "")[:max_chars]
    q = truncate_words(question, max(room // 3, room - len(answer)), ellipsis=True)
    a = truncate_words(answer, room - len(q), ellipsis=True)
    return _render_turn(q, a)[:max_chars]


def prompt_text(article: Article) -> str:
    """The article as the LLM sees it: a story's standing and date help it weigh the story."""
    facts = []
    if article.points is not None:
        facts.append(f"{article.points} points")
    if article.comments is not None:
        facts.append(f"{article.comments} comments")
    if article.published:
        facts.append(f"posted {article.published[:10]}")
    return f"({', '.join(facts)}) {article.text}" if facts else article.text
