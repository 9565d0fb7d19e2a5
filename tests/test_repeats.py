"""Tests of the repeat guard: an answer that starts writing itself again is stopped at the
first repeated sentence, whatever the chunking, and nothing else is held up or dropped."""

from __future__ import annotations

import random

import pytest

from bot.pipeline.repeats import RepeatGuard

BEATLES = "https://news.ycombinator.com/item?id=39100002&from=apple-records"
LOOP = "This project was run by NASA, and it aimed to put a person into orbit."

CASES = [
    # A paragraph over and over, one per line: shown once, then the stream stops.
    (
        f"The god of war was Mars.\n{LOOP}\n{LOOP}\n{LOOP}\nMore",
        f"The god of war was Mars.\n{LOOP}\n",
        True,
    ),
    # A numbered list whose items repeat: the number is not part of the sentence.
    (
        "1. The tower is tall and very old indeed.\n2. The tower is tall and very old indeed.\n",
        "1. The tower is tall and very old indeed.\n",
        True,
    ),
    # Within a paragraph; the stream ended mid-way through the second copy.
    (
        "Born in 1946. Died in 1991. He sang in Queen for twenty years. "
        "He sang in Queen for twenty",
        "Born in 1946. Died in 1991. He sang in Queen for twenty years.",
        False,
    ),
    # Short sentences may come back; so may one that cites another source.
    (
        "It is fast. It is fast. He sang in Queen for twenty years [1]. "
        "He sang in Queen for twenty years [2]. End.",
        "It is fast. It is fast. He sang in Queen for twenty years [1]. "
        "He sang in Queen for twenty years [2]. End.",
        False,
    ),
    # Lines of few words but many characters (links), over and over.
    (
        f"The Beatles ({BEATLES})\nBruno Mars (https://en.wikipedia.org/wiki/Bruno_Mars)\n"
        f"The Beatles ({BEATLES})\nBruno Mars",
        f"The Beatles ({BEATLES})\nBruno Mars (https://en.wikipedia.org/wiki/Bruno_Mars)\n",
        True,
    ),
    # Reworded: the sentence is shown (it streamed before it ended), and nothing after it.
    (
        "The Linux kernel was released as a fork of the GNU kernel in 1991. It is large.\n"
        "The kernel was first released as a fork of GNU's kernel in 1991. More of the same.",
        "The Linux kernel was released as a fork of the GNU kernel in 1991. It is large.\n"
        "The kernel was first released as a fork of GNU's kernel in 1991.",
        True,
    ),
    # A closing summary shares less with what it sums up; one citing another source, and a
    # short sentence, may be worded alike.
    (
        "Mercury is the smallest planet in the Solar System and the closest to the Sun [1]. "
        "It has no moons [1]. In short, Mercury is the smallest planet and the closest to the "
        "Sun [1]. Venus is the hottest planet of the Solar System [2]. Venus is the hottest "
        "planet in the Solar System [3]. It is hot. It was hot.",
        "Mercury is the smallest planet in the Solar System and the closest to the Sun [1]. "
        "It has no moons [1]. In short, Mercury is the smallest planet and the closest to the "
        "Sun [1]. Venus is the hottest planet of the Solar System [2]. Venus is the hottest "
        "planet in the Solar System [3]. It is hot. It was hot.",
        False,
    ),
    # Lines of code differ in a name or a number; only prose can loop reworded.
    (
        "Stack the layers.\n```python\n"
        + "".join(f"    layer_{i} = attention(q, k, v)  # step {i}\n" for i in range(4))
        + "```\nEach layer attends to every token of the sequence.",
        "Stack the layers.\n```python\n"
        + "".join(f"    layer_{i} = attention(q, k, v)  # step {i}\n" for i in range(4))
        + "```\nEach layer attends to every token of the sequence.",
        False,
    ),
    # A list that does not repeat passes whole, its markers too.
    (
        "No loop here at all, none.\n1. First item\n2. Second item",
        "No loop here at all, none.\n1. First item\n2. Second item",
        False,
    ),
]


def _chunked(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, min(30, len(text) - 1))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@pytest.mark.parametrize(("text", "shown", "looped"), CASES)
def test_the_first_repeat_ends_the_answer_in_any_chunking(
    text: str, shown: str, looped: bool
) -> None:
    rng = random.Random(text)
    for chunks in [[text], list(text), *(_chunked(text, rng) for _ in range(200))]:
        guard = RepeatGuard()
        out = "".join(guard.feed(chunk) for chunk in chunks) + guard.flush()
        assert out == shown, chunks
        assert guard.looped is looped


def test_text_that_cannot_be_a_repeat_is_shown_at_once() -> None:
    guard = RepeatGuard()
    assert guard.feed(f"{LOOP} This") == LOOP  # " This" may still start the loop again
    assert guard.feed(" tower") == " This tower"
    assert guard.feed(f" is tall.\n{LOOP[:20]}") == " is tall.\n"
    assert guard.feed("!") == f"{LOOP[:20]}!"
    assert not guard.looped


def test_nothing_is_shown_after_the_loop() -> None:
    guard = RepeatGuard()
    guard.feed(f"{LOOP}\n{LOOP}\n")
    assert guard.looped
    assert guard.feed("Something new and different entirely.") == ""
    assert guard.flush() == ""
