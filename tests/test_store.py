"""The conversations' behaviour, the same on both backends: real SQLite files and a real
PostgreSQL server (``backend`` runs each test once per backend)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot.errors import StoreError
from bot.store import Store
from tests.databases import Backend
from tests.store_helpers import begin_turn


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open()


async def _answered(store: Store, key: str, question: str, answer: str) -> int:
    turn = await begin_turn(store, key, question)
    assert await store.conversations.finish_turn(turn, answer)
    return turn


async def test_begin_finish_load_round_trip(store: Store) -> None:
    first = await _answered(store, "discord:1:2", "What is SQLite?", "A database [1].")
    second = await _answered(store, "discord:1:2", "Is it fast?", "Yes.")

    state = await store.conversations.load("discord:1:2")

    assert second > first
    assert state.conversation == "discord:1:2"
    assert (state.summary, state.summary_upto) == ("", 0)
    assert [(t.id, t.question, t.answer, t.status) for t in state.turns] == [
        (first, "What is SQLite?", "A database [1].", "answered"),
        (second, "Is it fast?", "Yes.", "answered"),
    ]
    created = state.turns[0].created_at
    assert created.utcoffset() == timedelta(0)


async def test_unknown_key_loads_empty_and_has_no_transcript(store: Store) -> None:
    state = await store.conversations.load("nobody")

    assert (state.conversation, state.summary, state.summary_upto, state.turns) == (
        "nobody",
        "",
        0,
        (),
    )
    assert await store.conversations.transcript("nobody") is None


async def test_pending_turn_is_in_transcript_but_not_in_load(store: Store) -> None:
    done = await _answered(store, "k", "first", "one")
    pending = await begin_turn(store, "k", "second, never answered")

    loaded = await store.conversations.load("k")
    transcript = await store.conversations.transcript("k")

    assert [t.id for t in loaded.turns] == [done]
    assert transcript is not None
    assert [(t.id, t.status, t.answer) for t in transcript.turns] == [
        (done, "answered", "one"),
        (pending, "pending", None),
    ]


async def test_inputs_are_stored_exactly_as_given(store: Store, backend: Backend) -> None:
    key = "slack:T1:C2:1700000000.0001 '; DROP TABLE turns; -- ünïcødé 🦆"
    question = "q" * 39_999 + "?"
    answer = "line one\nline two\x00after a NUL\n" + "é" * 10_000
    # PostgreSQL's text cannot hold NUL: that backend drops it, and only it.
    kept = answer.replace("\x00", "") if backend.shared else answer

    await _answered(store, key, question, answer)
    (turn,) = (await store.conversations.load(key)).turns

    assert turn.question == question
    assert len(turn.question) == 40_000
    assert turn.answer == kept
    assert [s.conversation for s in await store.conversations.list_all()] == [key]


async def test_summary_moves_the_window_forward_only(store: Store) -> None:
    ids = [await _answered(store, "k", f"q{n}", f"a{n}") for n in range(5)]

    assert await store.conversations.save_summary("k", "turns 0-2", ids[2])
    state = await store.conversations.load("k")
    assert (state.summary, state.summary_upto) == ("turns 0-2", ids[2])
    assert [t.question for t in state.turns] == ["q3", "q4"]

    # A slower summariser finishing late must not drag the window back.
    assert not await store.conversations.save_summary("k", "turns 0-1", ids[1])
    assert (await store.conversations.load("k")).summary == "turns 0-2"

    # Re-summarising the same window is allowed; the transcript keeps every turn.
    assert await store.conversations.save_summary("k", "turns 0-2, shorter", ids[2])
    transcript = await store.conversations.transcript("k")
    assert transcript is not None
    assert transcript.summary == "turns 0-2, shorter"
    assert [t.question for t in transcript.turns] == [f"q{n}" for n in range(5)]


async def test_summary_refused_for_missing_session_or_foreign_turn(store: Store) -> None:
    other = await _answered(store, "other", "q", "a")
    mine = await _answered(store, "mine", "q", "a")
    pending = await begin_turn(store, "mine", "still thinking")

    assert not await store.conversations.save_summary("gone", "summary", other)
    assert not await store.conversations.save_summary("mine", "summary", other)
    assert not await store.conversations.save_summary("mine", "summary", pending)
    assert not await store.conversations.save_summary("mine", "summary", pending + 1000)
    assert (await store.conversations.load("mine")).summary_upto == 0
    assert await store.conversations.save_summary("mine", "summary", mine)


async def test_summary_of_a_reset_conversation_is_refused(store: Store) -> None:
    old = await _answered(store, "k", "old question", "old answer")
    await store.conversations.reset("k")
    await _answered(store, "k", "new question", "new answer")

    # The summariser had loaded the old conversation before the reset.
    assert not await store.conversations.save_summary("k", "about the old question", old)
    assert (await store.conversations.load("k")).summary == ""


async def test_reset_deletes_session_and_turns(store: Store, backend: Backend) -> None:
    await _answered(store, "k", "q", "a")
    await begin_turn(store, "k", "pending")
    await _answered(store, "keep", "q", "a")

    assert await store.conversations.reset("k")
    assert not await store.conversations.reset("k")

    assert await store.conversations.transcript("k") is None
    assert (await store.conversations.load("k")).turns == ()
    assert [s.conversation for s in await store.conversations.list_all()] == ["keep"]
    assert await backend.row("SELECT COUNT(*) FROM turns WHERE conversation = 'k'") == (0,)


async def test_finish_turn_after_reset_returns_false(store: Store) -> None:
    turn = await begin_turn(store, "k", "slow question")
    await store.conversations.reset("k")

    assert not await store.conversations.finish_turn(turn, "late answer")
    assert not await store.conversations.finish_turn(123_456, "no such turn")
    assert await store.conversations.list_all() == []

    # Ids are never reused, so the late answer cannot land on a new conversation's turn.
    new_turn = await begin_turn(store, "k", "new question")
    assert new_turn > turn


async def test_list_sessions_order_and_counts(store: Store) -> None:
    await _answered(store, "a", "q1", "x")
    await _answered(store, "b", "q1", "x")
    await begin_turn(store, "b", "pending")
    await _answered(store, "c", "q1", "x")
    last_of_a = await _answered(store, "a", "q2", "x")
    await store.conversations.save_summary("a", "summary", last_of_a)

    sessions = await store.conversations.list_all()

    assert [(s.conversation, s.turn_count, s.has_summary) for s in sessions] == [
        ("a", 2, True),
        ("c", 1, False),
        ("b", 2, False),
    ]
    for info in sessions:
        assert info.created_at <= info.updated_at
        assert info.updated_at.utcoffset() == timedelta(0)


async def test_concurrent_turns_across_keys_and_on_one_key_all_survive(
    store: Store,
) -> None:
    async def turn(key: str, n: int) -> int:
        turn_id = await begin_turn(store, key, f"question {n}")
        await asyncio.sleep(0)
        assert await store.conversations.finish_turn(turn_id, f"answer {n}")
        return turn_id

    jobs = [turn("shared", n) for n in range(25)] + [turn(f"key{n}", n) for n in range(25)]
    ids = await asyncio.gather(*jobs)

    assert len(set(ids)) == 50
    shared = await store.conversations.load("shared")
    assert sorted((t.question, t.answer) for t in shared.turns) == sorted(
        (f"question {n}", f"answer {n}") for n in range(25)
    )
    assert [t.id for t in shared.turns] == sorted(t.id for t in shared.turns)
    sessions = await store.conversations.list_all()
    assert len(sessions) == 26
    assert sum(s.turn_count for s in sessions) == 50


async def test_concurrent_reads_and_writes_mix_cleanly(store: Store) -> None:
    await _answered(store, "k", "seed", "seed")

    results = await asyncio.gather(
        *(_answered(store, "k", f"q{n}", f"a{n}") for n in range(20)),
        *(store.conversations.load("k") for _ in range(20)),
        *(store.conversations.list_all() for _ in range(10)),
    )

    assert len(results) == 50
    assert len((await store.conversations.load("k")).turns) == 21


async def test_failed_finish_keeps_the_turn_pending(store: Store) -> None:
    turn = await begin_turn(store, "k", "q")
    before = await store.conversations.list_all()

    with pytest.raises(StoreError):
        await store.conversations.finish_turn(turn, b"not text")  # type: ignore[arg-type]

    transcript = await store.conversations.transcript("k")
    assert transcript is not None
    assert [(t.status, t.answer) for t in transcript.turns] == [("pending", None)]
    assert await store.conversations.list_all() == before


async def test_cancelled_write_leaves_no_partial_rows(store: Store) -> None:
    task = asyncio.create_task(begin_turn(store, "k", "cancelled question"))
    await asyncio.sleep(0)  # let it take the lock and queue its first statement
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    transcript = await store.conversations.transcript("k")
    # Either the whole turn was written before the cancellation arrived, or none of it.
    assert transcript is None or [t.question for t in transcript.turns] == ["cancelled question"]
    await _answered(store, "k", "next", "works")


async def test_failed_write_rolls_back_the_whole_transaction(store: Store) -> None:
    # begin_turn upserts the session row, then inserts the turn. Bytes are not text, so
    # the turn INSERT fails on the table's CHECK constraint after the session row was
    # already written inside the same transaction; none of it may survive.
    with pytest.raises(StoreError) as caught:
        await begin_turn(store, "new-session", b"not text")  # type: ignore[arg-type]

    assert caught.value.__cause__ is not None, "the driver's error is kept as the cause"
    assert await store.conversations.list_all() == []
    assert await store.conversations.transcript("new-session") is None

    # The lock was released and no transaction is left open: the store keeps working.
    turn = await _answered(store, "new-session", "real question", "real answer")
    assert [t.id for t in (await store.conversations.load("new-session")).turns] == [turn]


async def test_close_is_idempotent_and_later_calls_raise(backend: Backend) -> None:
    memory = await backend.open()
    await memory.close()
    await memory.close()

    with pytest.raises(StoreError, match="closed"):
        await begin_turn(memory, "k", "q")
    with pytest.raises(StoreError, match="closed"):
        await memory.conversations.load("k")


async def test_health_is_none_while_the_store_answers_and_says_why_once_closed(
    backend: Backend,
) -> None:
    store = await backend.open()
    assert await store.health() is None
    await store.close()
    problem = await store.health()
    assert problem is not None and "does not answer" in problem
