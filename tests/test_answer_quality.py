"""Answers that cite, stay bounded and say when they are not good: the layout filter, the
attribution of uncited sentences, the token limit, and the turn's status, end to end
against the fake model server playing the real models' misbehaviours
(tests/fakes/answer_modes.py). The end-to-end tests run once per ``[llm].provider``, against
the fake Ollama and the fake OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from bot.adapters.discord.render import render_reply as discord_render
from bot.adapters.inmemory import InMemoryAdapter
from bot.adapters.render import ATTRIBUTED_HEADING, mark_attributed, render_reply
from bot.adapters.slack.render import render_mrkdwn as slack_render
from bot.cli import reply_json
from bot.config import Settings, load_settings
from bot.contract import Attribution, Notice, Reply, Source
from bot.core import metrics
from bot.intake.codec import decode_reply, encode_reply
from bot.pipeline import citations
from bot.pipeline.answer import WordBudget, said_nothing
from bot.pipeline.answer_filter import AnswerFilter
from bot.pipeline.layout import LayoutFilter, PromptLines
from bot.pipeline.llm import build_chat_model, call_options, close_chat_model, finish_reason
from bot.pipeline.prompts import AGAIN, SYNTHESIS_MARKER
from bot.pipeline.wording import ASKED_AGAIN, FALLBACK_LEAD, NOTHING_WRITTEN, UNMATCHED
from bot.runtime import Runtime
from tests.conftest import LLM_PROVIDERS, FakeLLM
from tests.fakes import answer_modes
from tests.fakes.base import Fault
from tests.fakes.scripted import requested_token_limit


@pytest.fixture(params=LLM_PROVIDERS)
def llm_provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


QUESTION = "What is the transformer architecture in deep learning?"
SYSTEM = (
    f"{SYNTHESIS_MARKER}\nAnswer briefly, in at most 150 words.\n"
    "Cite a source right after the claim it supports, as [1] or [2].\nAny section may be empty."
)
SOURCES = (
    "[1] Rust (programming language) (Wikipedia)\nhttps://en.wikipedia.org/wiki/Rust\n"
    "Rust is a general-purpose programming language.\n\n"
    "[2] Rust 1.0 is out (Hacker News)\nhttps://news.ycombinator.com/item?id=1\n"
    "(900 points, 300 comments, posted 2015-05-15) Rust 1.0 is out."
)
PROMPT = PromptLines.of(
    SYSTEM, [SOURCES, "2 articles", "(none)"], [(1, "Rust (programming language)")]
)


def run(text: str, chunks: list[str] | None = None) -> tuple[str, LayoutFilter, list[int]]:
    layout = LayoutFilter(PROMPT)
    answer_filter = AnswerFilter({1, 2}, layout)
    pieces = chunks if chunks is not None else [text]
    out = "".join(answer_filter.feed(p) for p in pieces) + answer_filter.flush()
    return out, layout, answer_filter.cited


LAYOUT_CASES = [
    # The statistics line with the model's own numbers, as SmolLM2-135M copies it, and
    # after a URL; a line that only starts like it stays.
    (
        "Rust is fast [1].\n7 articles (wikipedia: 10; hackernews: 2); average keyword "
        "relevance 0.35; frequent terms: rust (4), new (6)\nhttps://en.wikipedia.org/wiki/X; "
        "average keyword relevance 0.57; frequent terms: apple (6)\n"
        "2 articles (both from 2015) say so [2].",
        "Rust is fast [1].\n2 articles (both from 2015) say so [2].",
        [1, 2],
    ),
    # A second sources list, with invented URLs and the bot's own heading.
    (
        "Rust is fast [1].\n\nSources:\n[1] Rust (programming language) (Wikipedia)\n"
        "https://en.wikipedia.org/wiki/Rust_(invented)\n[3] Made Up (Wikipedia)\n"
        "https://example.org/made-up",
        "Rust is fast [1].",
        [1],
    ),
    # The bot's headings and placeholders, in Markdown dress.
    (
        "**Source statistics:** 2 articles\nRust is fast [1].\n- (none)\n## Notes:\n",
        "Rust is fast [1].",
        [1],
    ),
    ("(none)", "", []),
    # A line that only starts like a heading or an entry, or quotes a source, stays.
    (
        "Sources differ on this [1].\n[2] says 1.0 is out.\nRust is a general-purpose "
        "programming language, they say [1].",
        "Sources differ on this [1].\n[2] says 1.0 is out.\nRust is a general-purpose "
        "programming language, they say [1].",
        [1, 2],
    ),
    # The conversation transcript, echoed after the prompt by a base model.
    (
        "User: how hot does mercury get?\nAssistant: Mercury is a planet.\nRust is fast [1].",
        "Rust is fast [1].",
        [1],
    ),
    # The stream stopped while the model copied a line of the prompt: the piece goes too.
    ("Rust is fast [1].\nAnswer briefly, in at most 150", "Rust is fast [1].", [1]),
    ("Rust is fast [1].\nRust is a general-purpose programming", "Rust is fast [1].", [1]),
    # A last line that only starts like a prompt line, or is a finished sentence, stays.
    ("Rust is fast [1].\nRust is a general", "Rust is fast [1].\nRust is a general", [1]),
    (
        "Rust is fast [1].\nRust is a general-purpose programming tool.",
        "Rust is fast [1].\nRust is a general-purpose programming tool.",
        [1],
    ),
    # Blank lines around a dropped line go with it.
    ("First [1].\n\n(none)\n\nSecond [2].\n\n", "First [1].\n\nSecond [2].", [1, 2]),
]


@pytest.mark.parametrize(("text", "expected", "cited"), LAYOUT_CASES)
def test_the_layout_filter_drops_copied_lines_in_any_chunking(
    text: str, expected: str, cited: list[int]
) -> None:
    assert run(text)[::2] == (expected, cited)
    assert run(text, list(text))[::2] == (expected, cited)
    rng = random.Random(text)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 6))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert run(text, pieces)[::2] == (expected, cited), pieces


def test_an_echo_of_the_instructions_is_dropped_and_named() -> None:
    out, layout, _ = run(f"{SYSTEM}\n\n{SOURCES}\n\nRust is a language [1].")
    assert out == "Rust is a language [1]."
    assert layout.echoed and layout.echoed_lines == 4
    # One instruction line quoted is not an echo.
    out, layout, _ = run("Any section may be empty.\nRust [1].")
    assert out == "Rust [1]." and not layout.echoed


def test_the_layout_filter_lets_prose_stream_at_once() -> None:
    layout = LayoutFilter(PROMPT)
    assert layout.feed("Rust is a language") == "Rust is a language"
    assert layout.feed(" that is fast.\nSour") == " that is fast."
    assert layout.feed("ces:") == ""
    assert layout.feed("\nAnd more") == "\nAnd more"


def test_uncited_claims_are_attributed_above_the_threshold_only() -> None:
    body = "Mercury is the planet closest to the Sun. Short one. Is it hot? It is hot [2]."
    claims = citations.uncited_claims(body)
    assert claims == ["Mercury is the planet closest to the Sun."]
    passages = {
        1: np.array([[0.1, 0.9], [0.3, 0.7]], dtype=np.float32),
        2: np.array([[0.8, 0.2]], dtype=np.float32),
    }
    vectors = np.array([[1.0, 0.0]], dtype=np.float32)
    assert citations.attribute(claims, vectors, passages, threshold=0.5) == [
        Attribution(2, claims[0], 0.8)
    ]
    assert citations.attribute(claims, vectors, passages, threshold=0.85) == []
    bullets = "Two facts:\n- Mercury has no moons at all\n- It is the smallest planet [1]"
    assert citations.uncited_claims(bullets) == ["- Mercury has no moons at all"]


def test_attributed_citations_render_in_place_and_survive_the_outbox() -> None:
    body = "Mercury is the closest planet. It is small!\nNo claim here"
    added = (Attribution(1, "Mercury is the closest planet.", 0.7),)
    assert mark_attributed(body, added) == (
        "Mercury is the closest planet [1]. It is small!\nNo claim here"
    )
    reply = Reply(question="q", body=body, conversation="inmemory:x", attributions=added)
    assert decode_reply(encode_reply(reply)) == reply
    line = reply_json(reply)
    assert line["attributed"] == [
        {"n": 1, "sentence": "Mercury is the closest planet.", "support": 0.7}
    ]
    # The terminal's text: plain, no Markdown emphasis.
    assert "\n\nAdded by the bot: [1] after “Mercury is the closest planet.”." in line["answer"]


async def test_a_call_stopped_by_its_token_limit_says_length(
    make_settings: Callable[..., Settings], llm: FakeLLM
) -> None:
    settings = make_settings().llm
    model = build_chat_model(settings)
    try:
        reasons = []
        for limit in (5, None):
            chain = model.bind(**call_options(settings, max_tokens=limit))
            chunks = [chunk async for chunk in chain.astream("one two three four five six seven")]
            reasons.append(
                [finish_reason(settings, c) for c in chunks if finish_reason(settings, c)]
            )
        assert reasons == [["length"], ["stop"]]
        assert llm.replies == ["one two three four five", "one two three four five six seven"]
        limits = [requested_token_limit(body) for body in llm.chat_bodies()]
        assert limits == [5, settings.max_tokens]
    finally:
        await close_chat_model(model, settings)


def test_every_platform_shows_the_bots_citations_in_place_and_says_so() -> None:
    source = Source(1, "Mercury (planet)", "https://en.wikipedia.org/wiki/Mercury", "Wikipedia",
                    0.9, cited=True)  # fmt: skip
    reply = Reply(
        question="q",
        body="Mercury is the closest planet to the Sun. Nothing more",
        conversation="inmemory:x",
        sources=(source,),
        notices=(Notice("answer_uncited", "The bot cited.", "op"), Notice("no_sources", "")),
        attributions=(Attribution(1, "Mercury is the closest planet to the Sun.", 0.8),),
    )
    for shown in (discord_render(reply), slack_render(reply), render_reply(reply, operator=False)):
        assert "Mercury is the closest planet to the Sun [1]." in shown, shown
        assert "(some citations added by the bot)" in shown
        assert "The bot cited." in shown
        # The operator-only notice leaves no empty line of emphasis behind.
        assert not {"__", "**"} & {line.strip() for line in shown.splitlines()}, shown
    plain = dataclasses.replace(reply, attributions=())
    for shown in (discord_render(plain), slack_render(plain), render_reply(plain, operator=False)):
        assert "[1]" not in shown.split("\n")[0] and "added by the bot" not in shown


@pytest.fixture
async def runtime(make_settings: Callable[..., Settings]) -> AsyncIterator[Runtime]:
    async with await Runtime.start(make_settings(analysis={"enabled": False})) as rt:
        yield rt


def shown(bot: InMemoryAdapter) -> str:
    return bot.service.posts[bot.replies[-1].reply_id or ""].text


def kinds(reply: Reply) -> list[str]:
    return [n.kind for n in reply.notices]


async def test_a_well_behaved_answer_is_answered_with_nothing_added(
    bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    reply = await bot.ask(QUESTION)
    assert reply.status == "answered" and reply.notices == ()
    assert reply.attributions == ()
    assert ATTRIBUTED_HEADING not in shown(bot)
    answer = llm.chat_bodies()[-1]
    assert requested_token_limit(answer) == 1024
    assert "in at most 150 words" in answer["messages"][0]["content"]


async def test_an_uncited_answer_gets_the_bots_citations_and_is_degraded(
    bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    llm.responder = answer_modes.uncited
    reply = await bot.ask(QUESTION)

    assert reply.status == "degraded"
    assert "answer_uncited" in kinds(reply)
    assert reply.attributions, reply.body
    numbers = {s.n for s in reply.sources}
    for added in reply.attributions:
        assert added.n in numbers and added.sentence in reply.body
        assert added.sentence != "I hope this helps with your question."
    assert "[" not in reply.body, "the body stays what the model wrote"
    text = shown(bot)
    assert ATTRIBUTED_HEADING in text
    first = reply.attributions[0]
    assert f"{first.sentence[:-1]} [{first.n}]." in text
    assert {s.n for s in reply.sources if s.cited} == {a.n for a in reply.attributions}
    assert [a["n"] for a in reply_json(reply)["attributed"]] == [a.n for a in reply.attributions]


async def test_a_copied_sources_list_is_stripped(bot: InMemoryAdapter, llm: FakeLLM) -> None:
    llm.responder = answer_modes.copied_sources
    reply = await bot.ask(QUESTION)

    assert "Sources:" in llm.replies[-1]
    assert reply.body.endswith("[1].") and "\n" not in reply.body, reply.body
    assert "invented" not in shown(bot) and "Source statistics" not in shown(bot)
    assert reply.status == "answered", reply.notices


async def test_lines_copied_from_the_worked_example_are_stripped(
    bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    llm.responder = answer_modes.copied_example
    reply = await bot.ask(QUESTION)

    assert "Eiffel" in llm.replies[-1]
    assert reply.body == llm.replies[-1].split("\n")[0], reply.body
    assert "Eiffel" not in shown(bot) and "Champ de Mars" not in shown(bot)
    assert "average keyword relevance" not in shown(bot)


async def test_a_placeholder_answer_is_replaced_by_the_sources_it_had(
    bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    llm.responder = answer_modes.placeholder
    counted = {"kind": "answer_empty"}
    before = metrics.REGISTRY.get_sample_value("research_agent_turn_notices_total", counted)
    reply = await bot.ask(QUESTION)
    after = metrics.REGISTRY.get_sample_value("research_agent_turn_notices_total", counted)
    assert (after or 0) - (before or 0) == 1, "operators count the turns it degrades"

    lead, *lines = reply.body.split("\n")
    assert lead == NOTHING_WRITTEN
    # The best sources, each cited by its number, with its first sentence.
    assert lines and len(lines) <= len(reply.sources)
    for line, source in zip(lines, reply.sources, strict=False):
        assert line.startswith(f"[{source.n}] {source.title}: ") and line.endswith(".")
    assert [s.n for s in reply.sources if s.cited] == list(range(1, len(lines) + 1))
    assert reply.status == "degraded" and "answer_empty" in kinds(reply)
    assert "answer_uncited" not in kinds(reply), "the bot's lines cite what they quote"
    # An operator-only notice: counted, but no line in the chat.
    assert shown(bot).endswith(render_reply(reply, operator=False).split("\n\n")[-1])
    assert "had nothing" not in shown(bot)
    assert "had nothing" in render_reply(reply, operator=True)


async def test_a_lead_in_with_nothing_after_it_is_followed_by_the_sources(
    bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    llm.responder = answer_modes.lead_in
    reply = await bot.ask(QUESTION)

    # What was streamed stays (a stream only grows); the sources follow it.
    assert reply.body.startswith(f"The answer to this question is:\n\n{NOTHING_WRITTEN}\n[1] ")
    assert reply.sources[0].cited
    assert reply.status == "degraded" and "answer_empty" in kinds(reply)
    assert reply.body in shown(bot)


@pytest.mark.parametrize("mode", [answer_modes.bare_figure, answer_modes.unsupported])
async def test_an_answer_no_source_matches_is_followed_by_what_the_sources_say(
    bot: InMemoryAdapter, llm: FakeLLM, mode: answer_modes.Responder
) -> None:
    llm.responder = mode
    reply = await bot.ask(QUESTION)

    written, listed = reply.body.split("\n\n")
    assert written == llm.replies[-1], "the model's words stay, unmarked"
    lead, *lines = listed.split("\n")
    assert lead == UNMATCHED and lines
    assert ASKED_AGAIN not in reply.body, "asked again, it matched nothing either: not shown"
    for line, source in zip(lines, reply.sources, strict=False):
        assert line.startswith(f"[{source.n}] {source.title}: ")
    assert reply.attributions == () and reply.weak_citations == ()
    assert [s.n for s in reply.sources if s.cited] == list(range(1, len(lines) + 1))
    (uncited,) = [n for n in reply.notices if n.kind == "answer_uncited"]
    assert uncited.user == "" and "listed" in uncited.operator, "the body says it already"
    assert reply.status == "degraded"
    assert reply.body in shown(bot)


async def test_a_second_answer_that_matches_the_sources_follows_one_that_did_not(
    bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    llm.responder = answer_modes.wrong_then_sourced
    reply = await bot.ask(QUESTION)

    first, second = llm.replies[-2:]
    assert first == answer_modes.QUOKKAS and second.endswith("[1].")
    # Shown after the first (a stream only grows), below a line that says why.
    assert reply.body == f"{first}\n\n{ASKED_AGAIN}\n{second}"
    assert reply.body in shown(bot)
    assert [s.n for s in reply.sources if s.cited] == [1]
    assert reply.weak_citations == ()
    assert reply.status == "degraded" and "answer_again" in kinds(reply)
    assert "answer_uncited" not in kinds(reply)
    # The model was asked for it in what the answer's bounds left.
    (asked,) = [b for b in llm.chat_bodies() if AGAIN in b["messages"][-1]["content"]]
    assert QUESTION in asked["messages"][-1]["content"]


async def test_a_second_answer_past_what_the_bounds_leave_is_dropped_for_the_sources(
    bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    llm.responder = answer_modes.wrong_then_long
    reply = await bot.ask(QUESTION)

    assert AGAIN in llm.chat_bodies()[-1]["messages"][-1]["content"], "it was asked again"
    written, listed = reply.body.split("\n\n")
    assert written == answer_modes.QUOKKAS and listed.startswith(f"{UNMATCHED}\n[1] ")
    assert "word1" not in shown(bot)
    assert "answer_again" not in kinds(reply) and "answer_uncited" in kinds(reply)
    # The cut is of a draft nobody saw: not a notice of the reply.
    assert "answer_cut" not in kinds(reply)


@pytest.mark.parametrize("case", ["unmatched", "model down"])
async def test_the_bot_quotes_the_sentence_of_a_source_that_answers_the_question(
    bot: InMemoryAdapter, llm: FakeLLM, case: str
) -> None:
    # The LSTM article opens with what an LSTM is; who proposed it comes two sentences on.
    if case == "unmatched":
        llm.responder = answer_modes.unsupported
    else:
        llm.always_fail = Fault.garbage()
    reply = await bot.ask("Who proposed the LSTM design, and in which year?")

    lead = UNMATCHED if case == "unmatched" else FALLBACK_LEAD
    listed = reply.body.split(f"{lead}\n")[-1].split("\n")
    (lstm,) = [s for s in reply.sources if s.title == "Long short-term memory"]
    assert lstm.cited
    assert (
        f"[{lstm.n}] Long short-term memory: "
        + ("Sepp Hochreiter and Jürgen Schmidhuber proposed the design in 1997.")
        in listed
    ), "the sentence that answers, not the article's first"


@pytest.mark.parametrize(("answer_words", "listed"), [(20, 0), (45, 1), (150, 3)])
async def test_the_sources_listed_after_an_answer_stay_within_its_length_bounds(
    make_settings: Callable[..., Settings], llm: FakeLLM, answer_words: int, listed: int
) -> None:
    llm.responder = answer_modes.unsupported
    settings = make_settings(chat={"answer_words": answer_words})
    async with await Runtime.start(settings) as runtime:
        bot = InMemoryAdapter()
        await runtime.add_adapter(bot)
        reply = await bot.ask(QUESTION)

    limit = int(answer_words * 1.5)
    assert len(reply.body.split()) <= limit
    written, *added = reply.body.split("\n\n")
    assert written == llm.replies[-1]
    (uncited,) = [n for n in reply.notices if n.kind == "answer_uncited"]
    if added:
        # Whole lines only: as many of the best sources as fit, each cited.
        lead, *lines = added[0].split("\n")
        assert lead == UNMATCHED and len(lines) == listed
        assert [s.n for s in reply.sources if s.cited] == list(range(1, len(lines) + 1))
        assert uncited.user == ""
    else:
        # No room for even one: the answer stays uncited, and the reader is told.
        assert listed == 0
        assert not any(s.cited for s in reply.sources)
        assert uncited.user and "no room" in uncited.operator
    assert reply.status == "degraded"


@pytest.mark.parametrize(
    ("body", "nothing"),
    [
        ("", True),
        ("...", True),
        ("The answer to this question is:", True),
        ("Answer:", True),
        ("The answer is: 2.1 years", False),
        ("The answer is no.", False),
        ("Mercury has three uses:\n- thermometers", False),
        ("It depends on several things, all of which the sources below describe in turn:", False),
    ],
)
def test_said_nothing_knows_a_lone_lead_in_from_an_answer(body: str, nothing: bool) -> None:
    assert said_nothing(body) is nothing


async def test_an_echoed_prompt_is_dropped_and_degrades_the_turn(
    bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    llm.responder = answer_modes.echo
    reply = await bot.ask(QUESTION)

    assert SYNTHESIS_MARKER in llm.replies[-1]
    assert SYNTHESIS_MARKER not in reply.body and "Question:" not in reply.body
    assert reply.status == "degraded"
    assert "answer_echo" in kinds(reply)


async def test_an_answer_cut_by_the_token_limit_says_so(
    make_settings: Callable[..., Settings], llm: FakeLLM
) -> None:
    llm.responder = answer_modes.rambling
    settings = make_settings(analysis={"enabled": False}, llm={"max_tokens": 60})
    async with await Runtime.start(settings) as runtime:
        bot = InMemoryAdapter()
        await runtime.add_adapter(bot)
        reply = await bot.ask(QUESTION)

    assert len(llm.replies[-1].split()) < 60
    assert reply.status == "degraded"
    (cut,) = [n for n in reply.notices if n.kind == "answer_cut"]
    assert "[llm].max_tokens (60)" in cut.operator
    assert cut.user in shown(bot)


async def test_an_answer_that_loops_is_stopped_at_its_first_repeat(
    bot: InMemoryAdapter, llm: FakeLLM
) -> None:
    llm.responder = answer_modes.looping
    llm.pace(SYNTHESIS_MARKER, 0.002)
    reply = await bot.ask(QUESTION)

    first, *_ = llm.replies[-1].split("\n")
    assert reply.body == f"{first}\n{answer_modes.LOOPED}", reply.body
    # The model was told to stop: the other 99 copies were never written.
    await asyncio.wait_for(llm.stream_aborted.wait(), timeout=5)
    assert reply.status == "degraded"
    (looped,) = [n for n in reply.notices if n.kind == "answer_repeat"]
    assert looped.user == "" and "loop" in looped.operator
    assert "answer_cut" not in kinds(reply)
    assert reply.body in shown(bot)


async def test_an_answer_is_cut_at_half_again_its_length_target(
    make_settings: Callable[..., Settings], llm: FakeLLM
) -> None:
    llm.responder = answer_modes.rambling  # 1,000 words and more, all cited
    settings = make_settings(analysis={"enabled": False}, chat={"answer_words": 20})
    async with await Runtime.start(settings) as runtime:
        bot = InMemoryAdapter()
        await runtime.add_adapter(bot)
        reply = await bot.ask(QUESTION)

    assert 20 < len(reply.body.split()) <= 30
    assert reply.status == "degraded"
    (cut,) = [n for n in reply.notices if n.kind == "answer_cut"]
    assert "[chat].answer_words" in cut.operator
    assert cut.user in shown(bot)


def test_the_word_budget_counts_words_where_they_start() -> None:
    budget = WordBudget(3)
    assert budget.take("one tw") is None
    assert budget.take("o three") is None, "'tw' + 'o' is one word"
    assert budget.take("  ") is None
    assert budget.take("four five") == ""
    budget = WordBudget(2)
    assert budget.take("one two three") == "one two"


async def test_a_turn_with_no_source_is_degraded(bot: InMemoryAdapter) -> None:
    reply = await bot.ask("xqzv wmbt plorf?")

    assert reply.sources == ()
    assert reply.status == "degraded" and kinds(reply) == ["no_sources"]
    assert reply.notices[0].user == ""


# What this measures is the embedding model's: one provider is enough (12 s a run).
@pytest.mark.parametrize("llm_provider", ["ollama"])
async def test_with_the_real_embedding_model_only_the_uncited_answer_is_attributed(
    write_config: Callable[..., Path], llm: FakeLLM
) -> None:
    settings = load_settings(write_config(backend="sentence-transformers"), env={})
    settings = dataclasses.replace(
        settings, analysis=dataclasses.replace(settings.analysis, enabled=False)
    )
    async with await Runtime.start(settings) as runtime:
        bot = InMemoryAdapter()
        await runtime.add_adapter(bot)
        well = await bot.ask(QUESTION)
        llm.responder = answer_modes.uncited
        uncited = await bot.ask("How does attention work in transformers?")

    # The well-behaved model's "Some details may not be covered by these sources" (its
    # invalid citation removed) is uncited, and rightly stays so.
    assert well.status == "answered" and well.attributions == (), well.attributions
    assert uncited.status == "degraded" and uncited.attributions, uncited.body
    assert all(a.support >= settings.citations.attribution_threshold for a in uncited.attributions)
