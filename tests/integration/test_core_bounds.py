"""One request cannot exhaust Core (issue 8, defect 5, Core side).

Real Fetch (simulated provider) and Core processes on a real Redis: GetStats and GetTimeseries at
1m from 2010 are refused with RESOURCE_EXHAUSTED naming the cap before any fetch-through; a year
of 1m bars is answered while Core stays under 400 MB resident and its health check answers within
100 ms; many distinct requests keep the result cache under its byte bound and add nothing to Redis.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import redis as redis_sync
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cryptolens.v1 import core_pb2, core_pb2_grpc, fetch_pb2_grpc
from tests.conftest import RedisServer, free_port
from tests.integration.services import ServiceProcess, Stack

RSS_LIMIT_MB = 400


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def metric(port: int, name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    redis = RedisServer(tmp_path_factory.mktemp("bounds-redis"))  # its own: the test reads its memory use
    redis.start()
    stack = Stack(redis.url, tmp_path_factory.mktemp("bounds"))
    stack.add("fetch", "--provider", "simulated", "--refresh-s", "3600", "--lease-s", "7200", "--history-days", "2")
    stack.add("core", "--result-cache-mb", "1", "--fetch-timeout-s", "120")
    try:
        stack["fetch"].wait_serving()
        stack["core"].wait_serving()
        yield stack
    finally:
        stack.stop()
        redis.stop()


@pytest.fixture(scope="module")
def core(stack):
    with grpc.insecure_channel(stack["core"].addr) as channel:
        yield core_pb2_grpc.CoreServiceStub(channel)


def since_2010() -> Timestamp:
    start = Timestamp()
    start.FromJsonString("2010-01-01T00:00:00Z")
    return start


@pytest.mark.parametrize("method, request_", [
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", start=since_2010())),
    ("GetTimeseries", core_pb2.GetTimeseriesRequest(symbol="BTC-USD", interval="1m", start=since_2010())),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", lookback="5y")),
    ("GetCorrelation", core_pb2.GetCorrelationRequest(symbols=["BTC-USD", "ETH-USD", "SOL-USD"], interval="1m",
                                                      lookback="1y")),
])
def test_over_wide_window_is_refused_before_any_fetch(stack, core, method, request_):
    with pytest.raises(grpc.RpcError) as exc:
        getattr(core, method)(request_, timeout=10)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "MAX_WINDOW_BARS" in exc.value.details() and len(exc.value.details()) < 300
    # Refused before the fetch-through: Fetch stored no minute bars for it.
    assert not redis_sync.from_url(stack.redis_url).exists("cl:v1:s:{BTC-USD:1m}:meta")


class HealthProbe(threading.Thread):
    """Checks Core's health every 20 ms while a big request runs; keeps the slowest answer."""

    def __init__(self, addr: str):
        super().__init__(daemon=True)
        self.addr, self.stop, self.worst, self.checks, self.failures = addr, threading.Event(), 0.0, 0, []

    def run(self) -> None:
        with grpc.insecure_channel(self.addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)  # connected before timing
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.RpcError as exc:
                    self.failures.append(exc.code())
                self.worst = max(self.worst, time.perf_counter() - started)
                self.checks += 1
                time.sleep(0.02)


def test_a_year_of_minutes_is_answered_within_memory_and_health_keeps_answering(stack, core):
    pid = stack["core"].proc.pid
    probe = HealthProbe(stack["core"].addr)
    probe.start()
    peak = [rss_mb(pid)]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak.append(rss_mb(pid))
            time.sleep(0.05)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stats = core.GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", lookback="365d"), timeout=180)
        series = core.GetTimeseries(core_pb2.GetTimeseriesRequest(symbol="BTC-USD", interval="1m", lookback="365d"),
                                    timeout=60)
        again = core.GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", lookback="365d",
                                                       risk_free_rate=0.04), timeout=60)
    finally:
        done.set()
        probe.stop.set()
        probe.join()
        sampler.join()
    assert 525_000 <= stats.count <= 525_600 and stats.HasField("annualized_volatility")
    assert stats.coverage.expected_bars == 525_600 and stats.coverage.fraction > 0.99
    assert series.total_points == stats.count and len(series.points) <= 1000
    assert again.count == stats.count and again.sharpe != stats.sharpe
    assert max(peak) < RSS_LIMIT_MB, f"Core peaked at {max(peak):.0f} MB"
    assert probe.checks > 5 and not probe.failures
    assert probe.worst < 0.1, f"health took {probe.worst * 1000:.0f} ms while a big request ran"


