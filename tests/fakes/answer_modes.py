"""Responders for the fake Ollama that answer like the real models seen in the logs.

Each plays one misbehaviour of a small or base model at the answer prompt
(``SYNTHESIS_PROMPT``, recognised by its marker) and answers every other prompt as
:func:`tests.fakes.ollama.default_responder` does, so a whole turn runs:

* :func:`uncited`: a correct answer from the sources' opening sentences, citing nothing;
* :func:`copied_sources`: a cited answer, then a second sources list in the prompt's
  layout ("[1] Title (Wikipedia)" and an invented URL) and a "Source statistics:" line;
* :func:`copied_example`: a cited answer, then the prompt's worked example's sources and
  statistics;
* :func:`placeholder`: the prompt's placeholder ``(none)`` and nothing else;
* :func:`lead_in`: a lead-in ("The answer to this question is:") and nothing after it;
* :func:`bare_figure` ("The answer is: 3") and :func:`unsupported` (a claim no source
  makes): answers no source can be matched to, when first asked and when asked again;
* :func:`wrong_then_sourced`: :func:`unsupported`'s answer, and asked again, a cited one;
  :func:`wrong_then_long`: the same, the second running on past any length bound;
* :func:`echo`: the whole prompt, system message first, as a base model continues it;
* :func:`rambling`: a cited answer that goes on and on (for the token limit);
* :func:`looping`: a cited sentence, then a paragraph over and over (:data:`LOOPED`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.pipeline.prompts import (
    AGAIN,
    ANSWER_EXAMPLE_SHOWN,
    ANSWER_EXAMPLE_STATISTICS,
    SYNTHESIS_MARKER,
)
from tests.fakes.scripted import (
    _opening,
    _parse_sources,
    _prompt_parts,
    default_responder,
    split_tokens,
)

__all__ = [
    "bare_figure",
    "copied_example",
    "copied_sources",
    "echo",
    "lead_in",
    "looping",
    "placeholder",
    "rambling",
    "uncited",
    "unsupported",
    "wrong_then_long",
    "wrong_then_sourced",
]

Responder = Callable[[dict[str, Any]], list[str]]


def _at_answer(write: Callable[[str, str], str]) -> Responder:
    """A responder that writes the answer with ``write(system, user)``, and plays the
    default model for every other prompt."""

    def respond(body: dict[str, Any]) -> list[str]:
        system, user = _prompt_parts(body)
        if SYNTHESIS_MARKER not in f"{system}\n{user}":
            return default_responder(body)
        return split_tokens(write(system, user))

    return respond


def _openings(user: str) -> list[tuple[int, str, str]]:
    return [(n, title, _opening(text)) for n, title, text in _parse_sources(user) if text]


@_at_answer
def uncited(system: str, user: str) -> str:
    said = [f"{opening}." for _, _, opening in _openings(user)[:2]]
    return " ".join(said) + " I hope this helps with your question."


@_at_answer
def copied_sources(system: str, user: str) -> str:
    sources = _parse_sources(user)
    n1, _, text1 = sources[0]
    lines = [f"{_opening(text1)} [{n1}].", "", "Sources:"]
    for n, title, _ in sources[:2]:
        slug = title.replace(" ", "_")
        lines += [f"[{n}] {title} (Wikipedia)", f"https://en.wikipedia.org/wiki/{slug}_(invented)"]
    lines += ["", "Source statistics: 5 articles; average keyword relevance 0.42"]
    return "\n".join(lines)


@_at_answer
def copied_example(system: str, user: str) -> str:
    """A cited answer, then the worked example's sources and statistics copied after it."""
    (n1, _, text1), *_ = _parse_sources(user)
    return "\n".join(
        [f"{_opening(text1)} [{n1}].", ANSWER_EXAMPLE_SHOWN, ANSWER_EXAMPLE_STATISTICS]
    )


def _saying(text: str) -> Responder:
    """An answer that is ``text`` whatever the question and the sources."""
    return _at_answer(lambda system, user: text)


placeholder = _saying("(none)")
lead_in = _saying("The answer to this question is:")
bare_figure = _saying("The answer is: 3")
QUOKKAS = "Quokkas invented the steam engine on a lunar farm in 1642, or so legend says."
unsupported = _saying(QUOKKAS)


@_at_answer
def wrong_then_sourced(system: str, user: str) -> str:
    """An answer no source supports; asked again, the opening of the first source, cited."""
    if AGAIN not in user:
        return QUOKKAS
    (n1, _, text1), *_ = _parse_sources(user)
    return f"{_opening(text1)} [{n1}]."


@_at_answer
def wrong_then_long(system: str, user: str) -> str:
    """An answer no source supports; asked again, a cited one that runs on for 300 words."""
    if AGAIN not in user:
        return QUOKKAS
    (n1, _, text1), *_ = _parse_sources(user)
    return f"{_opening(text1)} [{n1}]. " + " ".join(f"word{i}" for i in range(300))


@_at_answer
def echo(system: str, user: str) -> str:
    return f"{system}\n\n{user}"


@_at_answer
def rambling(system: str, user: str) -> str:
    (n1, _, text1), *_ = _parse_sources(user)
    return " ".join(f"Point {i}: {_opening(text1)} [{n1}]." for i in range(1, 201))


# What a loop repeats: the model's own paraphrase of a source, as SmolLM2-135M wrote it.
LOOPED = (
    "This project was run by NASA, and it aimed to put a person into orbit around the "
    "Earth. The mission involved several astronauts who were chosen from test pilots."
)


@_at_answer
def looping(system: str, user: str) -> str:
    (n1, _, text1), *_ = _parse_sources(user)
    return "\n".join([f"{_opening(text1)} [{n1}].", *[LOOPED] * 100])
