"""A labelled retrieval set on confusable topics, served by the fakes.

``tests/data/confusable_*.json`` hold Wikipedia-style articles and Hacker News stories
written for this project (Mercury the planet, the element, the god and the singer; Java the
island, the language and the coffee; ...) and chat-style conversations over them. Each turn
has its question, the search keywords a decent model would choose for it (follow-ups
resolved from the conversation, as the keyword step does), the titles that count as a
correct top source (``gold``), and its ``kind``: ``direct``, ``overlap`` (the wording
overlaps a neighbour more than the gold article), ``followup`` (meaningless without the
turns before it) or ``hn`` (a Hacker News story is the answer).

:func:`keyword_responder` plays the keyword step from that script (the JSON the prompt asks
for) and the default fake model for everything else, so the set runs through the real
pipeline (bench/retrieval.py); :func:`scripted_keywords` gives the script to the
misbehaving responders (tests/fakes/keyword_modes.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from bot.pipeline.prompts import TOPIC_MARKER
from tests.fakes.hackernews import HNStory
from tests.fakes.ollama import default_responder, derive_keywords, split_tokens
from tests.fakes.wikipedia import WikiPage

DATA = Path(__file__).resolve().parents[1] / "data"


@dataclass(frozen=True, slots=True)
class Turn:
    question: str
    keywords: tuple[str, ...]
    gold: tuple[str, ...]
    kind: str


@dataclass(frozen=True, slots=True)
class Conversation:
    cluster: str
    turns: tuple[Turn, ...]


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


@cache
def pages() -> tuple[WikiPage, ...]:
    return tuple(
        WikiPage(
            title=p["title"],
            pageid=p["pageid"],
            text=p["text"],
            disambiguation=p.get("disambiguation", False),
        )
        for p in _load("confusable_pages.json")
    )


@cache
def stories() -> tuple[HNStory, ...]:
    return tuple(HNStory(**s) for s in _load("confusable_stories.json"))


@cache
def conversations() -> tuple[Conversation, ...]:
    return tuple(
        Conversation(
            c["cluster"],
            tuple(Turn(t["q"], tuple(t["kw"]), tuple(t["gold"]), t["kind"]) for t in c["turns"]),
        )
        for c in _load("confusable_questions.json")
    )


def keywords_by_question() -> Mapping[str, tuple[str, ...]]:
    return {t.question: t.keywords for c in conversations() for t in c.turns}


def _question(user: str) -> str:
    found = re.findall(r"^Question:[ \t]*(.*)", user, re.MULTILINE)
    return found[-1].strip() if found else ""


def keyword_question(body: dict[str, Any]) -> str | None:
    """The question a chat request asks keywords for; None when it is another prompt."""
    messages = body.get("messages") or []
    system = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    users = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
    if TOPIC_MARKER not in system:
        return None
    return _question(users[-1]) if users else ""


def keyword_responder(body: dict[str, Any]) -> list[str]:
    """The scripted keywords for a known question; the default fake model otherwise."""
    script = keywords_by_question().get(keyword_question(body) or "")
    if script is None:
        return default_responder(body)
    # A model that does what the prompt asks: the JSON object, with or without a grammar.
    return split_tokens(json.dumps({"keywords": list(script)}))


def scripted_keywords(question: str, context: str) -> list[str]:
    """The scripted keywords of a known question, the default model's otherwise."""
    script = keywords_by_question().get(question)
    return list(script) if script is not None else derive_keywords(question, context)