def test_a_large_series_is_read_for_the_window_only_and_the_series_cache_keeps_its_bound(stack, core, tmp_path):
    """With a 4 MB series cache, a year of minutes (8.4 MB of ts and close) is too big to read whole:
    a day of it is read alone, and a whole year is used for its answer but not kept."""
    core.GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", lookback="365d"), timeout=180)
    env = {"CRYPTOLENS_REDIS_URL": stack.redis_url, "CRYPTOLENS_FETCH_ADDR": stack["fetch"].addr}
    small = ServiceProcess("core", free_port(), free_port(), ["--series-cache-mb", "4"], env,
                           tmp_path / "core.log").start()
    try:
        small.wait_serving()
        with grpc.insecure_channel(small.addr) as channel:
            stub = core_pb2_grpc.CoreServiceStub(channel)
            for lookback in ("1d", "365d"):
                request = core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", lookback=lookback)
                answer, reference = stub.GetStats(request, timeout=60), core.GetStats(request, timeout=60)
                assert answer.count == reference.count and answer.sharpe == reference.sharpe  # same numbers
                held = metric(small.metrics_port, "cryptolens_core_series_cache_bytes")
                assert 0 < held < 100_000 if lookback == "1d" else held <= 4 * 1024 * 1024, (lookback, held)
    finally:
        small.stop()


class HangingFetch(fetch_pb2_grpc.FetchServiceServicer):
    """A Fetch stuck on a slow provider: GetBars answers only when its caller gives up."""

    def __init__(self):
        self.called, self.cancelled = threading.Event(), threading.Event()

    def GetBars(self, request, context):
        context.add_callback(self.cancelled.set)  # runs when the call ends, cancelled or not
        self.called.set()
        self.cancelled.wait(30)
        context.abort(grpc.StatusCode.UNAVAILABLE, "too slow")


def test_a_client_deadline_stops_the_work_down_to_fetch(stack, tmp_path):
    """The client gives up: Core's call is cancelled (CANCELLED in its metrics), and so is the
    fetch-through it was waiting on; Core keeps serving."""
    fetch = HangingFetch()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    fetch_pb2_grpc.add_FetchServiceServicer_to_server(fetch, server)
    fetch_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    env = {"CRYPTOLENS_REDIS_URL": stack.redis_url, "CRYPTOLENS_FETCH_ADDR": f"127.0.0.1:{fetch_port}",
           "CRYPTOLENS_FETCH_TIMEOUT_S": "60"}
    core = ServiceProcess("core", free_port(), free_port(), [], env, tmp_path / "core.log").start()
    try:
        core.wait_serving()
        labels = ('{grpc_code="CANCELLED",grpc_method="GetTimeseries",grpc_service="cryptolens.v1.CoreService",'
                  'grpc_type="unary"}')
        with grpc.insecure_channel(core.addr) as channel:
            with pytest.raises(grpc.RpcError) as exc:
                core_pb2_grpc.CoreServiceStub(channel).GetTimeseries(
                    core_pb2.GetTimeseriesRequest(symbol="ADA-USD", interval="1m", lookback="200d"), timeout=1)
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert fetch.called.is_set() and fetch.cancelled.wait(10), "the fetch-through kept running"
        deadline = time.monotonic() + 10
        while metric(core.metrics_port, "grpc_server_handled_total", labels) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert metric(core.metrics_port, "grpc_server_handled_total", labels) == 1
        assert core.health() == health_pb2.HealthCheckResponse.SERVING
    finally:
        core.stop()
        server.stop(0)


def test_result_cache_stays_within_its_byte_bound(stack, core):
    port = stack["core"].metrics_port
    redis = redis_sync.from_url(stack.redis_url)
    used_before = redis.info("memory")["used_memory"]
    hits_before = metric(port, "cryptolens_core_cache_lookups_total", '{method="GetTimeseries",result="hit"}')
    for window in range(2, 62):  # 60 distinct answers of ~150 KB each: nine times the 1 MB budget
        request = core_pb2.GetTimeseriesRequest(symbol="BTC-USD", interval="1m", lookback="3d",
                                                rolling_window=window, max_points=10_000)
        core.GetTimeseries(request, timeout=30)
        assert metric(port, "cryptolens_core_cache_bytes") <= 1024 * 1024
    core.GetTimeseries(request, timeout=30)  # the newest answer is still there
    assert metric(port, "cryptolens_core_cache_lookups_total", '{method="GetTimeseries",result="hit"}') == hits_before + 1
    assert metric(port, "cryptolens_core_cache_bytes") > 512 * 1024
    assert redis.info("memory")["used_memory"] - used_before < 512 * 1024  # answers are not kept in Redis
