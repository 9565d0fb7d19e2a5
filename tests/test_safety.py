"""Tests of the safety stage: foreign links defanged, mentions inert, for any chunking."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence

import pytest

from bot.contract import Neutralised
from bot.pipeline.safety import SafetyFilter, neutralise

Z = "\u200b"
WIKI = "https://en.wikipedia.org/wiki/Transformer_(deep_learning_architecture)"
HN = "https://news.ycombinator.com/item?id=38000000"
ALLOWED = (WIKI, HN, "https://www.example.org/page/")


def clean(text: str, allowed: Sequence[str] = ALLOWED) -> str:
    return neutralise(text, allowed)[0]


def counts(text: str, allowed: Sequence[str] = ALLOWED) -> Neutralised:
    return neutralise(text, allowed)[1]


def stream(text: str, sizes: Callable[[], int], allowed: Sequence[str] = ALLOWED) -> str:
    safety = SafetyFilter(allowed)
    out: list[str] = []
    i = 0
    while i < len(text):
        step = sizes()
        out.append(safety.feed(text[i : i + step]))
        i += step
    out.append(safety.flush())
    return "".join(out)


# ---------------------------------------------------------------------------------------
# The issue
# ---------------------------------------------------------------------------------------


def test_the_issue_example_line_is_made_harmless() -> None:
    text, done = neutralise("Note: @everyone check <https://evil.example/x>", ALLOWED)
    assert text == f"Note: @{Z}everyone check hxxps://evil[.]example/x"
    assert done == Neutralised(links=1, mentions=1)


# ---------------------------------------------------------------------------------------
# Mentions
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "inert"),
    [
        ("@everyone", f"@{Z}everyone"),
        ("@here", f"@{Z}here"),
        ("@EveryOne", f"@{Z}EveryOne"),
        ("@HERE", f"@{Z}HERE"),
        ("@channel", f"@{Z}channel"),
        # Discord
        ("<@123456789012345678>", f"@{Z}123456789012345678"),
        ("<@!123>", f"@{Z}123"),
        ("<@&123>", f"@{Z}123"),
        # Slack
        ("<@U123ABC>", f"@{Z}U123ABC"),
        ("<@W123>", f"@{Z}W123"),
        ("<@U123|alice>", f"@{Z}alice"),
        ("<!channel>", f"@{Z}channel"),
        ("<!here>", f"@{Z}here"),
        ("<!here|here>", f"@{Z}here"),
        ("<!everyone>", f"@{Z}everyone"),
        ("<!subteam^S123>", f"@{Z}S123"),
        ("<!subteam^S123|@team>", f"@{Z}team"),
    ],
)
def test_each_mention_form_is_inert_and_counted(raw: str, inert: str) -> None:
    text, done = neutralise(f"Hi {raw}, look.", ALLOWED)
    assert text == f"Hi {inert}, look."
    assert done == Neutralised(links=0, mentions=1)


@pytest.mark.parametrize(
    "text",
    [
        "Write to ops@here.com or team@everyone.org.",
        "Ask @alice and @heresy_fan, or @everyones_favourite.",
        "As shown [1], and again [1, 2], and [3].",
        "**Bold**, _italic_, `code`, > quote, # heading, - item, 1 < 2 and 3 > 2",
        "A channel link <#C123|general> and an emoji <:party:123>.",
        "x <@ not a mention> y <@alice>",
    ],
)
def test_ordinary_text_passes_unchanged(text: str) -> None:
    assert neutralise(text, ALLOWED) == (text, Neutralised())


def test_mentions_at_sentence_punctuation_still_count() -> None:
    assert clean("(@here) @everyone's @channel.") == f"(@{Z}here) @{Z}everyone's @{Z}channel."
    assert clean("x@here is not an address") == f"x@{Z}here is not an address"


def test_a_slack_label_is_neutralised_too() -> None:
    text, done = neutralise("<@U1|@everyone https://evil.io>", ALLOWED)
    assert text == f"@{Z}everyone hxxps://evil[.]io"
    assert done == Neutralised(links=1, mentions=1)


# ---------------------------------------------------------------------------------------
# Links
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "inert"),
    [
        ("https://evil.example/x", "hxxps://evil[.]example/x"),
        ("http://evil.example", "hxxp://evil[.]example"),
        ("HTTPS://Evil.Example/X", "HXXPS://Evil[.]Example/X"),
        ("<https://evil.example/x>", "hxxps://evil[.]example/x"),
        ("<https://evil.example/x|click here>", "click here (hxxps://evil[.]example/x)"),
        ("<https://evil.example/x|>", "hxxps://evil[.]example/x"),
        ("[click here](https://evil.example/x)", "[click here](hxxps://evil[.]example/x)"),
        ("[x](<https://evil.example/x>)", "[x](hxxps://evil[.]example/x)"),
        ("www.evil.example/x.html", "www[.]evil[.]example/x.html"),
        ("https://user@evil.example:8080/a.b", "hxxps://user@evil[.]example:8080/a.b"),
        # A redirect target in the query would be autolinked once the outer link is inert.
        (
            "https://evil.example/r?to=https://other.example/&w=www.third.example",
            "hxxps://evil[.]example/r?to=hxxps://other[.]example/&w=www[.]third[.]example",
        ),
        # Text that is no link any more must not notify either.
        ("https://evil.example/@here", f"hxxps://evil[.]example/@{Z}here"),
        ("https://evil.example/" + WIKI, "hxxps://evil[.]example/hxxps://en[.]wikipedia[.]org"),
    ],
)
def test_each_link_form_is_defanged_and_counted(raw: str, inert: str) -> None:
    text, done = neutralise(f"See {raw} now", ALLOWED)
    if raw.startswith("https://evil.example/h"):
        assert text.startswith(f"See {inert}")
    else:
        assert text == f"See {inert} now"
    assert done.links == 1


@pytest.mark.parametrize(
    ("raw", "inert"),
    [
        ("(https://evil.example/x)", "(hxxps://evil[.]example/x)"),
        ("https://evil.example/x.", "hxxps://evil[.]example/x."),
        ("https://evil.example/x,", "hxxps://evil[.]example/x,"),
        ("**https://evil.example/x**", "**hxxps://evil[.]example/x**"),
        ("`https://evil.example/x`", "`hxxps://evil[.]example/x`"),
        ("https://evil.example/a_(b).", "hxxps://evil[.]example/a_(b)."),
    ],
)
def test_a_link_ends_where_an_autolink_would(raw: str, inert: str) -> None:
    assert clean(raw) == inert


@pytest.mark.parametrize(
    "text",
    [
        WIKI,
        f"See {WIKI}.",
        f"See {WIKI}, then {HN}!",
        f"(see {WIKI})",
        f"({WIKI}).",
        f"[Transformer]({WIKI})",
        f"[Transformer]({WIKI}), and [HN]({HN}).",
        f"<{WIKI}>",
        f"<{HN}|the thread>",
        f"{WIKI}/",
        "https://www.example.org/page",
        "https://www.example.org/page/.",
        "www.example.org/page",
    ],
)
def test_source_urls_stay_untouched(text: str) -> None:
    assert neutralise(text, ALLOWED) == (text, Neutralised())


def test_a_source_url_is_matched_exactly() -> None:
    assert (
        clean(WIKI + "x")
        == "hxxps://en[.]wikipedia[.]org" + WIKI[len("https://en.wikipedia.org") :] + "x"
    )
    assert clean(HN.replace("https", "http")).startswith("hxxp://news[.]ycombinator[.]com")
    assert clean(WIKI, allowed=()).startswith("hxxps://en[.]wikipedia[.]org/")


def test_a_source_url_inside_a_slack_link_keeps_a_safe_label() -> None:
    assert clean(f"<{HN}|@here>") == f"<{HN}|@{Z}here>"


def test_counts_add_up() -> None:
    text = (
        "@everyone <@1> <!here> see https://a.example, <https://b.example|b>, "
        f"[c](https://c.example), www.d.example and {WIKI}."
    )
    assert counts(text) == Neutralised(links=4, mentions=3)


def test_the_output_is_already_safe() -> None:
    text = "@here <@1> <!channel> https://evil.example/x www.evil.example <https://x.y|z>"
    once = clean(text)
    assert neutralise(once, ALLOWED) == (once, Neutralised())


# ---------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------

# Pieces that random texts are glued from with no spaces, so links and mentions run into
# each other, into brackets and into the cut of a long word.
FRAGMENTS = (
    "@everyone",
    "@here",
    "@channel",
    "@",
    "every",
    "one",
    "<@123>",
    "<@!9>",
    "<@&7>",
    "<@U1|name with spaces>",
    "<!channel>",
    "<!subteam^S1|@team x>",
    "<",
    ">",
    "|",
    "<@",
    "<!",
    "https://",
    "http://",
    "evil.example",
    "/x",
    "www.",
    "www.evil.example/",
    "https://evil.example/a",
    "<https://evil.example/x>",
    "<https://evil.example|click me>",
    WIKI,
    HN,
    f"[t]({WIKI})",
    "[1]",
    "[1, 2]",
    "(",
    ")",
    "[",
    "]",
    ".",
    ",",
    " ",
    " ",
    "\n",
    "word",
    "ops@here.com",
    "ht",
    "tps://",
    "a" * 1990,
    "x" * 700,
    *("<https://x.y|s://evil.example>", "<@U1|htt>", "http", "WWW.", "<@U1|@every>", "one>"),
    *("<https://x.y|www.>", "htt", "s://", "ps://", "@ever", "yone", "a" * 1985),
)


def random_text(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(FRAGMENTS) for _ in range(parts))


def assert_safe(text: str) -> None:
    for url in sorted(ALLOWED, key=len, reverse=True):
        text = text.replace(url.rstrip("/"), "x")
    assert not re.search(r"(?i)https?://", text), text
    assert not re.search(r"(?i)(?<![A-Za-z0-9])www\.[A-Za-z0-9-]", text), text
    live = r"<(?:@[!&]?\d+>|@[UW][A-Z0-9]+[|>]|!(?i:channel|here|everyone|subteam))"
    assert not re.search(live, text), text
    for mention in re.finditer(r"(?i)@(?:everyone|here|channel)(?!\w)", text):
        start = mention.start()
        email = start > 0 and re.match(r"[\w.%+-]", text[start - 1]) is not None
        assert email and re.match(r"\.[A-Za-z0-9]", text[mention.end() :]), text


CASES = [
    "Note: @everyone check <https://evil.example/x>",
    f"The transformer [1] is described at {WIKI}. See also <https://evil.example|this> "
    f"and [HN]({HN}), or ping <@U1|someone> and <!subteam^S1|@devs>.",
    "no whitespace at all:" + "y" * 5000,
    "a" * 1995 + "@everyone" + "b" * 30 + " " + "c" * 1996 + "https://evil.example/x",
    "w" * 1997 + "www.evil.example " + "<https://evil.example/|label " + "z" * 600 + ">",
    # No cut position avoids a token here.
    "www." * 1500 + "@everyone" * 500,
]


@pytest.mark.parametrize("text", CASES)
def test_any_chunking_gives_the_same_output(text: str) -> None:
    expected = clean(text)
    assert stream(text, lambda: 1) == expected
    assert stream(text, lambda: len(text)) == expected
    rng = random.Random(7)
    for _ in range(20):
        top = rng.choice((3, 20, 300, 3000))
        assert stream(text, lambda: rng.randint(1, top)) == expected  # noqa: B023


@pytest.mark.parametrize("text", CASES)
def test_the_cases_come_out_safe(text: str) -> None:
    assert_safe(clean(text))


def test_random_texts_are_safe_and_chunking_invariant() -> None:
    rng = random.Random(20240601)
    for _ in range(200):
        text = random_text(rng, rng.randint(1, 40))
        expected, _ = neutralise(text, ALLOWED)
        assert_safe(expected)
        for _ in range(4):
            top = rng.choice((2, 10, 100, 2500))
            assert stream(text, lambda: rng.randint(1, top)) == expected  # noqa: B023


def test_streaming_counts_match() -> None:
    text = CASES[1] * 3
    safety = SafetyFilter(ALLOWED)
    for ch in text:
        safety.feed(ch)
    safety.flush()
    assert safety.neutralised == counts(text) == Neutralised(links=3, mentions=6)


def test_only_the_unfinished_token_is_held_back() -> None:
    safety = SafetyFilter(ALLOWED)
    assert safety.feed("Hello @every") == "Hello "
    assert safety.feed("one, see https://evil.") == f"@{Z}everyone, see "
    assert safety.feed("example/x ok <https://evil.example|a") == "hxxps://evil[.]example/x ok "
    assert safety.feed(" label> done") == "a label (hxxps://evil[.]example) "
    assert safety.flush() == "done"


def test_a_word_without_end_is_released_at_the_cap() -> None:
    safety = SafetyFilter(ALLOWED)
    out = safety.feed("z" * 2100)
    assert 1900 <= len(out) <= 2000
    assert set(out) == {"z"}


def test_an_unclosed_angle_bracket_is_released() -> None:
    safety = SafetyFilter(ALLOWED)
    assert safety.feed("1 <@ 2 and <https://a.example|b") == "1 <@ 2 and "
    assert safety.feed("\nmore ") == "<hxxps://a[.]example|b\nmore "


def test_flush_twice_and_feed_after_flush() -> None:
    safety = SafetyFilter(ALLOWED)
    assert safety.feed("@here") == ""
    assert safety.flush() == f"@{Z}here"
    assert safety.flush() == ""
    with pytest.raises(RuntimeError):
        safety.feed("more")


# ---------------------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------------------

PATHOLOGICAL: list[Callable[[int], str]] = [
    lambda n: "https://" + "a(" * n,
    lambda n: "https://" + ")" * n,
    lambda n: "<@" * n,
    lambda n: "<https://x|" * n,
    lambda n: "www." * n,
    lambda n: "@everyone" * n,
    lambda n: "[" * n + "(" * n,
    lambda n: ("x " + "<" * 10) * n,
]


def _best_times(*texts: str, rounds: int = 5) -> list[float]:
    """The best of ``rounds`` timings of each text, taken in turns, so that a busy moment
    (CI's other test worker, a subprocess starting) slows both sizes, not one."""
    best = [float("inf")] * len(texts)
    for _ in range(rounds):
        for i, text in enumerate(texts):
            start = time.perf_counter()
            neutralise(text, ALLOWED)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


@pytest.mark.parametrize("make", PATHOLOGICAL)
def test_pathological_input_takes_linear_time(make: Callable[[int], str]) -> None:
    small, large = _best_times(make(2_500), make(10_000))
    # Four times the input: linear work takes about four times as long, quadratic sixteen.
    assert large < 10 * small + 0.02


def test_a_long_answer_is_fast() -> None:
    text = (CASES[1] + " ") * (40_000 // len(CASES[1]))
    assert len(text) >= 38_000
    start = time.perf_counter()
    assert stream(text, lambda: 7) == clean(text)
    assert time.perf_counter() - start < 2.0


def _best_stream_time(text: str) -> float:
    best = float("inf")
    # Best of five: on a busy machine one preemption of ~0.1 s can land in any one run.
    for _ in range(5):
        start = time.perf_counter()
        stream(text, lambda: 1)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("make", PATHOLOGICAL[:4])
def test_streaming_one_character_at_a_time_takes_linear_time(make: Callable[[int], str]) -> None:
    # The held-back word is up to 2,000 characters: rescanning it on every feed would be
    # quadratic in that window.
    small, large = _best_stream_time(make(1_500)), _best_stream_time(make(6_000))
    assert large < 10 * small + 0.05
