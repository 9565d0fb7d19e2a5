"""Keyword replies like the ones real small models give, for either fake model server.

Measured with real small models (issue 18): SmolLM2-135M-Instruct answered 16 of 30
keyword prompts with prose ("The answer to this question is: ..."), named an unrelated
topic, or rambled until the token limit cut the reply; a 270M base model replied with
prose every time. :func:`misbehaving` builds a responder that gives one such reply to the
keyword prompt (:data:`~bot.pipeline.prompts.TOPIC_MARKER`) and leaves every other call to
a well-behaved responder, so the rest of the turn is unchanged.

Each mode is the text the model means to write. When the request carries ``format`` and
the fake honours it (the default), the fake's grammar pours that text into the schema
(tests/fakes/grammar.py), as Ollama's grammar does to a real model's tokens: the prose
ends up inside ``{"keywords": ["The answer to this question is: ..."]}``. With
``honours_format = False`` (on either fake) the text arrives as it is. The modes:

* ``well-behaved``: the base responder's own reply;
* ``prose``: an answer-like sentence instead of keywords;
* ``wrong-topic``: a well-formed keyword on an unrelated topic (one of ``wrong_topics``
  that shares no word with the question or the conversation);
* ``empty``: nothing;
* ``numbered``: the right keywords as a numbered list;
* ``quoted``: the right keywords on one line, the whole reply in quotes;
* ``truncated``: a preamble just long enough that the token limit
  (``options.num_predict``, or ``max_tokens``) falls inside the first keyword, so the
  reply ends in half a word.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

from bot.pipeline.prompts import TOPIC_MARKER
from tests.fakes.ollama import Responder, default_responder, derive_keywords, split_tokens
from tests.fakes.scripted import requested_token_limit

__all__ = ["MODES", "WRONG_TOPICS", "Mode", "misbehaving"]

Mode = Literal["well-behaved", "prose", "wrong-topic", "empty", "numbered", "quoted", "truncated"]
MODES: tuple[Mode, ...] = get_args(Mode)

# Topics that exist in the labelled set (tests/data/confusable_pages.json), so a wrong
# one brings real, confusable candidates with it.
WRONG_TOPICS = (
    "Rust (programming language)",
    "Mercury (planet)",
    "Python (programming language)",
    "Amazon River",
)

KeywordSource = Callable[[str, str], Sequence[str]]
"""The right keywords for ``(question, context)``."""

_CONTEXT_LABEL = "Recent conversation (empty if this is the first question):"
_RAMBLE = (
    "Sure! Before I give you the keywords, let me think carefully about what the question "
    "is really asking, because good search keywords depend on understanding the topic, the "
    "context of the conversation so far, and what kind of source would answer it best, so "
    "here is my reasoning in some detail before the list itself, which follows right after "
    "this sentence, and then the keywords:"
)


def misbehaving(
    mode: Mode,
    *,
    base: Responder = default_responder,
    keywords: KeywordSource = derive_keywords,
    wrong_topics: Sequence[str] = WRONG_TOPICS,
) -> Responder:
    """A responder that answers the keyword prompt in ``mode`` and everything else as
    ``base`` does; ``keywords`` gives the right keywords the list-like modes mangle."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")

    def responder(body: dict[str, Any]) -> Any:
        system, user = _prompt_parts(body)
        if TOPIC_MARKER not in system or mode == "well-behaved":
            return base(body)
        question, context = _question(user), _context(user)
        right = list(keywords(question, context))
        if mode == "prose":
            text = f"The answer to this question is: {question.rstrip(' ?')} is a good question."
        elif mode == "wrong-topic":
            text = _unrelated(wrong_topics, f"{question}\n{context}")
        elif mode == "empty":
            text = ""
        elif mode == "numbered":
            text = "\n".join(f"{i}. {k}" for i, k in enumerate(right, 1))
        elif mode == "quoted":
            text = '"' + ", ".join(right) + '"'
        else:
            return _cut_in_first_keyword(body, right)
        return split_tokens(text)

    return responder


def _cut_in_first_keyword(body: dict[str, Any], right: Sequence[str]) -> list[str]:
    """A preamble just long enough that the token limit falls inside the first keyword."""
    budget = requested_token_limit(body)
    preamble = split_tokens(_RAMBLE)
    if budget is not None and budget > 2:
        preamble = preamble[: budget - 2]
    return preamble + split_tokens("\n" + "\n".join(right))


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.casefold())) - {"the", "a", "an", "of", "in"}


def _unrelated(topics: Sequence[str], text: str) -> str:
    used = _words(text)
    for topic in topics:
        if not _words(topic) & used:
            return topic
    return topics[-1]


def _prompt_parts(body: dict[str, Any]) -> tuple[str, str]:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    system = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "system")
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    return system, users[-1] if users else ""


def _question(user: str) -> str:
    found = re.findall(r"^Question:[ \t]*(.*)", user, re.MULTILINE)
    return found[-1].strip() if found else user.strip()


def _context(user: str) -> str:
    rest = user.partition(_CONTEXT_LABEL)[2]
    return rest.split("\n\nQuestion:", 1)[0].strip() if rest else ""
