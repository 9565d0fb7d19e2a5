"""Tests of the memory store's inbox (schema version 2), against real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.contract import Source
from bot.errors import StoreError
from bot.store import Claim
from bot.store.sqlite import SCHEMA_VERSION, SqliteStore
from tests.store_helpers import begin_turn

# Far enough that nothing a test claims is old; expiry tests move ``now`` instead.
DAY_S = 86_400.0

# Migration 1 exactly as released, frozen here: the upgrade must work on files it wrote.
_V1_SCHEMA = (
    """
    CREATE TABLE sessions (
        key          TEXT    NOT NULL PRIMARY KEY CHECK (typeof(key) = 'text'),
        created_at   TEXT    NOT NULL,
        updated_at   TEXT    NOT NULL,
        summary      TEXT    NOT NULL DEFAULT '' CHECK (typeof(summary) = 'text'),
        summary_upto INTEGER NOT NULL DEFAULT 0 CHECK (summary_upto >= 0)
    )
    """,
    """
    CREATE TABLE turns (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        session_key TEXT    NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
        question    TEXT    NOT NULL CHECK (typeof(question) = 'text'),
        answer      TEXT    CHECK (answer IS NULL OR typeof(answer) = 'text'),
        status      TEXT    NOT NULL CHECK (status IN ('pending', 'answered')),
        created_at  TEXT    NOT NULL,
        answered_at TEXT,
        CHECK ((status = 'answered') = (answer IS NOT NULL))
    )
    """,
    "CREATE INDEX turns_by_session ON turns (session_key, id)",
)

SOURCES = (
    Source(1, "SQLite", "https://en.wikipedia.org/wiki/SQLite", "wikipedia", 0.91, cited=True),
    Source(2, "Show HN: ünïcødé", "https://news.ycombinator.com/item?id=1", "hackernews", 0.5),
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "memory.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteStore]:
    memory = await SqliteStore.open(path)
    try:
        yield memory
    finally:
        await memory.close()


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain second connection, as another process (the CLI) would have."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def reply_id(path: Path, platform: str, event_id: str) -> str | None:
    """The reply id the inbox recorded for the event, read as another process would."""
    with raw(path) as conn:
        row = conn.execute(
            "SELECT reply_id FROM inbox WHERE platform = ? AND event_id = ?", (platform, event_id)
        ).fetchone()
    return None if row is None else row[0]


def inbox_row(path: Path, platform: str, event_id: str) -> tuple[Any, ...] | None:
    with raw(path) as conn:
        row: tuple[Any, ...] | None = conn.execute(
            "SELECT status, attempts, turn_id FROM inbox WHERE platform = ? AND event_id = ?",
            (platform, event_id),
        ).fetchone()
    return row


def state(path: Path, platform: str, event_id: str) -> tuple[str, int]:
    """``(status, attempts)`` of an event that must exist."""
    row = inbox_row(path, platform, event_id)
    assert row is not None, f"no inbox row for {platform} {event_id}"
    return str(row[0]), int(row[1])


async def claim(store: SqliteStore, event_id: str, conversation: str = "discord:c1") -> Claim:
    got = await store.inbox.claim(
        "discord", event_id, conversation, f"question {event_id}", f'{{"id": "{event_id}"}}'
    )
    assert got is not None
    return got


def later(hours: float = 1) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


async def test_a_version_1_file_is_migrated_and_keeps_its_data(path: Path) -> None:
    with raw(path) as conn:
        for statement in _V1_SCHEMA:
            conn.execute(statement)
        stamp = "2024-05-01T12:00:00.000000+00:00"
        conn.execute("INSERT INTO sessions VALUES ('k', ?, ?, '', 0)", (stamp, stamp))
        conn.execute(
            "INSERT INTO turns (session_key, question, answer, status, created_at, answered_at) "
            "VALUES ('k', 'old question', 'old answer', 'answered', ?, ?)",
            (stamp, stamp),
        )
        conn.execute("PRAGMA user_version = 1")

    memory = await SqliteStore.open(path)
    try:
        state = await memory.conversations.load("k")
        assert [(t.question, t.answer) for t in state.turns] == [("old question", "old answer")]
        assert await memory.conversations.last_sources("k") == ()
        got = await memory.inbox.claim("slack", "E1", "k", "new question", "{}")
        assert got is not None
        assert got.conversation_started == datetime.fromisoformat(stamp)
        assert got.turn_id > state.turns[0].id
    finally:
        await memory.close()

    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (6,)
        assert conn.execute("SELECT sources FROM turns ORDER BY id").fetchall() == [
            ("[]",),
            ("[]",),
        ]


async def test_claim_creates_the_turn_and_a_duplicate_writes_nothing(
    store: SqliteStore, path: Path
) -> None:
    first = await store.inbox.claim("discord", "m1", "discord:c1", "What is SQLite?", '{"a": 1}')
    again = await store.inbox.claim("discord", "m1", "discord:c1", "What is SQLite?", '{"a": 1}')
    # The key is the event alone: a redelivery that looks different is still the same event.
    other = await store.inbox.claim("discord", "m1", "discord:c2", "something else", "{}")

    assert first is not None
    assert again is None
    assert other is None
    info = await store.conversations.info("discord:c1")
    assert info is not None
    assert first.conversation_started == info.created_at
    transcript = await store.conversations.transcript("discord:c1")
    assert transcript is not None
    assert [(t.id, t.question, t.status) for t in transcript.turns] == [
        (first.turn_id, "What is SQLite?", "pending")
    ]
    assert await store.conversations.info("discord:c2") is None
    assert inbox_row(path, "discord", "m1") == ("pending", 1, first.turn_id)
    with raw(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM turns").fetchone() == (1,)


async def test_the_same_event_id_on_another_platform_is_another_event(store: SqliteStore) -> None:
    assert await store.inbox.claim("discord", "1", "discord:c", "q", "{}") is not None
    assert await store.inbox.claim("slack", "1", "slack:c", "q", "{}") is not None


async def test_twenty_concurrent_claims_of_one_event_give_one_claim(
    store: SqliteStore, path: Path
) -> None:
    results = await asyncio.gather(
        *(store.inbox.claim("slack", "Ev1", "slack:T:C", "q", "{}") for _ in range(20))
    )

    claims = [r for r in results if r is not None]
    assert len(claims) == 1
    with raw(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM turns").fetchone() == (1,)


async def test_two_stores_on_one_file_give_one_claim(path: Path) -> None:
    first = await SqliteStore.open(path)
    second = await SqliteStore.open(path)
    try:
        results = await asyncio.gather(
            *(
                store.inbox.claim("discord", "m1", "discord:c1", "q", "{}")
                for _ in range(10)
                for store in (first, second)
            )
        )
    finally:
        await first.close()
        await second.close()

    assert len([r for r in results if r is not None]) == 1
    with raw(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM turns").fetchone() == (1,)
        assert conn.execute("SELECT COUNT(*) FROM inbox").fetchone() == (1,)


async def test_a_failed_claim_leaves_no_trace_and_can_be_retried(
    store: SqliteStore, path: Path
) -> None:
    # The turn INSERT fails its CHECK after the inbox row was written in the same
    # transaction; a surviving inbox row would turn the retry into a "duplicate".
    with pytest.raises(StoreError):
        await store.inbox.claim("discord", "m1", "discord:c1", b"not text", "{}")  # type: ignore[arg-type]

    assert inbox_row(path, "discord", "m1") is None
    assert await store.conversations.info("discord:c1") is None
    assert await store.inbox.claim("discord", "m1", "discord:c1", "q", "{}") is not None


async def test_begin_turn_still_works_alongside_claims(store: SqliteStore) -> None:
    claimed = await claim(store, "m1")
    begun = await begin_turn(store, "discord:c1", "from the terminal")

    assert begun > claimed.turn_id
    info = await store.conversations.info("discord:c1")
    assert info is not None
    assert info.turn_count == 2


async def test_record_reply_and_reply_id(store: SqliteStore, path: Path) -> None:
    await claim(store, "m1")

    assert reply_id(path, "discord", "m1") is None
    await store.inbox.record_reply("discord", "m1", "reply-1")
    assert reply_id(path, "discord", "m1") == "reply-1"
    await store.inbox.record_reply("discord", "m1", "reply-2")
    assert reply_id(path, "discord", "m1") == "reply-2"

    await store.inbox.record_reply("discord", "unknown", "reply-3")
    assert reply_id(path, "discord", "unknown") is None
    assert reply_id(path, "slack", "m1") is None


async def test_finished_events_are_not_recovered(store: SqliteStore, path: Path) -> None:
    await claim(store, "m1")
    await claim(store, "m2")
    await claim(store, "m3")

    await store.inbox.finish("discord", "m1", "answered")
    await store.inbox.finish("discord", "m2", "undelivered")
    await store.inbox.finish("discord", "nope", "answered")
    with pytest.raises(ValueError, match="pending"):
        await store.inbox.finish("discord", "m3", "pending")  # type: ignore[arg-type]

    assert state(path, "discord", "m1") == ("answered", 1)
    assert state(path, "discord", "m2") == ("undelivered", 1)
    recovered = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S)
    assert [e.event_id for e in recovered] == ["m3"]
    # Finished events are still known: a redelivery of one is a duplicate.
    assert await store.inbox.claim("discord", "m1", "discord:c1", "q", "{}") is None


async def test_recover_expires_old_events_of_every_platform(store: SqliteStore, path: Path) -> None:
    await claim(store, "m1")
    assert await store.inbox.claim("slack", "E1", "slack:c", "q", "{}") is not None

    assert await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, now=later(1)) != []
    recovered = await store.inbox.recover(platforms={"discord"}, max_age_s=60, now=later(1))

    assert recovered == []
    assert state(path, "discord", "m1")[0] == "expired"
    # Slack was not asked for, and expired all the same: nobody can answer it in time.
    assert state(path, "slack", "E1")[0] == "expired"
    assert await store.inbox.claim("discord", "m1", "discord:c1", "q", "{}") is None


async def test_recover_needs_an_aware_now(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="timezone"):
        await store.inbox.recover(platforms={"discord"}, max_age_s=60, now=datetime(2030, 1, 1))
    with pytest.raises(TypeError):
        await store.inbox.recover(platforms="discord", max_age_s=60)


async def test_recover_counts_attempts_then_quarantines(
    store: SqliteStore, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    claimed = await claim(store, "m1")
    await store.inbox.record_reply("discord", "m1", "reply-1")

    (event,) = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=3)
    assert (event.platform, event.event_id, event.conversation) == ("discord", "m1", "discord:c1")
    assert (event.message, event.reply_id, event.attempts) == ('{"id": "m1"}', "reply-1", 2)
    assert event.claim == claimed
    (event,) = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=3)
    assert event.attempts == 3

    with caplog.at_level(logging.WARNING, logger="bot.store.sqlite.inbox"):
        (given_up,) = await store.inbox.recover(
            platforms={"discord"}, max_age_s=DAY_S, max_attempts=3
        )
    # Handed back once, with no claim, so its author can be told; never again after that.
    assert given_up.quarantined and given_up.claim is None
    assert (given_up.event_id, given_up.reply_id, given_up.attempts) == ("m1", "reply-1", 3)
    assert await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=3) == []

    assert state(path, "discord", "m1") == ("quarantined", 3)
    (record,) = [r for r in caplog.records if "quarantined" in r.getMessage()]
    assert record.levelno == logging.WARNING
    for part in ("discord", "m1", "discord:c1", "3 attempts"):
        assert part in record.getMessage()


async def test_release_gives_back_the_attempt(store: SqliteStore, path: Path) -> None:
    await claim(store, "m1")
    await claim(store, "m2")

    # A graceful shutdown cancelled m1's first attempt: it did not crash anything.
    await store.inbox.release("discord", "m1")
    assert state(path, "discord", "m1") == ("pending", 0)
    await store.inbox.release("discord", "m1")
    assert state(path, "discord", "m1") == ("pending", 0)

    recovered = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=2)
    assert [(e.event_id, e.attempts) for e in recovered] == [("m1", 1), ("m2", 2)]
    recovered = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=2)
    assert [(e.event_id, e.attempts, e.quarantined) for e in recovered] == [
        ("m2", 2, True),
        ("m1", 2, False),
    ]
    assert state(path, "discord", "m2")[0] == "quarantined"

    await store.inbox.finish("discord", "m1", "answered")
    await store.inbox.release("discord", "m1")
    assert state(path, "discord", "m1") == ("answered", 2)


async def test_an_event_of_a_reset_conversation_is_recovered_with_a_fresh_turn(
    store: SqliteStore, path: Path
) -> None:
    old = await claim(store, "m1")
    assert await store.conversations.reset("discord:c1")
    # The inbox row outlives the reset, so a redelivery is still a duplicate.
    assert inbox_row(path, "discord", "m1") == ("pending", 1, None)
    assert await store.inbox.claim("discord", "m1", "discord:c1", "q", "{}") is None

    (event,) = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=5)

    assert event.claim is not None
    assert event.claim.turn_id > old.turn_id
    info = await store.conversations.info("discord:c1")
    assert info is not None
    assert event.claim.conversation_started == info.created_at
    transcript = await store.conversations.transcript("discord:c1")
    assert transcript is not None
    assert [(t.id, t.question, t.status) for t in transcript.turns] == [
        (event.claim.turn_id, "question m1", "pending")
    ]
    # The new turn is recorded, so the next recovery reuses it instead of adding one.
    (again,) = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=5)
    assert again.claim == event.claim


async def test_recover_returns_only_the_requested_platforms_oldest_first(
    store: SqliteStore, path: Path
) -> None:
    for event_id in ("d1", "d2", "d3"):
        await claim(store, event_id, conversation=f"discord:{event_id}")
    assert await store.inbox.claim("slack", "s1", "slack:c", "q", "{}") is not None
    assert await store.inbox.claim("terminal", "t1", "terminal:c", "q", "{}") is not None

    recovered = await store.inbox.recover(platforms=["discord", "slack"], max_age_s=DAY_S)

    assert [(e.platform, e.event_id) for e in recovered] == [
        ("discord", "d1"),
        ("discord", "d2"),
        ("discord", "d3"),
        ("slack", "s1"),
    ]
    assert [e.received_at for e in recovered] == sorted(e.received_at for e in recovered)
    assert state(path, "terminal", "t1") == ("pending", 1)
    assert await store.inbox.recover(platforms=(), max_age_s=DAY_S) == []
    assert state(path, "terminal", "t1") == ("pending", 1)


async def test_last_sources_round_trip(store: SqliteStore) -> None:
    assert await store.conversations.last_sources("discord:c1") == ()
    first = await claim(store, "m1")
    assert await store.conversations.last_sources("discord:c1") == ()

    assert await store.conversations.finish_turn(first.turn_id, "An answer [1].", sources=SOURCES)
    assert await store.conversations.last_sources("discord:c1") == SOURCES

    # The answer that came last is the one a follow-up refers to, not the newest question.
    slow = await claim(store, "m2")
    fast = await claim(store, "m3")
    assert await store.conversations.finish_turn(fast.turn_id, "fast", sources=SOURCES[1:])
    assert await store.conversations.finish_turn(slow.turn_id, "slow", sources=SOURCES[:1])
    assert await store.conversations.last_sources("discord:c1") == SOURCES[:1]

    # Callers that pass no sources (the terminal, older code) store none.
    plain = await begin_turn(store, "discord:c1", "no sources")
    assert await store.conversations.finish_turn(plain, "plain answer")
    assert await store.conversations.last_sources("discord:c1") == ()


async def test_session_returns_one_row_of_list_sessions(store: SqliteStore) -> None:
    assert await store.conversations.info("discord:c1") is None
    claimed = await claim(store, "m1")
    assert await store.conversations.finish_turn(claimed.turn_id, "answer")
    await claim(store, "m2", conversation="discord:c2")

    info = await store.conversations.info("discord:c1")

    assert info is not None
    assert (info.conversation, info.turn_count, info.has_summary) == ("discord:c1", 1, False)
    assert info.created_at == claimed.conversation_started
    assert info in await store.conversations.list_all()


async def test_transcript_marks_expired_and_quarantined_turns(store: SqliteStore) -> None:
    answered = await claim(store, "m1")
    assert await store.conversations.finish_turn(answered.turn_id, "answer")
    expired = await claim(store, "m2")
    quarantined = await claim(store, "m3")
    await store.inbox.finish("discord", "m1", "answered")
    # m2's attempt is given back, so it is kept below max_attempts and only age ends it.
    await store.inbox.release("discord", "m2")

    recovered = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=1)
    assert [(e.event_id, e.quarantined) for e in recovered] == [("m3", True), ("m2", False)]
    assert await store.inbox.recover(platforms={"discord"}, max_age_s=60, now=later(1)) == []
    pending = await begin_turn(store, "discord:c1", "pending, still being answered")

    transcript = await store.conversations.transcript("discord:c1")
    assert transcript is not None
    assert [(t.id, t.status) for t in transcript.turns] == [
        (answered.turn_id, "answered"),
        (expired.turn_id, "expired"),
        (quarantined.turn_id, "quarantined"),
        (pending, "pending"),
    ]
    # load() is what prompts are built from: answered turns only, as before.
    assert [t.id for t in (await store.conversations.load("discord:c1")).turns] == [
        answered.turn_id
    ]


async def test_recover_leaves_events_taken_after_the_process_started(
    store: SqliteStore, path: Path
) -> None:
    await claim(store, "before")
    started = datetime.now(UTC)
    await claim(store, "after")  # a live turn of this process is answering it
    recovered = await store.inbox.recover(
        platforms={"discord"}, max_age_s=DAY_S, max_attempts=1, received_before=started
    )
    # "before" had used its one attempt: given up, and handed back once to say so.
    assert [(e.event_id, e.quarantined) for e in recovered] == [("before", True)]
    assert state(path, "discord", "before") == ("quarantined", 1)
    assert state(path, "discord", "after") == ("pending", 1), "neither taken nor quarantined"
    with pytest.raises(ValueError):
        await store.inbox.recover(
            platforms={"discord"}, max_age_s=DAY_S, received_before=started.replace(tzinfo=None)
        )


# ----------------------------------------------------------------------------- feedback (v3)


async def test_feedback_is_one_vote_per_reader_and_goes_with_its_turn(store: SqliteStore) -> None:
    got = await claim(store, "Ev-fb", "slack:T:C:1.0")
    await store.conversations.finish_turn(got.turn_id, "an answer")
    assert await store.feedback.record("discord", "Ev-fb", "U1", "up")
    assert await store.feedback.record("discord", "Ev-fb", "U2", "down")
    assert await store.feedback.record("discord", "Ev-fb", "U2", "up"), "a second click replaces"
    assert not await store.feedback.record("discord", "Ev-unknown", "U1", "up")
    transcript = await store.conversations.transcript("slack:T:C:1.0")
    assert transcript is not None
    assert (transcript.turns[0].feedback_up, transcript.turns[0].feedback_down) == (2, 0)
    info = await store.conversations.info("slack:T:C:1.0")
    assert info is not None and (info.feedback_up, info.feedback_down) == (2, 0)
    with pytest.raises(ValueError, match="up or down"):
        await store.feedback.record("discord", "Ev-fb", "U1", "meh")  # type: ignore[arg-type]
    await store.conversations.reset("slack:T:C:1.0")
    assert not await store.feedback.record("discord", "Ev-fb", "U1", "up"), "the turn is gone"
