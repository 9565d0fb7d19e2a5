"""The order of a conversation's turns: one at a time, earliest received first, across
replicas. Two stores on one database stand for two replicas (both backends)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.adapters.inmemory import InMemoryAdapter
from bot.intake.order import MAX_POLL_S, ConversationOrder
from bot.store import Claim, Store
from tests.databases import TEST_LEASE_S, Backend

DAY_S = 86_400.0


async def claim(store: Store, event_id: str) -> Claim:
    got = await store.inbox.claim("inmemory", event_id, "inmemory:general", "q", "{}")
    assert got is not None
    return got


def finishing_turns(
    order: ConversationOrder, store: Store, ran: list[str]
) -> Callable[[str, Claim], Coroutine[Any, Any, None]]:
    """A turn that records that it ran, then marks its event answered, as StartTurn does."""
    adapter = InMemoryAdapter()

    async def turn(event_id: str, held: Claim) -> None:
        async with order.turn(adapter.message("q", event_id=event_id), held):
            ran.append(event_id)
            await asyncio.sleep(0.05)
            assert await store.inbox.finish("inmemory", event_id, "answered", fence=held.fence)

    return turn


async def test_a_turn_waits_for_an_earlier_question_held_elsewhere_then_yields_to_it(
    backend: Backend,
) -> None:
    here = await backend.open(lease_s=60)
    there = await backend.open()  # its lease is short: it "dies" at once
    first = await claim(there, "e1")
    second = await claim(here, "e2")
    order = ConversationOrder(here.inbox, shared=True)
    ran: list[str] = []

    turn = finishing_turns(order, here, ran)

    later = asyncio.create_task(turn("e2", second))
    await asyncio.sleep(0.3)
    assert ran == [], "e1 is unanswered on another replica: e2 waits"

    # That replica died; this one takes e1 over, and e1 goes first though it came last.
    await asyncio.sleep(TEST_LEASE_S * 2)
    (taken,) = await here.inbox.recover(platforms=["inmemory"], max_age_s=DAY_S)
    assert taken.claim is not None and taken.claim.received_at == first.received_at
    await asyncio.sleep(MAX_POLL_S + 0.2)  # e2 looks at the store meanwhile
    assert ran == [], "e1 is this replica's now, though not queued yet: e2 still waits"
    earlier = asyncio.create_task(turn("e1", taken.claim))
    await asyncio.wait_for(asyncio.gather(earlier, later), 10)

    assert ran == ["e1", "e2"]


async def test_a_turn_waits_for_an_earlier_question_this_replica_took_but_has_not_queued(
    backend: Backend,
) -> None:
    # Between its claim and its turn joining the queue, a question is on its way through
    # the intake (the queue notice, a task to start): a later question of the conversation,
    # taken by this replica meanwhile, must not overtake it.
    here = await backend.open(lease_s=60)
    first = await claim(here, "e1")
    second = await claim(here, "e2")
    order = ConversationOrder(here.inbox, shared=True)
    ran: list[str] = []

    turn = finishing_turns(order, here, ran)

    later = asyncio.create_task(turn("e2", second))
    await asyncio.sleep(0.3)
    assert ran == [], "e1 was taken first, here: e2 waits for it"

    earlier = asyncio.create_task(turn("e1", first))
    await asyncio.wait_for(asyncio.gather(earlier, later), 10)
    assert ran == ["e1", "e2"]


async def test_alone_turns_of_one_conversation_run_one_at_a_time_in_arrival_order(
    backend: Backend,
) -> None:
    adapter = InMemoryAdapter()
    store = await backend.open()
    order = ConversationOrder(store.inbox, shared=False)
    claims = [await claim(store, f"e{n}") for n in range(4)]
    running = 0
    ran: list[str] = []

    async def turn(n: int) -> None:
        nonlocal running
        async with order.turn(adapter.message("q", event_id=f"e{n}"), claims[n]):
            running += 1
            assert running == 1
            ran.append(f"e{n}")
            await asyncio.sleep(0.01)
            running -= 1

    # Handed in out of order (a recovered one last): run in the order received.
    await asyncio.gather(*(turn(n) for n in (0, 2, 1, 3)))

    assert ran == ["e0", "e1", "e2", "e3"]


async def test_a_turn_waits_for_an_earlier_answer_still_being_delivered_by_any_replica(
    backend: Backend,
) -> None:
    adapter = InMemoryAdapter()
    here = await backend.open(lease_s=60)
    there = await backend.open()  # its lease is short: it "dies" at once
    first = await claim(there, "e1")
    second = await claim(here, "e2")
    # The dead replica had its answer to e1 but had not posted it.
    assert await there.inbox.hold(
        "inmemory",
        "e1",
        "the answer",
        deliver_by=datetime.now(UTC) + timedelta(hours=1),
        fence=first.fence,
    )
    order = ConversationOrder(here.inbox, shared=True)
    ran: list[str] = []

    async def turn() -> None:
        async with order.turn(adapter.message("q", event_id="e2"), second):
            ran.append("e2")

    later = asyncio.create_task(turn())
    await asyncio.sleep(TEST_LEASE_S * 2)
    (taken,) = await here.inbox.recover(platforms=["inmemory"], max_age_s=DAY_S)
    assert taken.reply == "the answer"
    await asyncio.sleep(0.3)
    assert ran == [], "e1's answer is held here now, not yet posted: e2 still waits"

    assert await here.inbox.finish("inmemory", "e1", "answered", fence=taken.fence)
    await asyncio.wait_for(later, 10)
    assert ran == ["e2"]
