"""Text from outside made valid (bot/core/text.py), at the intake's door for every platform."""

from __future__ import annotations

from collections.abc import Callable

from bot.adapters.inmemory import InMemoryAdapter
from bot.config import Settings
from bot.core.text import valid_text
from bot.runtime import Runtime


def test_undecodable_bytes_become_replacement_characters() -> None:
    smuggled = b"caf\xc3\xa9 \xff\xfe!".decode("utf-8", "surrogateescape")
    assert valid_text(smuggled) == "café \ufffd\ufffd!"
    assert valid_text("lone \ud800 surrogate") == "lone \ufffd\ufffd\ufffd surrogate"
    assert valid_text("nul\x00 byte") == "nul byte"
    assert valid_text("plain ascii") == "plain ascii"
    assert valid_text("ünïcødé, 中文, emoji 🙂") == "ünïcødé, 中文, emoji 🙂"


async def test_any_platform_may_hand_in_invalid_text_and_it_is_answered_and_stored(
    make_settings: Callable[..., Settings],
) -> None:
    async with await Runtime.start(make_settings()) as runtime:
        bot = InMemoryAdapter()
        await runtime.add_adapter(bot)
        reply = await bot.ask("What is \udcff BERT?\x00")
        assert reply.ok and reply.question == "What is \ufffd BERT?"
        await runtime.pipeline.memory.settle()
        state = await runtime.store.conversations.load("inmemory:general")
    assert state.turns[-1].question == "What is \ufffd BERT?"
