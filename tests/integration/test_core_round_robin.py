"""Three Core replicas behind one target: the UI client's calls spread evenly over them (round_robin)."""

from __future__ import annotations

import re
import signal
import threading
import time
import urllib.request

from tests.conftest import RedisServer, free_port
from tests.integration.services import ServiceProcess, Stack
from ui.client import CryptoLensClient, ServiceError

CALLS = 300


def served(core: ServiceProcess, method: str) -> int:
    """GetStats calls this replica answered, from its own /metrics request counter (every code)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{core.metrics_port}/metrics", timeout=5).read().decode()
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
