"""SIGTERM to each service while clients keep calling it: calls in flight complete, new calls get
UNAVAILABLE (never UNKNOWN, INTERNAL or CANCELLED), and the process exits 0 within its grace."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import grpc
import pytest
from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc, core_pb2, core_pb2_grpc, fetch_pb2, fetch_pb2_grpc

from tests.conftest import RedisServer
from tests.integration.services import Stack

GRACE_S = 5.0
CALLERS = 4


def call(name: str, channel) -> None:
    if name == "fetch":
        fetch_pb2_grpc.FetchServiceStub(channel).GetBars(
            fetch_pb2.GetBarsRequest(symbol="BTC-USD", interval="1h", limit=500), timeout=10)
    elif name == "core":
        core_pb2_grpc.CoreServiceStub(channel).GetStats(
            core_pb2.GetStatsRequest(symbol="ETH-USD", interval="1h", lookback="30d"), timeout=10)
    else:
        alerts_pb2_grpc.AlertsServiceStub(channel).Evaluate(
            alerts_pb2.EvaluateRequest(symbols=["BTC-USD"]), timeout=10)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("sigterm-redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.mark.parametrize("name", ["fetch", "core", "alerts"])
def test_sigterm_under_load_completes_in_flight_calls_and_refuses_new_ones_cleanly(tmp_path, redis_url, name):
    stack = Stack(redis_url, tmp_path)
    stack.add("fetch", "--provider", "simulated", "--refresh-s", "0", "--grace-s", str(GRACE_S))
    for other in ("core", "alerts"):
        stack.add(other, "--grace-s", str(GRACE_S))
    codes: Counter = Counter()
    details: list[str] = []
    stopping = threading.Event()
    done = threading.Event()

    def caller() -> None:
        with grpc.insecure_channel(stack[name].addr) as channel:
            while not done.is_set():
                try:
                    call(name, channel)
                    codes["after" if stopping.is_set() else "before", "OK"] += 1
                except grpc.RpcError as exc:
                    codes["after" if stopping.is_set() else "before", exc.code().name] += 1
                    if exc.code() not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE):
                        details.append(f"{exc.code().name}: {exc.details()} {exc.debug_error_string()}")
                    time.sleep(0.02)

    try:
        for service in stack.services.values():
            service.wait_serving(timeout=60)
        threads = [threading.Thread(target=caller, daemon=True) for _ in range(CALLERS)]
        for thread in threads:
            thread.start()
        time.sleep(2)  # steady load
        stopping.set()
        started = time.monotonic()
        code = stack[name].stop(signal.SIGTERM, timeout=GRACE_S + 10)
        took = time.monotonic() - started
        time.sleep(1)  # callers keep calling the stopped service
        done.set()
        for thread in threads:
            thread.join(timeout=15)
    finally:
        stack.stop()
    print(f"{name}: exit {code} after {took:.2f} s; {dict(codes)}", *details[:5], sep="\n")
    assert code == 0 and took < GRACE_S + 2
    # gRPC's C core cancels calls it received but had not yet handed to the server when shutdown
    # begins (grpc/grpc#41785, fix pending in #41786): a caller racing the stop can see a bare
    # CANCELLED. That is the only exception allowed, and only for calls made after the SIGTERM.
    assert codes["before", "OK"] > 0
    assert set(codes) <= {("before", "OK"), ("after", "OK"), ("after", "UNAVAILABLE"), ("after", "CANCELLED")}
    assert codes["after", "CANCELLED"] <= 3 and all(d.startswith("CANCELLED: CANCELLED ") for d in details), details
    assert codes["after", "UNAVAILABLE"] > 0  # new calls were refused, and said so
