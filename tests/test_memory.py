from __future__ import annotations

import asyncio
import logging

import pytest

from bot.core.tasks import TaskTracker
from bot.pipeline.memory import ConversationLocks, RecentTurns


async def test_drain_waits_for_tasks_spawned_while_draining() -> None:
    tracker = TaskTracker()
    finished: list[str] = []
    gate = asyncio.Event()

    async def child() -> None:
        finished.append("child")

    async def parent() -> None:
        await gate.wait()
        tracker.spawn(child(), name="child")
        finished.append("parent")

    tracker.spawn(parent(), name="parent")
    drained = asyncio.create_task(tracker.drain(final=True))
    await asyncio.sleep(0)
    gate.set()
    assert await drained is True
    assert finished == ["parent", "child"]
    assert len(tracker) == 0


async def test_drain_cancels_what_outlives_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    tracker = TaskTracker()
    never = asyncio.Event()
    task = tracker.spawn(never.wait(), name="stuck")
    with caplog.at_level(logging.ERROR):
        assert await tracker.drain(grace_s=0.05, final=True) is False
    assert task.cancelled()
    assert "still running at shutdown" in caplog.text


async def test_no_spawning_after_final_drain() -> None:
    tracker = TaskTracker()
    await tracker.drain(final=True)

    async def job() -> None:
        return None

    with pytest.raises(RuntimeError):
        tracker.spawn(job(), name="late")


async def test_failures_are_logged_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    tracker = TaskTracker()

    async def broken() -> None:
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR):
        tracker.spawn(broken(), name="broken")
        await tracker.drain()
    assert "background task broken failed" in caplog.text


async def test_locks_serialise_one_key_and_not_others() -> None:
    locks = ConversationLocks()
    a1, a2, b = locks.lock("a"), locks.lock("a"), locks.lock("b")
    assert a1 is a2
    assert a1 is not b
    async with a1:
        assert locks.lock("a").locked()
        assert not locks.lock("b").locked()


def test_recent_turns_are_bounded() -> None:
    recent = RecentTurns(per_conversation=2, conversations=2)
    for i in range(3):
        recent.add("a", f"q{i}", f"a{i}")
    recent.add("b", "qb", "ab")
    recent.add("c", "qc", "ac")
    assert recent.get("a") == []  # evicted: least recently active
    assert recent.get("c") == [("qc", "ac")]
    recent.add("b", "qb2", "ab2")
    assert recent.get("b") == [("qb", "ab"), ("qb2", "ab2")]
    recent.forget("b")
    assert recent.get("b") == []
