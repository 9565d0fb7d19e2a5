"""The store is watched: a deleted or replaced file, a writer holding the lock, a second
serving process. The real runtime against the fakes, a real SQLite file beside it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.adapters.inmemory import InMemoryAdapter
from bot.config import Settings
from bot.contract import Reply, conversation_key
from bot.errors import StoreError
from bot.pipeline.wording import NOT_SAVED
from bot.runtime import Runtime
from bot.store.sqlite import SqliteStore
from bot.store.sqlite import database as sqlite_database

SettingsFactory = Callable[..., Settings]
QUESTION = "What is the transformer architecture in deep learning?"


async def start_bot(runtime: Runtime) -> InMemoryAdapter:
    bot = InMemoryAdapter()
    await runtime.add_adapter(bot)
    return bot


async def test_a_deleted_database_is_noticed_logged_once_and_the_bot_goes_on(
    make_settings: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sqlite_database, "WATCH_EVERY_S", 0.0)
    settings = make_settings()
    path = Path(settings.memory.database)
    async with await Runtime.start(settings) as runtime:
        bot = await start_bot(runtime)
        assert (await bot.ask(QUESTION)).ok
        await runtime.pipeline.memory.settle()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240 - the fault itself
        with caplog.at_level(logging.ERROR):
            for channel in ("a", "b"):
                reply = await bot.ask("What is BERT in language models?", channel=channel)
                assert reply.ok and not any(n.user == NOT_SAVED for n in reply.notices)
        await runtime.pipeline.memory.settle()
        kept = await runtime.store.conversations.list_all()
    deleted = [r for r in caplog.records if "was deleted while the bot ran" in r.getMessage()]
    assert len(deleted) == 1, "logged once"
    assert path.exists(), "a fresh database at the same path"  # noqa: ASYNC240
    assert sorted(c.conversation for c in kept) == [
        conversation_key("inmemory", "a"),
        conversation_key("inmemory", "b"),
    ], "what came after is kept; what was deleted is gone"


async def test_a_replaced_database_is_noticed_too(
    make_settings: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sqlite_database, "WATCH_EVERY_S", 0.0)
    settings = make_settings()
    path = Path(settings.memory.database)
    async with await Runtime.start(settings) as runtime:
        bot = await start_bot(runtime)
        assert (await bot.ask(QUESTION)).ok
        await runtime.pipeline.memory.settle()
        replacement = path.with_name("restored.db")
        sqlite3.connect(replacement).close()
        replacement.replace(path)
        with caplog.at_level(logging.ERROR):
            assert (await bot.ask("What is BERT in language models?", channel="c")).ok
    assert any("was replaced while the bot ran" in r.getMessage() for r in caplog.records)


async def test_a_writer_holding_the_lock_stalls_no_conversation_and_users_are_told(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy_s = 2.0
    monkeypatch.setattr(sqlite_database, "BUSY_TIMEOUT_MS", int(busy_s * 1000))
    settings = make_settings()

    async def four_at_once(prefix: str) -> tuple[float, list[Reply]]:
        started = time.monotonic()
        asks = (bot.ask(QUESTION, channel=f"{prefix}{n}") for n in range(4))
        replies = await asyncio.wait_for(asyncio.gather(*asks), 60)
        return time.monotonic() - started, replies

    async with await Runtime.start(settings) as runtime:
        bot = await start_bot(runtime)
        alone, _ = await four_at_once("free")
        other = sqlite3.connect(settings.memory.database, isolation_level=None, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            took, replies = await four_at_once("locked")
        finally:
            other.execute("ROLLBACK")
            other.close()
        for reply in replies:
            assert reply.ok
            assert [n.user for n in reply.notices if n.kind == "memory_unavailable"] == [NOT_SAVED]
        # Serialised, the four claims would wait four busy timeouts; here one does.
        assert took < alone + busy_s + 1.5, (took, alone)
        # Free again: after the cool-down a question is on record as usual.
        await asyncio.sleep(sqlite_database.BUSY_COOLDOWN_S)
        after = await bot.ask("What is BERT in language models?", channel="later")
        assert not any(n.kind == "memory_unavailable" for n in after.notices)


async def test_a_second_serving_process_is_refused_and_the_lock_dies_with_the_first(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "bot.db")
    first = await SqliteStore.open(path)
    await first.take_ownership()
    second = await SqliteStore.open(path)
    try:
        with pytest.raises(StoreError, match=r"another research-agent process \(pid \d+\)"):
            await second.take_ownership()
        await first.close()  # as a process's exit would: the kernel drops the lock
        await second.take_ownership()
    finally:
        await second.close()
        await first.close()
