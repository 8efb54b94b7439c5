"""Outbox metrics on a replica that does not deliver: it exports the true depth, never a frozen one."""

from __future__ import annotations

import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from services.alerts.leases import Lease
from services.alerts.notify import OUTBOX_KEY, Receiver
from tests.conftest import RedisServer
from tests.integration.test_alerts_delivery import event, run_worker, until

NAME = "standby"  # a receiver name of its own: the gauge is per process and receiver


def depth() -> float | None:
    return REGISTRY.get_sample_value("cryptolens_notification_outbox", {"receiver": NAME})


async def test_a_replica_without_the_lease_exports_the_outbox_depth(tmp_path):
    """Before, only the lease holder set the gauge: a standby (or former holder) showed nothing or
    the depth of when it last held the lease, and max() across replicas hid a drained outbox."""
    redis = RedisServer(tmp_path)
    redis.start()
    client = aioredis.from_url(redis.url)
    try:
        assert await Lease(client, f"notify:{NAME}", "w0", ttl_s=60).acquire_or_renew()  # another replica delivers
        key = OUTBOX_KEY.format(NAME)
        await client.lpush(key, event(1), event(2), event(3))
        standby = Receiver(NAME, "http://127.0.0.1:9/hook", client, "w1", lease_ttl_s=0.4)

        async def work():
            assert await until(lambda: depth() == 3), depth()
            await client.rpop(key)  # the holder delivered one
            assert await until(lambda: depth() == 2), depth()

        await run_worker(standby, work)
        assert await client.llen(key) == 2  # the standby delivered nothing
    finally:
        await client.aclose()
        redis.stop()
