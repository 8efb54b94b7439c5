"""Fetch, Core and Alerts on a real 3-master Redis Cluster (3 replicas, AOF fsync every second).

The services find the cluster from ``redis+cluster://`` seed nodes, answer GetBars, GetStats and
Evaluate, and keep answering after the master holding BTC-USD is killed with -9: while the cluster
fails over the calls answer OK or UNAVAILABLE, never UNKNOWN or INTERNAL, and within a bound they
are all OK again, with everything written before the last fsync/replication second still there.
The in-process test drives every multi-key operation (store transaction, update events, the alert
commit script with its outboxes, dead letters, leases) through a cluster client: each would be
refused with CROSSSLOT or a blocked pipelined command if its keys spanned slots.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from redis.cluster import ClusterNode as SyncClusterNode
from redis.cluster import RedisCluster as SyncRedisCluster

import grpc

from cryptolens.v1 import fetch_pb2
from services.alerts.engine import HISTORY_KEY, STATE_KEY, AlertEngine
from services.alerts.leases import Lease
from services.alerts.notify import Receiver
from services.common.bars import make_bars
from services.common.redis_client import redis_client
from services.common.series import SeriesSource
from services.common.store import UPDATES_CHANNEL, PriceStore, series_key
from services.fetch.lease import Leases
from tests.integration.redis_topologies import LocalCluster, serving_stack, wait_until
from tests.integration.services import metric

HOUR = 3_600_000
RECOVERY_BOUND_S = 20  # failover done → every call OK again


@pytest.fixture
def cluster(tmp_path):
    topology = LocalCluster(tmp_path / "cluster")
    try:
        yield topology.start()
    finally:
        topology.stop()


def sync_client(cluster: LocalCluster) -> SyncRedisCluster:
    return SyncRedisCluster(startup_nodes=[SyncClusterNode("127.0.0.1", n.port) for n in cluster.nodes[:3]],
                            socket_timeout=2)


@pytest.mark.timeout(90)
def test_services_answer_on_a_cluster_and_recover_from_a_killed_master(cluster, tmp_path):
    with serving_stack(cluster.url, tmp_path) as (stack, calls):
        db = sync_client(cluster)
        masters = {cluster.master_of(series_key(s, "1h", "meta")).port for s in ("BTC-USD", "ETH-USD", "SOL-USD")}
        assert len(masters) >= 2, "the three series should be spread over the cluster's masters"
        meta_key = series_key("BTC-USD", "1h", "meta")
        wait_until(lambda: db.hlen(STATE_KEY) > 0, 20, "alert states committed")
        markers = {f"cl:test:marker:{i}": str(i) for i in range(50)}  # spread over every master
        for key, value in markers.items():
            db.set(key, value)
        before_count = int(db.hget(meta_key, "count"))
        before_states = db.hlen(STATE_KEY)
        time.sleep(1.5)  # past appendfsync everysec and the replication of these writes

        victim = cluster.master_of(meta_key)
        victim.kill()
        started = killed_at = time.monotonic()
        while time.monotonic() - started < 1.5:  # calls while the master is down, before failover
            calls.all_ok()
            time.sleep(0.1)
        cluster.wait_failover(victim, timeout=30)
        took = calls.until_all_ok(RECOVERY_BOUND_S)
        print(f"kill → every call OK: {time.monotonic() - killed_at:.1f} s")
        print(f"failover → all OK after {took:.1f} s; statuses seen {calls.codes}")

        assert calls.unexpected_codes() == {}
        db = sync_client(cluster)  # a fresh client: the old one may still point at the dead node
        assert {k: v.decode() for k, v in zip(markers, db.mget_nonatomic(list(markers)))} == markers
        assert int(db.hget(meta_key, "count")) >= before_count
        assert db.hlen(STATE_KEY) >= before_states
        version = int(db.hget(meta_key, "version"))
        wait_until(lambda: int(db.hget(meta_key, "version")) > version, 15, "Fetch writing to the promoted master")
        for name in ("fetch", "core", "alerts"):
            assert stack[name].proc.poll() is None, f"{name} died:\n{stack[name].log()[-2000:]}"


@pytest.mark.timeout(90)
def test_a_whole_cluster_down_is_unavailable_then_back_from_its_aof(cluster, tmp_path):
    """Every node killed -9, then restarted on its data: UNAVAILABLE meanwhile (never INTERNAL), an
    open WatchBars stream pauses and goes on, and the data written before the kill is back."""
    with serving_stack(cluster.url, tmp_path) as (stack, calls):
        received: list[float] = []
        ended: list[grpc.StatusCode] = []

        def watch():
            try:
                for _ in calls.fetch.WatchBars(fetch_pb2.WatchBarsRequest(symbols=["BTC-USD"], interval="1h"),
                                               timeout=90):
                    received.append(time.monotonic())
            except grpc.RpcError as exc:
                ended.append(exc.code())
        threading.Thread(target=watch, daemon=True).start()
        wait_until(lambda: received, 20, "a first WatchBars update")
        db = sync_client(cluster)
        meta_key = series_key("BTC-USD", "1h", "meta")
        before_count = int(db.hget(meta_key, "count"))
        db.close()
        time.sleep(1.5)  # past appendfsync everysec

        errors_before = {n: metric(stack[n].metrics_port, "cryptolens_redis_errors_total") for n in ("fetch", "core", "alerts")}
        for node in cluster.nodes:
            node.kill()
        started = time.monotonic()
        while time.monotonic() - started < 4:
            for symbol in ("BTC-USD", "ETH-USD"):  # a cached answer and one Core must read
                calls.all_ok(symbol)
            time.sleep(0.2)
        for node in cluster.nodes:
            node.start()
        restarted = time.monotonic()
        wait_until(lambda: all(cluster._ok(n) for n in cluster.nodes), 30, "the cluster back from nodes.conf")
        calls.until_all_ok(RECOVERY_BOUND_S)
        wait_until(lambda: any(t > restarted for t in received), 20, "WatchBars going on after the outage")

        assert calls.unexpected_codes() == {}
        assert grpc.StatusCode.UNAVAILABLE in calls.codes["GetBars"]
        assert ended == []  # the stream paused; it never ended with INTERNAL
        errors_after = {n: metric(stack[n].metrics_port, "cryptolens_redis_errors_total") for n in ("fetch", "core", "alerts")}
        assert all(errors_after[n] > errors_before[n] for n in errors_before), (errors_before, errors_after)
        db = sync_client(cluster)
        assert int(db.hget(meta_key, "count")) >= before_count


async def test_every_multi_key_operation_is_accepted_by_a_cluster(cluster):
    client = redis_client(cluster.url)
    try:
        store = PriceStore(client)
        assert await client.ping()  # as the services do first: the client learns the slots
        pubsub = client.pubsub()  # update events reach a subscriber on whichever node it listens
        await pubsub.subscribe(UPDATES_CHANNEL)
        ts = 1_767_225_600_000 + np.arange(300, dtype=np.int64) * HOUR
        close = 100 + np.sin(np.arange(300))
        result = await store.write("BTC-USD", "1h", make_bars(ts, close, close, close, close, np.ones(300)), "test")
        assert result.written == 300
        heard = None
        for _ in range(50):
            heard = heard or await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        await pubsub.aclose()
        assert heard is not None and json.loads(heard["data"])["version"] == result.version
        await store.write("BTC-USD", "1h", make_bars(ts[:5], close[:5] * 2, close[:5], close[:5], close[:5] * 2,
                                                     np.ones(5)), "test", origin="other")  # replace: one tx
        assert [s.symbol for s in await store.list_series()] == ["BTC-USD"]
        assert len(await store.read_bars("BTC-USD", "1h")) == 5
        page, more = await store.read_page("BTC-USD", "1h", None, None, 3)
        assert len(page) == 3 and more
        await store.mark_used("BTC-USD", "1h")

        # The alert commit script writes state, revision, history and an outbox in one step.
        receiver = Receiver("webhook", "http://127.0.0.1:9/hook", client, "w1")
        series = SeriesSource(store, "127.0.0.1:9", 1.0, 1024 * 1024)
        engine = AlertEngine(client, series, ["BTC-USD"], [receiver])
        now = int(ts[4]) + HOUR
        evaluation = await engine.evaluate(["BTC-USD"], now_ms=now)
        assert evaluation.statuses
        assert await client.hlen(STATE_KEY) == len(evaluation.statuses)
        assert await client.xlen(HISTORY_KEY) == len(evaluation.events) > 0
        await receiver._dead(json.dumps({"id": "x"}).encode(), "test")  # MULTI over the dead and processing lists

        lease = Lease(client, "notify:webhook", "w1", ttl_s=2)
        assert await lease.acquire_or_renew() and await lease.acquire_or_renew()
        leases = Leases(client, 2000, owner="a")
        assert await leases.acquire("BTC-USD", "1h") and await leases.acquire("BTC-USD", "1h")
        await leases.release_all()
        await series.close()
    finally:
        await client.aclose()

