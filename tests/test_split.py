"""The one splitter every platform uses for long answers (bot/adapters/split.py)."""

from __future__ import annotations

from bot.adapters.discord.render import LIMIT
from bot.adapters.discord.render import split_message as discord_split
from bot.adapters.slack.render import MESSAGE_CHARS
from bot.adapters.slack.render import split_message as slack_split
from bot.adapters.split import split_message


def test_each_platform_splits_at_its_own_size_by_the_same_rules() -> None:
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 150 for i in range(12))
    assert discord_split(text) == split_message(text, LIMIT)
    assert slack_split(text) == split_message(text, MESSAGE_CHARS)
    assert all(len(p) <= LIMIT for p in discord_split(text))


def test_a_slack_link_with_a_label_is_never_cut() -> None:
    link = (
        "<https://en.wikipedia.org/wiki/Attention_(machine_learning)|Attention (machine learning)>"
    )
    text = ("filler " * 10 + link + " ") * 12
    for part in split_message(text, 300):
        assert part.count("<https://") == part.count("|Attention (machine learning)>")


def test_a_code_block_that_must_be_cut_starts_a_part_of_its_own() -> None:
    intro = "A short introduction to the code below."
    code = "```python\n" + "".join(f"x_{i} = f({i})\n" for i in range(200)) + "```"
    parts = split_message(f"{intro}\n\n{code}", 500)
    assert parts[0] == intro
    assert all(p.startswith("```python") for p in parts[1:])
    assert all(p.count("```") % 2 == 0 and len(p) <= 500 for p in parts)


def test_blank_lines_at_a_cut_are_dropped_and_the_text_is_kept() -> None:
    text = "one. " * 60 + "\n   \n" + "two " * 100
    parts = split_message(text, 320)
    assert not any(p.endswith("\n") or p.endswith("\n   ") for p in parts)
    assert "".join(parts).split() == text.split()
