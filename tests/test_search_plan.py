"""The search plan: which keywords are used as they came, and the question's own words."""

from __future__ import annotations

import pytest

from bot.pipeline.keywords import reply_keywords
from bot.pipeline.ranking import plural, terms
from bot.pipeline.search_plan import (
    is_follow_up,
    plan_search,
    question_terms,
    ranking_texts,
    topic_question,
    verdict,
)

FILM = "who directed the 2007 film about an oil prospector, there will be blood?"


def related(text: str) -> frozenset[str]:
    return frozenset(terms(text, plural))


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [
        ("There Will Be Blood", "ok"),
        ("2007 film", "ok"),
        ("The answer to this question is", "prose"),
        ("Sure, here are the keywords", "prose"),
        ("I think the film is There Will Be Blood.", "prose"),
        ("the answer to this question is", "prose"),
        ("this is the one that you are looking for", "prose"),
        ("oil prospector film directed by Paul Thomas Anderson", "too long"),
        ("x" * 81, "too long"),
        ("Rust (programming language)", "off topic"),
    ],
)
def test_verdict(keyword: str, expected: str) -> None:
    assert verdict(keyword, related(FILM)) == expected


def test_only_plurals_meet_when_a_keyword_is_judged() -> None:
    question = "why did nasa name its first astronaut program after a planet?"
    assert verdict("Rust (programming language)", related(question)) == "off topic"
    assert verdict("Astronaut programs", related(question)) == "ok"


def test_a_title_with_function_words_is_not_prose() -> None:
    question = "which paper introduced attention is all you need?"
    assert verdict("Attention Is All You Need", related(question)) == "ok"


def test_a_keyword_that_resolves_a_follow_up_is_on_topic() -> None:
    context = "User: which record label did the beatles start?\nAssistant: Apple Records [1]."
    question = "did it fight the computer company over the name?"
    assert verdict("Apple Records", related(question)) == "off topic"
    assert verdict("Apple Records", related(f"{question}\n{context}")) == "ok"


def test_question_terms_are_the_salient_words_longest_first() -> None:
    # Length is a crude stand-in for rarity: "still" goes before "java".
    assert question_terms("does java still need the jvm to run?") == [
        "still",
        "java",
        "need",
        "jvm",
    ]
    assert question_terms("how strong is a jaguar's bite?") == ["strong", "jaguar", "bite"]
    assert question_terms("how long is a year there?") == ["long", "year"]  # nothing better
    assert question_terms("what is it?") == []
    assert question_terms(FILM, 2) == ["prospector", "directed"]


def test_a_copy_of_the_prompt_s_example_is_not_searched() -> None:
    # Small models repeat the keyword prompt's worked example for any question.
    plan = plan_search(["Eiffel Tower", "height", "2007 film"], FILM)
    assert plan.rejected == (("Eiffel Tower", "example"), ("height", "example"))
    assert "Eiffel Tower" not in plan.search and "height" not in plan.search
    assert plan.topics == ("2007 film",)
    # Asked about the example's own topic, the same keyword is the right one.
    asked = "who built the eiffel tower?"
    assert plan_search(["Eiffel Tower"], asked).topics == ("Eiffel Tower",)


def test_a_wrong_topic_adds_candidates_but_never_leads_nor_ranks() -> None:
    plan = plan_search(["Rust (programming language)"], FILM)

    assert plan.search[0] == "prospector", "the primary topic (title lookup) is the question's"
    assert "Rust (programming language)" in plan.search, "it may still add candidates"
    assert "Rust (programming language)" not in plan.lexical
    assert plan.topics == ("prospector", "directed", "blood", "2007")
    assert plan.rejected == (("Rust (programming language)", "off topic"),)


def test_prose_and_an_empty_reply_leave_the_question_s_own_search() -> None:
    question = "how hot does mercury get during the day?"
    for keywords in ([], ["The answer to this question is"]):
        plan = plan_search(keywords, question)
        assert plan.search == ("mercury", "during", "hot", "day")
        assert plan.lexical == ()
    assert plan.rejected == (("The answer to this question is", "prose"),)


def test_good_keywords_lead_and_the_question_is_a_safety_net() -> None:
    plan = plan_search(["Mercury (planet)", "Mercury temperature"], "how hot does mercury get?")
    # "mercury" is in a keyword already: the word it does not hold goes first.
    assert plan.search == ("Mercury (planet)", "Mercury temperature", "hot", "mercury")
    assert plan.topics == plan.lexical == ("Mercury (planet)", "Mercury temperature")
    assert plan.rejected == ()


