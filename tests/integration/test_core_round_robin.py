"""Replicas behind one target get calls evenly from a round_robin client: three Core replicas from the
UI client, three Fetch replicas from Core's fetch-through."""

from __future__ import annotations

import re
import signal
import threading
import time
import urllib.request

from services.fetch.providers.registry import SIMULATED_BASES
from tests.conftest import RedisServer, free_port
from tests.integration.services import ServiceProcess, Stack
from ui.client import CryptoLensClient, ServiceError

CALLS = 300


def served(service: ServiceProcess, method: str) -> int:
    """Calls of ``method`` this replica answered, from its own /metrics request counter (every code)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).read().decode()
    pattern = rf'^cryptolens_rpc_requests_total\{{[^}}]*method="{method}"[^}}]*\}} ([0-9.e+]+)$'
    return int(sum(float(v) for v in re.findall(pattern, text, re.MULTILINE)))


def call_until(client: CryptoLensClient, deadline: float, failed: list[str]) -> None:
    while time.monotonic() < deadline:
        try:
            client.stats("BTC-USD", "1h", "7d")
        except ServiceError as exc:
            failed.append(str(exc))


def test_calls_spread_evenly_over_three_core_replicas_and_skip_a_stopped_one(tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    stack = Stack(redis.url, tmp_path)
    fetch = stack.add("fetch", "--provider", "simulated", "--symbols", "BTC-USD", "--history-days", "10",
                      "--refresh-s", "3600", "--lease-s", "7200")
    env = {"CRYPTOLENS_REDIS_URL": redis.url, "CRYPTOLENS_FETCH_ADDR": fetch.addr}
    cores = [ServiceProcess("core", free_port(), free_port(), [], env, tmp_path / f"core{i}.log") for i in range(3)]
    try:
        for core in [fetch, *(c.start() for c in cores)]:
            core.wait_serving()
        # One name for all three, as a headless Service's DNS answer gives a client in Kubernetes.
        target = "ipv4:" + ",".join(core.addr for core in cores)
        client = CryptoLensClient(fetch_addr=fetch.addr, core_addr=target)
        for _ in range(CALLS):
            assert client.stats("BTC-USD", "1h", "7d")["symbol"] == "BTC-USD"
        counts = [served(core, "GetStats") for core in cores]
        print("GetStats calls per replica:", counts)
        assert sum(counts) == CALLS
        # round_robin turns over the connected replicas strictly; only the first calls, made while a
        # replica is still connecting, can land unevenly. pick_first (gRPC's default) puts all on one.
        assert all(abs(n - CALLS / 3) <= 30 for n in counts), counts

        # A replica stopped while calls go on (SIGTERM: graceful, as in a rolling update) drops out
        # of the rotation: no call fails, and after it the other two share the calls.
        failed: list[str] = []
        calling = threading.Thread(target=call_until, args=(client, time.monotonic() + 3, failed))
        calling.start()
        time.sleep(0.5)
        cores[0].stop(signal.SIGTERM)
        calling.join()
        assert not failed, failed[:3]
        before = [served(core, "GetStats") for core in cores[1:]]
        for _ in range(100):
            client.stats("BTC-USD", "1h", "7d")
        after = [served(core, "GetStats") - n for core, n in zip(cores[1:], before)]
        print("GetStats calls per remaining replica:", after)
        assert after == [50, 50], after
    finally:
        for core in cores:
            core.stop()
        stack.stop()
        redis.stop()


def test_core_fetches_through_from_three_fetch_replicas_in_turn(tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    stacks, symbols = [], [f"{base}-{quote}" for base in SIMULATED_BASES[3:18] for quote in ("USD", "EUR")]
    for i in range(3):
        (tmp_path / str(i)).mkdir()
        stacks.append(Stack(redis.url, tmp_path / str(i)))
    fetches = [stack.add("fetch", "--provider", "simulated", "--history-days", "10", "--refresh-s", "3600",
                         "--lease-s", "7200")
               for stack in stacks]
    env = {"CRYPTOLENS_REDIS_URL": redis.url, "CRYPTOLENS_FETCH_ADDR": "ipv4:" + ",".join(f.addr for f in fetches)}
    core = ServiceProcess("core", free_port(), free_port(), [], env, tmp_path / "core.log").start()
    try:
        for service in [*fetches, core]:
            service.wait_serving()
        client = CryptoLensClient(core_addr=core.addr)
        for symbol in symbols:  # none watched, so Redis has none yet: one GetBars to Fetch apiece
            assert client.stats(symbol, "1h", "7d")["symbol"] == symbol
        counts = [served(fetch, "GetBars") for fetch in fetches]
        print("fetch-through calls per Fetch replica:", counts)
        # As above: strict turns once all are connected (Core's channel opens on its first call).
        assert sum(counts) == len(symbols) and all(abs(n - len(symbols) / 3) <= 3 for n in counts), counts
    finally:
        core.stop()
        for stack in stacks:
            stack.stop()
        redis.stop()
