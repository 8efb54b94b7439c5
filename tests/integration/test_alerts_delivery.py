"""The outbox worker against a real Redis and a local HTTP receiver: 4xx to the dead-letter list,
5xx retried, an unreadable entry never kills the worker, a dead worker's entry is recovered."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import REGISTRY

from services.alerts.notify import DEAD_KEY, OUTBOX_KEY, Receiver
from tests.webhook_receiver import WebhookReceiver


@pytest.fixture
def http():
    servers = []

    def make(statuses):
        servers.append(WebhookReceiver(statuses))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def event(n: int) -> bytes:
    return json.dumps({"id": f"X-USD|r|{n}|ALERT", "time_ms": n, "symbol": "X-USD", "rule": "r", "from": "OK",
                       "to": "ALERT", "grade": "ALERT", "value": 1.0, "message": f"event {n}",
                       "notified": True}).encode()


async def until(predicate, timeout: float = 10.0) -> bool:
    """Poll a predicate (plain or async) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        result = predicate()
        if await result if asyncio.iscoroutine(result) else result:
            return True
        await asyncio.sleep(0.05)
    return False


async def run_worker(receiver: Receiver, work):
    task = asyncio.create_task(receiver.run())
    try:
        await work()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_4xx_is_dead_lettered_5xx_retried_and_junk_never_kills_the_worker(redis_client, http):
    server = http([400, 503, 503])
    receiver = Receiver("webhook", server.url, redis_client, "w1", timeout_s=2, backoff_s=0.05, lease_ttl_s=2)
    key = OUTBOX_KEY.format("webhook")
    await redis_client.lpush(key, event(1), b"{not json", event(2))  # oldest first: 1, junk, 2
    before = REGISTRY.get_sample_value("cryptolens_notifications_dead_letters_total", {"receiver": "webhook"}) or 0

    async def work():
        assert await until(lambda: _empty(redis_client, key))
        assert await until(lambda: len(server.bodies) == 1)

    await run_worker(receiver, work)
    # event 1 was refused (400) → dead letter; the junk entry → dead letter; event 2 got 503 twice, then 200.
    assert [b["id"] for b in server.bodies] == ["X-USD|r|2|ALERT"]
    dead = await redis_client.lrange(DEAD_KEY.format("webhook"), 0, -1)
    assert dead == [b"{not json", event(1)]
    assert REGISTRY.get_sample_value("cryptolens_notifications_dead_letters_total",
                                     {"receiver": "webhook"}) == before + 2
    assert await redis_client.llen(receiver.processing) == 0


async def test_a_dead_workers_entry_is_recovered_and_delivered_once(redis_client, http):
    server = http([])
    key = OUTBOX_KEY.format("webhook")
    # Worker w0 took event 7 into its processing list and died before acknowledging it.
    await redis_client.lpush(f"{key}:processing:w0", event(7))
    await redis_client.sadd(f"{key}:workers", "w0")
    await redis_client.lpush(key, event(8))
    receiver = Receiver("webhook", server.url, redis_client, "w1", timeout_s=2, backoff_s=0.05, lease_ttl_s=2)

    async def work():
        assert await until(lambda: len(server.bodies) == 2)
        await asyncio.sleep(0.3)

    await run_worker(receiver, work)
    assert [b["id"] for b in server.bodies] == ["X-USD|r|7|ALERT", "X-USD|r|8|ALERT"]  # recovered first, in order
    assert await redis_client.llen(f"{key}:processing:w0") == 0
    assert await redis_client.smembers(f"{key}:workers") == {b"w1"}


async def test_only_the_lease_holder_delivers(redis_client, http):
    server = http([])
    key = OUTBOX_KEY.format("webhook")
    for n in range(20):
        await redis_client.lpush(key, event(n))
    workers = [Receiver("webhook", server.url, redis_client, f"w{i}", timeout_s=2, lease_ttl_s=2) for i in range(3)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        assert await until(lambda: len(server.bodies) == 20)
        await asyncio.sleep(0.3)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert [b["id"] for b in server.bodies] == [f"X-USD|r|{n}|ALERT" for n in range(20)]  # once each, in order


async def _empty(redis_client, key) -> bool:
    return await redis_client.llen(key) == 0
