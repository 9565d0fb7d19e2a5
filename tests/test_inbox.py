"""The inbox's behaviour, the same on both backends: real SQLite files and a real
PostgreSQL server (``backend`` runs each test once per backend).

A "process" here is a store opened on the test's data; a crash is a store closed without
finishing its events (:meth:`Backend.restart` opens the next one).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from bot.contract import Source
from bot.errors import StoreError
from bot.store import Claim, Store
from tests.databases import TEST_LEASE_S, Backend
from tests.store_helpers import begin_turn

# Far enough that nothing a test claims is old; expiry tests move ``now`` instead.
DAY_S = 86_400.0

SOURCES = (
    Source(1, "SQLite", "https://en.wikipedia.org/wiki/SQLite", "wikipedia", 0.91, cited=True),
    Source(2, "Show HN: ünïcødé", "https://news.ycombinator.com/item?id=1", "hackernews", 0.5),
)


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open()


async def inbox_row(backend: Backend, platform: str, event_id: str) -> tuple[object, ...] | None:
    return await backend.row(
        "SELECT status, attempts, turn_id FROM inbox WHERE platform = ? AND event_id = ?",
        platform,
        event_id,
    )


async def state(backend: Backend, platform: str, event_id: str) -> tuple[str, int]:
    """``(status, attempts)`` of an event that must exist."""
    row = await inbox_row(backend, platform, event_id)
    assert row is not None, f"no inbox row for {platform} {event_id}"
    return str(row[0]), int(str(row[1]))


async def reply_id(backend: Backend, platform: str, event_id: str) -> str | None:
    row = await backend.row(
        "SELECT reply_id FROM inbox WHERE platform = ? AND event_id = ?", platform, event_id
    )
    return None if row is None else row[0]


async def claim(store: Store, event_id: str, conversation: str = "discord:c1") -> Claim:
    got = await store.inbox.claim(
        "discord", event_id, conversation, f"question {event_id}", f'{{"id": "{event_id}"}}'
    )
    assert got is not None
    return got


async def count(backend: Backend, table: str) -> int:
    row = await backend.row(f"SELECT COUNT(*) FROM {table}")
    assert row is not None
    return int(str(row[0]))


def later(hours: float = 1) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


# ------------------------------------------------------------------------------- claims


async def test_claim_creates_the_turn_and_a_duplicate_writes_nothing(
    store: Store, backend: Backend
) -> None:
    first = await store.inbox.claim("discord", "m1", "discord:c1", "What is SQLite?", '{"a": 1}')
    again = await store.inbox.claim("discord", "m1", "discord:c1", "What is SQLite?", '{"a": 1}')
    # The key is the event alone: a redelivery that looks different is still the same event.
    other = await store.inbox.claim("discord", "m1", "discord:c2", "something else", "{}")

    assert first is not None
    assert first.fence == 1
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
    assert await inbox_row(backend, "discord", "m1") == ("pending", 1, first.turn_id)
    assert await count(backend, "turns") == 1


async def test_the_same_event_id_on_another_platform_is_another_event(store: Store) -> None:
    assert await store.inbox.claim("discord", "1", "discord:c", "q", "{}") is not None
    assert await store.inbox.claim("slack", "1", "slack:c", "q", "{}") is not None


async def test_twenty_concurrent_claims_of_one_event_give_one_claim(
    store: Store, backend: Backend
) -> None:
    results = await asyncio.gather(
        *(store.inbox.claim("slack", "Ev1", "slack:T:C", "q", "{}") for _ in range(20))
    )

    assert len([r for r in results if r is not None]) == 1
    assert await count(backend, "turns") == 1


async def test_three_replicas_claiming_one_event_give_one_claim(backend: Backend) -> None:
    replicas = [await backend.open() for _ in range(3)]
    results = await asyncio.gather(
        *(
            store.inbox.claim("discord", "m1", "discord:c1", "q", "{}")
            for _ in range(10)
            for store in replicas
        )
    )

    assert len([r for r in results if r is not None]) == 1
    assert await count(backend, "turns") == 1
    assert await count(backend, "inbox") == 1


async def test_a_failed_claim_leaves_no_trace_and_can_be_retried(
    store: Store, backend: Backend
) -> None:
    # The turn INSERT fails after the inbox row was written in the same transaction; a
    # surviving inbox row would turn the retry into a "duplicate".
    with pytest.raises(StoreError):
        await store.inbox.claim("discord", "m1", "discord:c1", b"not text", "{}")  # type: ignore[arg-type]

    assert await inbox_row(backend, "discord", "m1") is None
    assert await store.conversations.info("discord:c1") is None
    assert await store.inbox.claim("discord", "m1", "discord:c1", "q", "{}") is not None


async def test_an_event_handled_without_a_turn_is_never_claimed(store: Store) -> None:
    # A refusal (rate limit) or a hint was sent for it: a redelivery, on any replica,
    # must not turn it into a question after all.
    assert await store.inbox.handled("slack", "E1")
    assert await store.inbox.claim("slack", "E1", "slack:c", "q", "{}") is None
    assert not await store.inbox.handled("slack", "E1")


async def test_begin_turn_still_works_alongside_claims(store: Store) -> None:
    claimed = await claim(store, "m1")
    begun = await begin_turn(store, "discord:c1", "from the terminal")

    assert begun > claimed.turn_id
    info = await store.conversations.info("discord:c1")
    assert info is not None
    assert info.turn_count == 2


async def test_record_reply_and_reply_id(store: Store, backend: Backend) -> None:
    await claim(store, "m1")

    assert await reply_id(backend, "discord", "m1") is None
    assert await store.inbox.record_reply("discord", "m1", "reply-1")
    assert await reply_id(backend, "discord", "m1") == "reply-1"
    assert await store.inbox.record_reply("discord", "m1", "reply-2")
    assert await reply_id(backend, "discord", "m1") == "reply-2"

    assert not await store.inbox.record_reply("discord", "unknown", "reply-3")
    assert await reply_id(backend, "discord", "unknown") is None
    assert await reply_id(backend, "slack", "m1") is None


# --------------------------------------------------------------------- after a crash


async def test_finished_events_are_not_recovered(store: Store, backend: Backend) -> None:
    await claim(store, "m1")
    await claim(store, "m2")
    await claim(store, "m3")

    assert await store.inbox.finish("discord", "m1", "answered")
    assert await store.inbox.finish("discord", "m2", "undelivered")
    assert not await store.inbox.finish("discord", "nope", "answered")
    with pytest.raises(ValueError, match="pending"):
        await store.inbox.finish("discord", "m3", "pending")  # type: ignore[arg-type]

    assert await state(backend, "discord", "m1") == ("answered", 1)
    assert await state(backend, "discord", "m2") == ("undelivered", 1)
    restarted = await backend.restart(store)
    recovered = await restarted.inbox.recover(platforms={"discord"}, max_age_s=DAY_S)
    assert [e.event_id for e in recovered] == ["m3"]
    # Finished events are still known: a redelivery of one is a duplicate.
    assert await restarted.inbox.claim("discord", "m1", "discord:c1", "q", "{}") is None


async def test_a_process_never_takes_over_its_own_events(store: Store, backend: Backend) -> None:
    await claim(store, "m1")
    await asyncio.sleep(TEST_LEASE_S * 2)  # even with its lease run out: its turn runs here
    assert await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S) == []
    assert await state(backend, "discord", "m1") == ("pending", 1)


async def test_recover_expires_old_events_of_every_platform(store: Store, backend: Backend) -> None:
    await claim(store, "m1")
    assert await store.inbox.claim("slack", "E1", "slack:c", "q", "{}") is not None
    restarted = await backend.restart(store)

    recovered = await restarted.inbox.recover(platforms={"discord"}, max_age_s=60, now=later(1))

    assert recovered == []
    assert (await state(backend, "discord", "m1"))[0] == "expired"
    # Slack was not asked for, and expired all the same: nobody can answer it in time.
    assert (await state(backend, "slack", "E1"))[0] == "expired"
    assert await restarted.inbox.claim("discord", "m1", "discord:c1", "q", "{}") is None


async def test_recover_needs_an_aware_now(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone"):
        await store.inbox.recover(platforms={"discord"}, max_age_s=60, now=datetime(2030, 1, 1))
    with pytest.raises(TypeError):
        await store.inbox.recover(platforms="discord", max_age_s=60)


async def test_recover_counts_attempts_then_quarantines(
    store: Store, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    claimed = await claim(store, "m1")
    await store.inbox.record_reply("discord", "m1", "reply-1")

    store = await backend.restart(store)
    (event,) = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=3)
    assert (event.platform, event.event_id, event.conversation) == ("discord", "m1", "discord:c1")
    assert (event.message, event.reply_id, event.attempts) == ('{"id": "m1"}', "reply-1", 2)
    assert event.claim is not None
    assert (event.claim.turn_id, event.claim.conversation_started) == (
        claimed.turn_id,
        claimed.conversation_started,
    )
    assert event.claim.fence == event.fence == 2
    store = await backend.restart(store)
    (event,) = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=3)
    assert event.attempts == 3

    store = await backend.restart(store)
    with caplog.at_level(logging.WARNING, logger="bot.store.sql.inbox"):
        (given_up,) = await store.inbox.recover(
            platforms={"discord"}, max_age_s=DAY_S, max_attempts=3
        )
    # Handed back once, with no claim, so its author can be told; never again after that.
    assert given_up.quarantined and given_up.claim is None
    assert (given_up.event_id, given_up.reply_id, given_up.attempts) == ("m1", "reply-1", 3)
    store = await backend.restart(store)
    assert await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=3) == []

    assert await state(backend, "discord", "m1") == ("quarantined", 3)
    (record,) = [r for r in caplog.records if "quarantined" in r.getMessage()]
    assert record.levelno == logging.WARNING
    for part in ("discord", "m1", "discord:c1", "3 attempts"):
        assert part in record.getMessage()


async def test_release_gives_back_the_attempt(store: Store, backend: Backend) -> None:
    await claim(store, "m1")
    await claim(store, "m2")

    # A graceful shutdown cancelled m1's first attempt: it did not crash anything.
    assert await store.inbox.release("discord", "m1")
    assert await state(backend, "discord", "m1") == ("pending", 0)
    await store.inbox.release("discord", "m1")
    assert await state(backend, "discord", "m1") == ("pending", 0)

    store = await backend.restart(store)
    recovered = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=2)
    assert [(e.event_id, e.attempts) for e in recovered] == [("m1", 1), ("m2", 2)]
    store = await backend.restart(store)
    recovered = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=2)
    assert [(e.event_id, e.attempts, e.quarantined) for e in recovered] == [
        ("m2", 2, True),
        ("m1", 2, False),
    ]
    assert (await state(backend, "discord", "m2"))[0] == "quarantined"

    assert await store.inbox.finish("discord", "m1", "answered")
    assert not await store.inbox.release("discord", "m1")
    assert await state(backend, "discord", "m1") == ("answered", 2)


async def test_an_event_of_a_reset_conversation_is_recovered_with_a_fresh_turn(
    store: Store, backend: Backend
) -> None:
    old = await claim(store, "m1")
    assert await store.conversations.reset("discord:c1")
    # The inbox row outlives the reset, so a redelivery is still a duplicate.
    assert await inbox_row(backend, "discord", "m1") == ("pending", 1, None)
    assert await store.inbox.claim("discord", "m1", "discord:c1", "q", "{}") is None

    store = await backend.restart(store)
    (event,) = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=5)

    assert event.claim is not None
    assert event.claim.turn_id > old.turn_id
    assert event.claim.fence == 2
    info = await store.conversations.info("discord:c1")
    assert info is not None
    assert event.claim.conversation_started == info.created_at
    transcript = await store.conversations.transcript("discord:c1")
    assert transcript is not None
    assert [(t.id, t.question, t.status) for t in transcript.turns] == [
        (event.claim.turn_id, "question m1", "pending")
    ]
    # The new turn is recorded, so the next recovery reuses it instead of adding one.
    store = await backend.restart(store)
    (again,) = await store.inbox.recover(platforms={"discord"}, max_age_s=DAY_S, max_attempts=5)
    assert again.claim is not None
    assert again.claim.turn_id == event.claim.turn_id


async def test_recover_returns_only_the_requested_platforms_oldest_first(
    store: Store, backend: Backend
) -> None:
    for event_id in ("d1", "d2", "d3"):
        await claim(store, event_id, conversation=f"discord:{event_id}")
    assert await store.inbox.claim("slack", "s1", "slack:c", "q", "{}") is not None
    assert await store.inbox.claim("terminal", "t1", "terminal:c", "q", "{}") is not None

    store = await backend.restart(store)
    recovered = await store.inbox.recover(platforms=["discord", "slack"], max_age_s=DAY_S)

    assert [(e.platform, e.event_id) for e in recovered] == [
        ("discord", "d1"),
        ("discord", "d2"),
        ("discord", "d3"),
        ("slack", "s1"),
    ]
    assert [e.received_at for e in recovered] == sorted(e.received_at for e in recovered)
    assert await state(backend, "terminal", "t1") == ("pending", 1)
    assert await store.inbox.recover(platforms=(), max_age_s=DAY_S) == []
    assert await state(backend, "terminal", "t1") == ("pending", 1)


async def test_recover_leaves_events_taken_after_the_process_started(
    store: Store, backend: Backend
) -> None:
    await claim(store, "before")
    await claim(store, "after")
    store = await backend.restart(store)
    started = datetime.now(UTC)
    await claim(store, "mine")  # a live turn of this process is answering it
    recovered = await store.inbox.recover(
        platforms={"discord"}, max_age_s=DAY_S, max_attempts=1, received_before=started
    )
    # Each had used its one attempt: given up, and handed back once to say so.
    assert [(e.event_id, e.quarantined) for e in recovered] == [
        ("before", True),
        ("after", True),
    ]
    assert await state(backend, "discord", "mine") == ("pending", 1), (
        "neither taken nor quarantined"
    )
    with pytest.raises(ValueError):
        await store.inbox.recover(
            platforms={"discord"}, max_age_s=DAY_S, received_before=started.replace(tzinfo=None)
        )


# ----------------------------------------------------------------- leases and fences


async def test_a_live_replicas_events_wait_until_its_lease_runs_out(backend: Backend) -> None:
    first = await backend.open(lease_s=0.6)
    second = await backend.open(lease_s=0.6)
    claimed = await claim(first, "m1")

    # The first replica keeps renewing while its turn runs: nothing to take over.
    for _ in range(3):
        await asyncio.sleep(0.25)
        assert await first.inbox.renew() == 1
        assert await second.inbox.recover(platforms={"discord"}, max_age_s=DAY_S) == []

    # It stops renewing (it froze, or died): once the lease ran out the other takes over.
    await asyncio.sleep(0.7)
    (event,) = await second.inbox.recover(platforms={"discord"}, max_age_s=DAY_S)
    assert event.claim is not None and event.fence == event.claim.fence == 2
    assert (event.attempts, event.claim.turn_id) == (2, claimed.turn_id)

    # The first replica comes back late: its fenced writes do nothing and say so ...
    assert not await first.inbox.record_reply("discord", "m1", "late", fence=claimed.fence)
    assert not await first.inbox.hold(
        "discord", "m1", "late answer", deliver_by=later(), fence=claimed.fence
    )
    assert not await first.inbox.finish("discord", "m1", "answered", fence=claimed.fence)
    assert not await first.inbox.release("discord", "m1", fence=claimed.fence)
    assert await first.inbox.renew() == 0, "it holds nothing any more"
    assert await state(backend, "discord", "m1") == ("pending", 2)
    # ... and the new owner's go through.
    assert await second.inbox.record_reply("discord", "m1", "r2", fence=event.fence)
    assert await second.inbox.finish("discord", "m1", "answered", fence=event.fence)
    assert await state(backend, "discord", "m1") == ("answered", 2)
    assert await reply_id(backend, "discord", "m1") == "r2"


async def test_a_released_event_is_taken_at_once_by_another_replica(backend: Backend) -> None:
    first = await backend.open(lease_s=60)
    second = await backend.open(lease_s=60)
    claimed = await claim(first, "m1")
    assert await second.inbox.recover(platforms={"discord"}, max_age_s=DAY_S) == []

    # A graceful shutdown gives the lease back: no need to wait for it to run out.
    assert await first.inbox.release("discord", "m1", fence=claimed.fence)
    (event,) = await second.inbox.recover(platforms={"discord"}, max_age_s=DAY_S)
    assert (event.event_id, event.attempts, event.fence) == ("m1", 1, 2)


async def test_a_replica_shutting_down_lets_go_of_what_it_holds(backend: Backend) -> None:
    leaving = await backend.open(lease_s=60)
    staying = await backend.open(lease_s=60)
    await claim(leaving, "m1")
    await claim(leaving, "m2")
    assert await leaving.inbox.hold("discord", "m2", "held", deliver_by=later())
    await claim(staying, "m3")

    assert await leaving.inbox.let_go() == 2
    taken = await staying.inbox.recover(platforms={"discord"}, max_age_s=DAY_S)

    assert sorted((e.event_id, e.reply) for e in taken) == [("m1", None), ("m2", "held")]
    assert await leaving.inbox.renew() == 0


async def test_replicas_recovering_together_take_each_event_once(backend: Backend) -> None:
    crashed = await backend.open()
    for n in range(12):
        await claim(crashed, f"m{n}", conversation=f"discord:c{n % 3}")
    await crashed.close()
    await asyncio.sleep(TEST_LEASE_S * 2)
    replicas = [await backend.open(lease_s=60) for _ in range(3)]

    taken = await asyncio.gather(
        *(r.inbox.recover(platforms={"discord"}, max_age_s=DAY_S) for r in replicas)
    )

    events = sorted(e.event_id for batch in taken for e in batch)
    assert events == sorted(f"m{n}" for n in range(12))
    for replica in replicas:
        await replica.inbox.renew()
    assert await count(backend, "turns") == 12


async def test_a_held_answer_goes_to_whoever_takes_the_event_over(backend: Backend) -> None:
    first = await backend.open()
    claimed = await claim(first, "m1")
    deliver_by = later(1)
    assert await first.inbox.hold(
        "discord", "m1", "the answer", deliver_by=deliver_by, fence=claimed.fence
    )
    assert await state(backend, "discord", "m1") == ("delivering", 1)

    second = await backend.restart(first)
    (event,) = await second.inbox.recover(platforms={"discord"}, max_age_s=DAY_S)
    assert (event.reply, event.claim, event.attempts, event.fence) == ("the answer", None, 1, 2)
    assert event.deliver_by == deliver_by
    assert not await second.inbox.finish("discord", "m1", "answered", fence=1)
    assert await second.inbox.finish("discord", "m1", "answered", fence=event.fence)


# ------------------------------------------------------------------ the queue, the backlog


async def test_ahead_counts_the_unanswered_events_before_one(backend: Backend) -> None:
    here = await backend.open(lease_s=60)
    there = await backend.open(lease_s=60)
    await claim(here, "a")
    await claim(there, "b")
    await claim(here, "c")
    await claim(here, "other", conversation="discord:c2")
    await claim(there, "d")

    # Whichever replica holds them, this one's included.
    assert [await here.inbox.ahead("discord", e) for e in "abcd"] == [0, 1, 2, 3]
    assert [await there.inbox.ahead("discord", e) for e in "abcd"] == [0, 1, 2, 3]
    assert [await here.inbox.ahead("discord", e, delivering=True) for e in "abcd"] == [0, 1, 2, 3]
    assert await here.inbox.ahead("discord", "other") == 0
    assert await here.inbox.ahead("discord", "unknown") == 0

    # Answered (or held for delivery) no longer counts: the next one may run.
    assert await here.inbox.finish("discord", "a", "answered")
    assert await there.inbox.hold("discord", "b", "held", deliver_by=later())
    assert await there.inbox.ahead("discord", "d") == 1
    # For the order an answer not yet posted still goes first, whoever holds it.
    assert await there.inbox.ahead("discord", "d", delivering=True) == 2


async def test_ahead_orders_the_events_of_one_moment_as_the_order_gate_does(
    backend: Backend,
) -> None:
    store = await backend.open(lease_s=60)
    if backend.shared:
        # A database whose text follows a language's collation (an ICU or glibc locale)
        # sorts "Eva" before "EvB"; by code point it is the other way round.
        for column in ("platform", "event_id"):
            await backend.rows(
                f'ALTER TABLE inbox ALTER COLUMN {column} TYPE TEXT COLLATE "und-x-icu"'
            )
        assert await backend.row("SELECT 'Eva' < 'EvB' COLLATE \"und-x-icu\"") == (True,)
    await claim(store, "Eva")
    await claim(store, "EvB")
    await backend.rows("UPDATE inbox SET received_at = (SELECT MIN(received_at) FROM inbox)")

    # The gate's local queue sorts (received_at, platform, event_id) in Python.
    assert sorted(["Eva", "EvB"]) == ["EvB", "Eva"]
    assert [await store.inbox.ahead("discord", e) for e in ("EvB", "Eva")] == [0, 1]


async def test_backlog_counts_what_is_taken_and_not_finished(store: Store) -> None:
    assert (await store.inbox.backlog()).events == 0
    first = await claim(store, "m1")
    await claim(store, "m2")
    await claim(store, "m3")
    assert await store.inbox.hold("discord", "m2", "r", deliver_by=later())
    assert await store.inbox.finish("discord", "m3", "answered")

    backlog = await store.inbox.backlog()

    assert backlog.events == 2
    assert backlog.oldest is not None
    assert abs(backlog.oldest - first.conversation_started) < timedelta(seconds=1)


# ------------------------------------------------------------------- conversations


async def test_last_sources_round_trip(store: Store) -> None:
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


async def test_info_is_one_row_of_list_all(store: Store) -> None:
    assert await store.conversations.info("discord:c1") is None
    claimed = await claim(store, "m1")
    assert await store.conversations.finish_turn(claimed.turn_id, "answer")
    await claim(store, "m2", conversation="discord:c2")

    info = await store.conversations.info("discord:c1")

    assert info is not None
    assert (info.conversation, info.turn_count, info.has_summary) == ("discord:c1", 1, False)
    assert info.created_at == claimed.conversation_started
    assert info in await store.conversations.list_all()


async def test_transcript_marks_expired_and_quarantined_turns(
    store: Store, backend: Backend
) -> None:
    answered = await claim(store, "m1")
    assert await store.conversations.finish_turn(answered.turn_id, "answer")
    expired = await claim(store, "m2")
    quarantined = await claim(store, "m3")
    await store.inbox.finish("discord", "m1", "answered")
    # m2's attempt is given back, so it is kept below max_attempts and only age ends it.
    await store.inbox.release("discord", "m2")

    store = await backend.restart(store)
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


async def test_feedback_is_one_vote_per_reader_and_goes_with_its_turn(store: Store) -> None:
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
