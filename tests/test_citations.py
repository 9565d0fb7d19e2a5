"""Citations checked against their sources: the pure parts, the rendering, and end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from bot.adapters.inmemory import InMemoryAdapter
from bot.adapters.render import mark_weak, render_reply
from bot.cli import reply_json
from bot.config import Settings
from bot.contract import Reply, WeakCitation
from bot.pipeline import citations
from bot.runtime import Runtime
from tests.fakes.ollama import FakeOllama, default_responder, split_tokens

BODY = "Mercury is hot [1]. It is small. [2] The god [1, 3] was fast! In 1962, Glenn flew [4]."


def test_sentences_are_verbatim_and_keep_marks_after_the_stop() -> None:
    assert citations.sentences(BODY) == [
        "Mercury is hot [1].",
        "It is small. [2]",
        "The god [1, 3] was fast!",
        "In 1962, Glenn flew [4].",
    ]
    cited = citations.cited_sentences(BODY)
    assert [(c.text, c.numbers) for c in cited] == [
        ("Mercury is hot.", (1,)),
        ("It is small.", (2,)),
        ("The god was fast!", (1, 3)),
        ("In 1962, Glenn flew.", (4,)),
    ]


def test_passages_overlap_two_sentences_at_a_time() -> None:
    assert citations.passages("A one. B two. C three.") == ["A one. B two.", "B two. C three."]
    assert citations.passages("Only one.") == ["Only one."]
    assert citations.passages("") == []


def test_a_citation_below_the_threshold_is_weak() -> None:
    cited = citations.cited_sentences("Close [1]. Far [2]. Unknown [7].")
    sentence_vectors = np.eye(3, dtype=np.float32)
    passages = {
        1: np.array([[0.9, 0.1, 0.0], [0.2, 0.0, 0.0]], dtype=np.float32),
        2: np.array([[0.9, 0.3, 0.0]], dtype=np.float32),
    }
    weak = citations.weak(cited, sentence_vectors, passages, threshold=0.5)
    assert weak == [WeakCitation(2, "Far [2].", 0.3)]


def test_weak_citations_render_with_a_question_mark() -> None:
    weak = [
        WeakCitation(3, "The god [1, 3] was fast!", 0.1),
        WeakCitation(2, "It is small. [2]", 0.2),
    ]
    assert mark_weak(BODY, weak) == (
        "Mercury is hot [1]. It is small. [2?] The god [1, 3?] was fast! In 1962, Glenn flew [4]."
    )
    reply = Reply(question="q", body=BODY, conversation="inmemory:x", weak_citations=tuple(weak))
    assert "_Marked [2?], [3?]: the cited source barely supports that sentence._" in render_reply(
        reply, operator=False
    )


@pytest.fixture
async def runtime(make_settings: Callable[..., Settings]) -> AsyncIterator[Runtime]:
    async with await Runtime.start(make_settings(analysis={"enabled": False})) as rt:
        yield rt


async def test_an_unsupported_citation_is_flagged_end_to_end(
    runtime: Runtime, ollama: FakeOllama
) -> None:
    def responder(body: dict[str, Any]) -> list[str]:
        if "Sources:" not in str(body.get("messages", "")):
            return default_responder(body)
        return split_tokens(
            "The transformer processes a whole sequence of tokens in parallel with "
            "multi-head self-attention [1]. Female pythons shiver to keep their eggs "
            "warm in the Australian desert [2]."
        )

    ollama.responder = responder
    bot = InMemoryAdapter()
    await runtime.add_adapter(bot)
    reply = await bot.ask("What is the transformer architecture in deep learning?")

    assert [w.n for w in reply.weak_citations] == [2], reply.weak_citations
    assert "[2?]" in bot.service.posts[bot.replies[-1].reply_id or ""].text
    assert "[1?]" not in render_reply(reply, operator=False)
    line = reply_json(reply)
    assert [w["n"] for w in line["weak_citations"]] == [2]
    assert "citations_s" in line["timings"]
