"""Shard leases on a real Redis: replicas split the shards, never share one, and take over a dead one's."""

from __future__ import annotations

import asyncio

from services.alerts.leases import Lease, Ownership


async def rounds(owners, n: int = 4) -> None:
    for _ in range(n):
        for owner in owners:
            await owner.balance()


async def test_replicas_split_the_shards_and_take_over_a_dead_ones(redis_client):
    owners = [Ownership(redis_client, f"r{i}", shards=16, ttl_s=1.0) for i in range(3)]
    await rounds(owners)
    held = [set(o.held) for o in owners]
    assert set().union(*held) == set(range(16))  # every shard has an owner...
    assert sum(len(h) for h in held) == 16  # ...and only one
    assert sorted(len(h) for h in held) == [5, 5, 6]  # 16 // 3 each, one more for the first by id
    # r0 dies without a word: after its leases expire, the other two hold everything between them.
    await asyncio.sleep(1.1)
    await rounds(owners[1:])
    assert set(owners[1].held) | set(owners[2].held) == set(range(16))
    assert not set(owners[1].held) & set(owners[2].held)
    # A stopping replica hands its shards over at once.
    await owners[1].leave()
    await rounds(owners[2:], 1)
    assert set(owners[2].held) == set(range(16))


async def test_a_replica_that_joins_late_gets_its_share(redis_client):
    """Four shards, two replicas holding two each, then a third: before, each kept ceil(4 / 3) = 2
    and the newcomer got nothing to do."""
    owners = [Ownership(redis_client, f"r{i}", shards=4, ttl_s=5.0) for i in range(2)]
    await rounds(owners)
    assert sorted(len(o.held) for o in owners) == [2, 2]
    owners.append(Ownership(redis_client, "r2", shards=4, ttl_s=5.0))
    await rounds(owners)
    held = [set(o.held) for o in owners]
    assert [len(h) for h in held] == [2, 1, 1] and set().union(*held) == set(range(4))


async def test_a_lease_is_held_by_one_owner_at_a_time(redis_client):
    a, b = (Lease(redis_client, "notify:test", name, ttl_s=0.5) for name in ("a", "b"))
    assert await a.acquire_or_renew() and not await b.acquire_or_renew()
    assert a.held and not b.held
    await asyncio.sleep(0.6)  # a stopped renewing
    assert not a.held and await b.acquire_or_renew()
    assert not await a.acquire_or_renew()  # a's late renewal must not steal it back
