"""What replicas share besides the inbox, on both backends: per-user rate buckets, who is
alive, who runs which shard. Two stores on one database stand for two replicas."""

from __future__ import annotations

import asyncio

from tests.databases import TEST_LEASE_S, Backend


async def test_a_users_bucket_is_one_bucket_across_replicas(backend: Backend) -> None:
    one, two = await backend.open(), await backend.open()

    waits = [
        await store.rate_limits.take("slack:UALICE", per_minute=6, burst=3)
        for store in (one, two, one, two)
    ]

    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 9.0 < waits[3] <= 10.0, "the fourth question waits for a token at 6 a minute"
    assert await two.rate_limits.take("slack:UBOB", per_minute=6, burst=3) == 0.0


async def test_concurrent_takes_never_spend_one_token_twice(backend: Backend) -> None:
    replicas = [await backend.open() for _ in range(3)]

    waits = await asyncio.gather(
        *(r.rate_limits.take("k", per_minute=1, burst=5) for r in replicas for _ in range(4))
    )

    assert sum(1 for w in waits if w == 0.0) == 5


async def test_replicas_count_each_other_and_forget_the_silent(backend: Backend) -> None:
    one, two = await backend.open(lease_s=0.5), await backend.open(lease_s=0.5)
    assert await one.replicas.beat() == 1
    assert await two.replicas.beat() == 2
    assert await one.replicas.beat() == 2

    await two.replicas.leave()  # a clean stop says so: its share goes at once
    assert await one.replicas.beat() == 1
    await two.replicas.beat()
    assert await one.replicas.beat() == 2
    await asyncio.sleep(0.6)  # two went silent (it died); one goes on beating
    assert await one.replicas.beat() == 1


async def test_shards_are_shared_out_taken_over_and_given_back(backend: Backend) -> None:
    first = await backend.open(lease_s=60)
    second = await backend.open(lease_s=TEST_LEASE_S)

    assert await first.shards.hold("discord", 2, want=2) == {0, 1}
    assert await second.shards.hold("discord", 2, want=1) == set(), "both are held"
    # A replica joined: the first gives one back, and the second takes it.
    assert await first.shards.hold("discord", 2, want=1) == {0}
    assert await second.shards.hold("discord", 2, want=1) == {1}

    # The second stops renewing (it died): its shard goes to the first.
    await asyncio.sleep(TEST_LEASE_S * 2)
    assert await first.shards.hold("discord", 2, want=2) == {0, 1}

    await first.shards.release("discord")
    assert await second.shards.hold("discord", 2, want=2) == {0, 1}
    # A smaller shard count drops the shards beyond it.
    assert await second.shards.hold("discord", 1, want=1) == {0}
