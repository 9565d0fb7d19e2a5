"""Tests of the streaming answer filter: think blocks and citations."""

from __future__ import annotations

import itertools
import random

import pytest

from bot.pipeline.answer_filter import AnswerFilter


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
    # The joining word a removed citation leaves dangling goes with it.
    ("Cite it as [1] or [12]; never guess.", "Cite it as [1]; never guess.", [1]),
    ("Both [1], [12]. And [1] and [2] stay.", "Both [1]. And [1] and [2] stay.", [1, 2]),
    ("Read [12] or [13].", "Read.", []),
    ("Cats or dogs, and birds [1] or fish", "Cats or dogs, and birds [1] or fish", [1]),
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
    # "and" may join a citation that gets removed: it waits for the next word.
    assert answer_filter.feed(" and <th") == ""
    assert answer_filter.feed("ink>secret</th") == ""
    assert answer_filter.feed("ink> more") == " and more"
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
