"""The adapter/pipeline seam: light to import, and conversation keys that round-trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.contract import Neutralised, Reply, Source, conversation_key, split_conversation_key

ROOT = Path(__file__).resolve().parent.parent


def test_the_contract_and_the_adapter_base_import_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        "import bot.contract, bot.adapters.base, bot.adapters.render\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    heavy = [
        name
        for name in loaded
        if name.split(".")[0] in {"langchain", "langchain_core", "langchain_ollama", "numpy",
                                  "torch", "sentence_transformers", "aiohttp", "aiosqlite"}
        or name.startswith(("bot.agents", "bot.pipeline", "bot.intake"))
    ]  # fmt: skip
    assert heavy == []


@pytest.mark.parametrize(
    "parts",
    [
        ("T1", "C2", "1700000000.0001"),
        ("guild:1", "chan"),  # a ':' inside an id
        ("guild", "1:chan"),  # ... which must not collide with the one above
        ("100%", "a/b c"),
        ("default",),
    ],
)
def test_conversation_keys_round_trip(parts: tuple[str, ...]) -> None:
    key = conversation_key("slack", *parts)
    assert split_conversation_key(key) == ("slack", parts)


def test_ids_with_colons_cannot_collide() -> None:
    assert conversation_key("discord", "a:b", "c") != conversation_key("discord", "a", "b:c")
    assert conversation_key("discord", "a:b", "c").count(":") == 2


def test_plain_ids_keep_readable_keys() -> None:
    assert conversation_key("terminal", "default") == "terminal:default"
    assert conversation_key("slack", "T1", "C2", "1700.1") == "slack:T1:C2:1700.1"


@pytest.mark.parametrize("bad", ["", "slack", "slack:", ":a", "slack::x"])
def test_malformed_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        split_conversation_key(bad)


def test_empty_parts_are_refused() -> None:
    with pytest.raises(ValueError):
        conversation_key("slack", "T1", "")
    with pytest.raises(ValueError):
        conversation_key("slack")


def test_a_reply_lists_its_cited_sources_or_all_when_none_is_cited() -> None:
    one = Source(1, "A", "https://a", "Wikipedia", 0.9, cited=True)
    two = Source(2, "B", "https://b", "Hacker News", 0.5)
    assert Reply("q", "b", "k", sources=(one, two)).cited == (one,)
    uncited = Source(1, "A", "https://a", "Wikipedia", 0.9)
    assert Reply("q", "b", "k", sources=(uncited, two)).cited == (uncited, two)
    assert Reply("q", "b", "k", status="degraded").ok
    assert not Reply("q", "b", "k", status="failed").ok
    assert Neutralised(1, 2) + Neutralised(3, 4) == Neutralised(4, 6)
