"""Defect 4: three Alerts replicas on one Redis judge each transition once and deliver it once.

Rules are changed through different replicas, one replica is killed with -9 mid-alert, then the
others are restarted one by one. Afterwards, per (symbol, rule), the history alternates (each
transition starts where the previous one ended: none judged twice), and every notified transition
reached the webhook once; at most one was repeated, under the same id.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import signal
import time

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc
from services.alerts.engine import HISTORY_KEY
from services.alerts.notify import OUTBOX_KEY
from services.common.bars import make_bars
from services.common.store import PriceStore
from tests.conftest import free_port
from tests.integration.services import ServiceProcess
from tests.integration.test_alerts import Receiver, wait_until

HOUR = 3_600_000
SYMBOLS = ("LINK-USD", "DOT-USD")


def redis_call(url: str, fn):
    async def go():
        client = aioredis.from_url(url)
        try:
            return await fn(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def write_last(url: str, symbol: str, last: float) -> None:
    closes = np.array([120.0] * 30 + [last])
    start = (int(time.time() * 1000) // HOUR - len(closes)) * HOUR
    ts = start + np.arange(len(closes), dtype=np.int64) * HOUR
    redis_call(url, lambda c: PriceStore(c).write(symbol, "1h", make_bars(ts, closes, closes, closes, closes,
                                                                          np.ones(len(closes))), "test"))


class Replicas:
    def __init__(self, db_url: str, hook: Receiver, tmp_path):
        self.db_url, self.hook, self.tmp = db_url, hook, tmp_path
        self.count = 0
        self.live: list[ServiceProcess] = []

    def start(self) -> ServiceProcess:
        self.count += 1
        env = {"CRYPTOLENS_REDIS_URL": self.db_url, "CRYPTOLENS_REDIS_CHECK_S": "0.3",
               "CRYPTOLENS_FETCH_ADDR": f"127.0.0.1:{free_port()}"}
        service = ServiceProcess("alerts", free_port(), free_port(), [
            "--symbols", ",".join(SYMBOLS), "--eval-interval-s", "1", "--lease-ttl-s", "2", "--shards", "8",
            "--webhook-url", self.hook.url, "--notify-timeout-s", "2", "--notify-backoff-s", "0.2",
            "--replica-id", f"replica-{self.count}"], env, self.tmp / f"alerts-{self.count}.log")
        self.live.append(service.start().wait_serving())
        return service

    def stub(self, service: ServiceProcess):
        channel = grpc.insecure_channel(service.addr)
        return alerts_pb2_grpc.AlertsServiceStub(channel), channel

    def call(self, method: str, request, service: ServiceProcess | None = None):
        service = service or random.choice(self.live)
        stub, channel = self.stub(service)
        with channel:
            return getattr(stub, method)(request, timeout=30)

    def stop_all(self) -> None:
        for service in self.live:
            service.stop()


def user_rule(rule_id: str, symbol: str, warning: float) -> alerts_pb2.Rule:
    return alerts_pb2.Rule(id=rule_id, kind="threshold", symbol=symbol, interval="1h", window="24h", metric="price",
                           condition="below", warning=warning, alert=90, clear=105, cooldown_s=0)


def history(db_url: str) -> list[dict]:
    entries = redis_call(db_url, lambda c: c.xrange(HISTORY_KEY))
    return [json.loads(fields[b"event"]) for _, fields in entries]


def settled(db_url: str) -> bool:
    async def check(client):
        keys = [k async for k in client.scan_iter(OUTBOX_KEY.format("webhook") + "*")]
        lengths = [await client.llen(k) for k in keys if (await client.type(k)) == b"list"]
        return sum(lengths) == 0

    return redis_call(db_url, check)


@pytest.fixture
def replicas(redis_server, tmp_path):
    db_url = redis_server.url[:-1] + "5"
    redis_call(db_url, lambda c: c.flushdb())
    hook = Receiver()
    group = Replicas(db_url, hook, tmp_path)
    yield group
    group.stop_all()
    hook.close()


def test_three_replicas_judge_once_and_deliver_once_through_a_kill_and_a_rolling_restart(replicas):
    db_url, hook = replicas.db_url, replicas.hook
    for symbol in SYMBOLS:
        write_last(db_url, symbol, 120.0)
    a, b, c = replicas.start(), replicas.start(), replicas.start()
    replicas.call("CreateRule", alerts_pb2.CreateRuleRequest(rule=user_rule("link-low", "LINK-USD", 100)), a)
    # Changed through another replica than the one that created it (was NOT_FOUND there).
    replicas.call("UpdateRule", alerts_pb2.UpdateRuleRequest(rule=user_rule("link-low", "LINK-USD", 101)), b)
    replicas.call("CreateRule", alerts_pb2.CreateRuleRequest(rule=user_rule("dot-low", "DOT-USD", 100)), c)
    listed = replicas.call("ListRules", alerts_pb2.ListRulesRequest(), a).rules
    assert {r.id: r.warning for r in listed if not r.builtin} == {"link-low": 101, "dot-low": 100}

    def flip(step: int) -> None:
        """Prices for one step, and evaluations through random replicas racing the timers."""
        last = 85.0 if step % 2 == 0 else 110.0
        for symbol in SYMBOLS:
            write_last(db_url, symbol, last)
        for _ in range(2):
            replicas.call("Evaluate", alerts_pb2.EvaluateRequest())
        want = "ALERT" if last < 90 else "OK"
        request = alerts_pb2.EvaluateRequest(rules=["link-low", "dot-low"])
        assert wait_until(lambda: {s.grade for s in replicas.call("Evaluate", request).statuses} == {want}, 15)

    for step in range(4):
        flip(step)
    # Kill -9 the replica delivering notifications, right after a transition was queued.
    holder = redis_call(db_url, lambda cl: cl.get("cl:v1:alerts:lease:notify:webhook")).decode()
    victim = next(s for s in replicas.live if s.args[s.args.index("--replica-id") + 1] == holder)
    hook.delay_s = 0.5  # the receiver takes each body, then is slow to answer: the kill lands mid-delivery
    flip(4)
    in_flight = OUTBOX_KEY.format("webhook") + f":processing:{holder}"
    assert wait_until(lambda: redis_call(db_url, lambda cl: cl.llen(in_flight)))
    victim.stop(signal.SIGKILL)
    replicas.live.remove(victim)
    hook.delay_s = 0.0
    for step in range(5, 8):
        flip(step)
    # Rolling restart: each remaining replica is replaced by a new one, one at a time.
    for old in list(replicas.live):
        replicas.start()
        old.stop()
        replicas.live.remove(old)
        flip(8)
        flip(9)
    assert wait_until(lambda: settled(db_url), 30)
    time.sleep(1.0)

    events = history(db_url)
    by_pair = collections.defaultdict(list)
    for e in events:
        by_pair[(e["symbol"], e["rule"])].append(e)
    assert len(by_pair[("LINK-USD", "link-low")]) >= 10
    for pair, chain in by_pair.items():
        assert chain[0]["from"] in ("OK", "NO_DATA"), (pair, chain[0])
        for before, after in zip(chain, chain[1:]):
            assert after["from"] == before["to"], (pair, before, after)  # never judged twice
    assert len({e["id"] for e in events}) == len(events)

    notified = collections.Counter(e["id"] for e in events if e["notified"])
    received = collections.Counter(body["id"] for body in hook.received)
    assert set(received) == set(notified)  # every notified transition arrived, nothing else did
    repeats = {i: n for i, n in received.items() if n > 1}
    # The one the receiver had taken when its sender died is sent again, under the same id; nothing else.
    assert len(repeats) <= 1 and all(n == 2 for n in repeats.values()), repeats