def test_beside_a_keyword_the_question_s_words_it_does_not_hold_are_searched() -> None:
    # SmolLM2-135M's reply: "chain", the question's next longest word, is in it; "flaky"
    # is not, and finds the page ("Rust": "a reddish-brown flaky coating") no other did.
    question = "why does my bike chain go orange and flaky after rain?"
    plan = plan_search(["Bike Chain"], question)
    assert plan.search == ("Bike Chain", "orange", "flaky")
    # A keyword that holds them all still leaves the net: its words alone.
    plan = plan_search(["64-bit Jaguar Flop"], "why did the 64-bit jaguar flop?")
    assert plan.search == ("64-bit Jaguar Flop", "64-bit", "jaguar")


def test_a_follow_up_searches_and_ranks_with_the_question_before_it() -> None:
    previous = "how hot does mercury get during the day?"
    question = "and how long is a year there?"
    assert is_follow_up(question) and not is_follow_up(previous)

    plan = plan_search([], question, previous=previous)
    assert plan.search == ("long", "year", "mercury", "during")
    assert plan.lexical == (previous,)
    assert ranking_texts(question, previous) == [question, f"{previous}\n{question}"]
    assert ranking_texts(previous, "what is mercury?") == [previous]
    assert plan_search([], previous, previous="what is mercury?").lexical == ()


def test_a_follow_up_to_a_follow_up_reaches_back_to_the_topic() -> None:
    asked = ["what is mercury?", "when was it discovered?"]
    assert topic_question(asked) == "what is mercury? when was it discovered?"
    assert topic_question(["what is mercury?", "what is venus?"]) == "what is venus?"
    assert topic_question(["when was it discovered?"]) == "when was it discovered?"
    assert topic_question([]) == ""
    plan = plan_search([], "who discovered it?", previous=topic_question(asked))
    assert "mercury" in plan.search


def test_a_question_of_stop_words_is_searched_as_it_is() -> None:
    assert plan_search([], "what is it?").search == ("what is it?",)
    assert plan_search([], "  ").search == ()


def test_the_number_of_searches_is_capped() -> None:
    keywords = ["Venus", "Mars (planet)", "Jupiter"]
    question = "compare venus, mars and jupiter atmospheres, temperatures, moons, rings?"
    plan = plan_search(keywords, question, max_terms=4)
    assert len(plan.search) == 4


@pytest.mark.parametrize(
    ("reply", "truncated", "expected"),
    [
        (
            '{"keywords": ["Mercury (planet)", "Mercury orbit"]}',
            False,
            ["Mercury (planet)", "Mercury orbit"],
        ),
        ('```json\n{"keywords": ["Mercury"]}\n```', False, ["Mercury"]),
        ('["Mercury", "orbit"]', False, ["Mercury", "orbit"]),
        ('{"keywords": ["1. Mercury\\n2. Mercury orbit"]}', False, ["Mercury", "Mercury orbit"]),
        ('{"keywords": ["\\"Mercury, Mercury orbit\\""]}', False, ["Mercury", "Mercury orbit"]),
        ('{"keywords": [""]}', False, []),
        ('{"keywords": []}', False, []),
        ("", False, []),
        ('{"keywords": ["Mercury (planet)", "Mercury orb', True, ["Mercury (planet)"]),
        ('{"keywords": ["Mercury (pla', False, []),
        ('{"keyw', True, []),
        ("Mercury (planet)\nMercury orb", True, ["Mercury (planet)"]),
        ("Sure! Here are the keywords for you, let me think about the best", True, []),
        ("1. Mercury\n2. Mercury orbit", False, ["Mercury", "Mercury orbit"]),
        ('"Mercury, Mercury orbit"', False, ["Mercury", "Mercury orbit"]),
        ("[Mercury]", False, ["[Mercury]"]),
        ('<think>json?</think>{"keywords": ["Mercury"]}', False, ["Mercury"]),
        # A copied source entry: the title before the link is the keyword (SmolLM2-135M).
        (
            '{"keywords": ["self-Attention in Transformer (Wikipedia)](#https://en.wikipedia'
            '.org/wiki/Transformer_(self_attention)"]}',
            False,
            ["self-Attention in Transformer"],
        ),
        (
            '{"keywords": ["[Transformer](https://en.wikipedia.org/wiki/Transformer)", '
            '"Mercury https://en.wikipedia.org/wiki/Mercury", "www.example.com"]}',
            False,
            ["Transformer", "Mercury"],
        ),
    ],
)
def test_reply_keywords(reply: str, truncated: bool, expected: list[str]) -> None:
    assert reply_keywords(reply, truncated=truncated) == expected


def test_prose_in_the_schema_is_read_then_refused() -> None:
    question = "how long is a year on mercury?"
    # A sentence is no keyword at all; its start before a colon is one, and is refused.
    assert reply_keywords('{"keywords": ["The answer is: it is the closest planet."]}') == []
    [keyword] = reply_keywords('{"keywords": ["The answer to this question is: Mercury"]}')
    plan = plan_search([keyword], question)
    assert plan.rejected == ((keyword, "prose"),)
    assert plan.search == ("mercury", "long", "year")
