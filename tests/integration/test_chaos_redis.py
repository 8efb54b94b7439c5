"""Redis killed with -9 under steady load and restarted from its AOF ten seconds later.

The services must stay up, say NOT_SERVING while Redis is gone and SERVING once it is back, answer
every call with OK or UNAVAILABLE (never UNKNOWN, INTERNAL or a hang), lose at most the last second
of writes, backfill the outage, and keep alert state and the notification outbox as they were.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter

import grpc
import pytest
import redis
from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc, core_pb2, core_pb2_grpc, fetch_pb2, fetch_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2

from tests.conftest import UI_APP, RedisServer, free_port, wait_for_port
from tests.integration.services import Stack, point_page_at

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
SYMBOLS = ["BTC-USD", "ETH-USD"]
STATE_KEY = "cl:v1:{alerts}:state"


class PersistentRedis(RedisServer):
    """The session's RedisServer with an append-only file fsynced every second, restartable in place."""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "everysec", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)


def until(predicate, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


class Load:
    """Three callers (Fetch, Core, Alerts) calling back to back; every status code is counted."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.codes: Counter = Counter()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(name,), daemon=True)
                        for name in ("fetch", "core", "alerts")]

    def _call(self, name: str, channel) -> None:
        if name == "fetch":
            fetch_pb2_grpc.FetchServiceStub(channel).GetBars(
                fetch_pb2.GetBarsRequest(symbol="BTC-USD", interval="1m", limit=100), timeout=5)
        elif name == "core":
            core_pb2_grpc.CoreServiceStub(channel).GetStats(
                core_pb2.GetStatsRequest(symbol="ETH-USD", interval="1m", lookback="6h"), timeout=5)
        else:
            alerts_pb2_grpc.AlertsServiceStub(channel).ListAlerts(alerts_pb2.ListAlertsRequest(), timeout=5)

    def _run(self, name: str) -> None:
        with grpc.insecure_channel(self.stack[name].addr) as channel:
            while not self.stopped.is_set():
                try:
                    self._call(name, channel)
                    self.codes[name, "OK"] += 1
                except grpc.RpcError as exc:
                    self.codes[name, exc.code().name] += 1
                    time.sleep(0.05)

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=15)


@pytest.fixture
def chaos_stack(tmp_path):
    server = PersistentRedis(tmp_path)
    server.start()
    rules = tmp_path / "rules.yaml"
    # A rule that fires on every symbol at once, so alert state and a notification exist before the crash.
    rules.write_text("rules:\n  - {id: always-high, interval: 1m, metric: price, condition: above, alert: 1,"
                     " cooldown_s: 0}\n")
    stack = Stack(server.url, tmp_path)
    dead_hook = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: the notification stays in the outbox
    stack.add("fetch", "--provider", "simulated", "--interval", "1m", "--symbols", ",".join(SYMBOLS),
              "--refresh-s", "1", "--history-days", "1")
    stack.add("core", "--interval", "1m")
    stack.add("alerts", "--interval", "1m", "--symbols", ",".join(SYMBOLS), "--rules-file", str(rules),
              "--eval-interval-s", "1", "--webhook-url", dead_hook, "--notify-backoff-s", "30")
    try:
        for name in ("fetch", "core", "alerts"):
            stack[name].wait_serving(timeout=60)
        yield stack, server
    finally:
        stack.stop()
        server.stop()


def contents(stack: Stack) -> fetch_pb2.StoreContents:
    with grpc.insecure_channel(stack["fetch"].addr) as channel:
        return fetch_pb2_grpc.FetchServiceStub(channel).ListSymbols(fetch_pb2.ListSymbolsRequest(), timeout=5).store


def outbox(store: redis.Redis) -> set[bytes]:
    entries: set[bytes] = set()
    for key in store.scan_iter(match="cl:v1:{alerts}:outbox:*"):
        if store.type(key) == b"list":
            entries.update(store.lrange(key, 0, -1))
    return entries


def bar_times(stack: Stack, start_ms: int) -> list[int]:
    start = Timestamp()
    start.FromMilliseconds(start_ms)
    with grpc.insecure_channel(stack["fetch"].addr) as channel:
        reply = fetch_pb2_grpc.FetchServiceStub(channel).GetBars(
            fetch_pb2.GetBarsRequest(symbol="BTC-USD", interval="1m", start=start, limit=10_000), timeout=10)
    return [bar.time.ToMilliseconds() for bar in reply.bars]


def test_redis_killed_under_load_then_restarted_from_its_aof_loses_nothing_and_breaks_nothing(chaos_stack):
    stack, server = chaos_stack
    store = redis.Redis.from_url(server.url, socket_timeout=5)
    assert until(lambda: store.hlen(STATE_KEY) >= len(SYMBOLS) and outbox(store), 60), "no alert state or outbox yet"

    with Load(stack) as load:
        time.sleep(3)  # steady load; the state and outbox entries are older than the AOF's one second
        state_before, outbox_before = store.hgetall(STATE_KEY), outbox(store)
        first_minute = (int(time.time() * 1000) // 60_000 - 20) * 60_000
        server.proc.kill()  # SIGKILL: no shutdown save, only what the AOF fsynced
        server.proc.wait()
        killed = time.monotonic()
        for name in ("fetch", "core", "alerts"):
            stack[name].wait_status(NOT_SERVING, timeout=10)
        time.sleep(max(0.0, 10 - (time.monotonic() - killed)))
        server.start()
        for name in ("fetch", "core", "alerts"):
            stack[name].wait_serving(timeout=30)
        recovered = load.codes.copy()
        time.sleep(3)  # load goes on after recovery
    print(f"codes over the crash: {dict(load.codes)}")

    for name in ("fetch", "core", "alerts"):
        assert stack[name].proc.poll() is None, f"{name} died:\n{stack[name].log()[-3000:]}"
    assert {code for _, code in load.codes} <= {"OK", "UNAVAILABLE"}, dict(load.codes)
    assert all(load.codes[name, "OK"] > recovered[name, "OK"] for name in ("fetch", "core", "alerts"))
    assert sum(n for (_, code), n in load.codes.items() if code == "UNAVAILABLE") > 0  # the outage was seen

    after = store.hgetall(STATE_KEY)
    assert set(state_before) <= set(after), "alert states lost"
    firing = [pair for pair in state_before if pair.endswith(b"|always-high")]
    assert len(firing) == len(SYMBOLS), list(state_before)
    for pair in firing:  # the firing alerts kept their grade and their episode start
        before, now = json.loads(state_before[pair]), json.loads(after[pair])
        assert (now["grade"], now["firing_since_ms"]) == ("ALERT", before["firing_since_ms"]), (before, now)
    assert outbox_before <= outbox(store), "notifications waiting before the crash were lost"

    def complete() -> bool:  # the outage backfilled: every minute from before the crash to now
        times = bar_times(stack, first_minute)
        newest = int(time.time() * 1000) // 60_000 * 60_000
        return times[:1] == [first_minute] and times[-1] >= newest - 60_000 and all(
            b - a == 60_000 for a, b in zip(times, times[1:]))
    assert until(complete, 30), bar_times(stack, first_minute)[-5:]
    assert contents(stack).HasField("began") and not contents(stack).lost  # nothing was lost: none is claimed


def rule_ids(stack: Stack) -> set[str]:
    """The rules Alerts lists; empty while it answers UNAVAILABLE (a pooled connection from before the
    restart fails once, and the call says so)."""
    with grpc.insecure_channel(stack["alerts"].addr) as channel:
        try:
            reply = alerts_pb2_grpc.AlertsServiceStub(channel).ListRules(alerts_pb2.ListRulesRequest(), timeout=5)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            return set()
    return {rule.id for rule in reply.rules}


def test_redis_restarted_empty_every_service_notices_and_everything_comes_back(chaos_stack, monkeypatch):
    stack, server = chaos_stack
    store = redis.Redis.from_url(server.url, socket_timeout=5)
    assert until(lambda: store.hlen(STATE_KEY) >= len(SYMBOLS), 60)
    assert "always-high" in rule_ids(stack)
    first_minute = (int(time.time() * 1000) // 60_000 - 20) * 60_000
    assert until(lambda: contents(stack).HasField("began"), 10) and not contents(stack).lost
    restarted_ms = int(time.time() * 1000)

    server.proc.kill()
    server.proc.wait()
    for path in server.tmp.glob("appendonly*"):  # the volume is gone: Redis comes back empty
        if path.is_dir():
            for part in path.iterdir():
                part.unlink()
            path.rmdir()
        else:
            path.unlink()
    server.start()
    assert store.dbsize() == 0
    for name in ("fetch", "core", "alerts"):
        stack[name].wait_serving(timeout=30)
    # SERVING means served: the first calls after the restart answer (no pooled connection from
    # before the restart fails them).
    with grpc.insecure_channel(stack["alerts"].addr) as channel:
        alerts_pb2_grpc.AlertsServiceStub(channel).ListAlerts(alerts_pb2.ListAlertsRequest(), timeout=5)
    with grpc.insecure_channel(stack["fetch"].addr) as channel:
        fetch_pb2_grpc.FetchServiceStub(channel).ListSymbols(fetch_pb2.ListSymbolsRequest(), timeout=5)
    with grpc.insecure_channel(stack["core"].addr) as channel:
        core_pb2_grpc.CoreServiceStub(channel).GetStats(
            core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", lookback="1h"), timeout=30)

    assert until(lambda: "always-high" in rule_ids(stack), 30), "the rules file's rules did not come back"
    assert until(lambda: all(store.hexists(STATE_KEY, f"{s}|always-high") for s in SYMBOLS), 30), \
        "alert state was not rebuilt"

    def complete() -> bool:
        try:
            times = bar_times(stack, first_minute)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            return False
        return times[:1] == [first_minute] and all(b - a == 60_000 for a, b in zip(times, times[1:]))
    assert until(complete, 30), "the series were not backfilled"
    with grpc.insecure_channel(stack["core"].addr) as channel:
        stats = core_pb2_grpc.CoreServiceStub(channel).GetStats(
            core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", lookback="6h"), timeout=10)
    assert stats.count >= 6 * 60 - 1

    # What happened is said: Fetch recorded that the contents vanished, and the page says so once.
    assert until(lambda: contents(stack).lost, 30), "no one recorded that Redis came back empty"
    assert contents(stack).began.ToMilliseconds() >= restarted_ms
    from streamlit.testing.v1 import AppTest
    point_page_at(stack, monkeypatch)
    page = AppTest.from_file(UI_APP, default_timeout=120).run()
    assert not page.exception, page.exception
    said = [m.value for m in page.markdown if "restarted empty" in m.value]
    assert len(said) == 1 and "The shared store (Redis) restarted empty at" in said[0], said
