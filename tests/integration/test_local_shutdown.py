"""Shutdown drains: in-flight calls finish before clients close, open streams end at once.

Real processes, real Redis, a local exchange that answers slowly (the dependency a call waits on).
"""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest
import redis as redis_sync
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc, core_pb2, core_pb2_grpc, fetch_pb2, fetch_pb2_grpc
from tests.integration.services import Stack
from tests.replay_server import ReplayServer, SyntheticMarket

SLOW_S = 3.0  # the exchange's answer time: the call is in flight that long
GRACE_S = 20.0


@pytest.fixture
def redis_url(redis_server):
    url = redis_server.url[:-1] + "7"
    redis_sync.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def slow_exchange():
    """(server, asked): ``asked`` is set the moment a request arrives, SLOW_S before its answer."""
    market = SyntheticMarket(now_ms=int(time.time() * 1000))
    asked = threading.Event()

    def slow_klines(request):
        asked.set()
        time.sleep(SLOW_S)
        return market.binance_klines(request)

    with ReplayServer() as server:
        server.route("/api/v3/klines", handler=slow_klines)
        yield server, asked


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


def in_background(fn):
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = fn()
        except grpc.RpcError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("stopped", ["core", "fetch"])
def test_a_call_waiting_on_a_slow_dependency_completes_during_shutdown(tmp_path, redis_url, slow_exchange, stopped):
    """Core's GetStats waits on a fetch-through, Fetch's GetBars on the exchange; stop either one
    mid-call: the call still answers OK with the data, and the process exits 0."""
    exchange, asked = slow_exchange
    stack = Stack(redis_url, tmp_path)
    stack.add("fetch", "--provider", "binance", "--binance-url", exchange.url, "--refresh-s", "0",
              "--history-days", "2", "--grace-s", str(GRACE_S))
    stack.add("core", "--grace-s", str(GRACE_S))
    try:
        for name in ("fetch", "core"):
            stack[name].wait_serving()
        with grpc.insecure_channel(stack["core"].addr) as channel:
            stub = core_pb2_grpc.CoreServiceStub(channel)
            thread, outcome = in_background(lambda: stub.GetStats(
                core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1h", lookback="1d"), timeout=60))
            assert asked.wait(20), "the exchange was never asked"
            started = time.monotonic()
            code = stack[stopped].stop(signal.SIGTERM, timeout=GRACE_S + 10)
            stopped_after = time.monotonic() - started
            thread.join(timeout=30)
        assert "error" not in outcome, f"{outcome['error'].code()}: {outcome['error'].details()}"
        assert outcome["value"].count == 24 and outcome["value"].source == "binance"
        assert code == 0
        # It drained: stopped once the call ended (the exchange answers SLOW_S after being asked), not
        # at once (which cuts the call) and not at the end of the grace.
        assert stopped_after < GRACE_S
        print(f"{stopped} stopped {stopped_after:.2f} s after SIGTERM with a call in flight")
    finally:
        stack.stop()


def _first_bar_update(stack: Stack, call) -> fetch_pb2.WatchBarsResponse:
    """Trigger a write so the stream yields once: proof it is open on the server."""
    start = Timestamp(seconds=1_700_000_000)
    with grpc.insecure_channel(stack["fetch"].addr) as channel:
        fetch_pb2_grpc.FetchServiceStub(channel).Backfill(fetch_pb2.BackfillRequest(
            symbol="BTC-USD", interval="1h", start=start, end=Timestamp(seconds=start.seconds + 86_400)), timeout=30)
    return next(call)


@pytest.mark.parametrize("name", ["fetch", "alerts"])
def test_an_open_stream_does_not_hold_shutdown_for_the_grace(tmp_path, redis_url, name):
    stack = Stack(redis_url, tmp_path)
    stack.add("fetch", "--provider", "simulated", "--refresh-s", "0", "--grace-s", str(GRACE_S))
    if name == "alerts":
        stack.add("alerts", "--grace-s", str(GRACE_S))
    try:
        for service in stack.services.values():
            service.wait_serving()
        with grpc.insecure_channel(stack[name].addr) as channel:
            if name == "fetch":
                call = fetch_pb2_grpc.FetchServiceStub(channel).WatchBars(fetch_pb2.WatchBarsRequest(), timeout=60)
                assert _first_bar_update(stack, call).symbol == "BTC-USD"
            else:
                call = alerts_pb2_grpc.AlertsServiceStub(channel).WatchAlerts(alerts_pb2.WatchAlertsRequest(),
                                                                               timeout=60)
                time.sleep(1.0)  # WatchAlerts yields only on a transition: give the call time to open
            _, outcome = in_background(lambda: list(call))
            started = time.monotonic()
            code = stack[name].stop(signal.SIGTERM, timeout=GRACE_S + 10)
            stopped_after = time.monotonic() - started
            wait_for(lambda: outcome, 10, "the end of the stream")
        assert code == 0
        assert stopped_after < GRACE_S / 4, f"{name} took {stopped_after:.1f} s to stop with a stream open"
        error = outcome.get("error")
        assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in error.details()
        print(f"{name} stopped {stopped_after:.2f} s after SIGTERM with a stream open (grace {GRACE_S:g} s)")
    finally:
        stack.stop()


def _open_stream(name: str, channel):
    if name == "fetch":
        return fetch_pb2_grpc.FetchServiceStub(channel).WatchBars(fetch_pb2.WatchBarsRequest(), timeout=60)
    if name == "core":
        return core_pb2_grpc.CoreServiceStub(channel).WatchPrices(core_pb2.WatchPricesRequest(), timeout=60)
    return alerts_pb2_grpc.AlertsServiceStub(channel).WatchAlerts(alerts_pb2.WatchAlertsRequest(), timeout=60)


@pytest.mark.parametrize("name", ["fetch", "core", "alerts"])
def test_a_stop_the_moment_a_service_serves_exits_at_once(tmp_path, redis_url, name):
    """SIGTERM while the service's first background work (Redis commands) runs, a stream just opened:
    every round exits 0 within seconds. Before services/common/wait_for.py, a cancellation landing
    while redis-py sent a command was lost, and Alerts hung on its first round until killed."""
    for round_ in range(5):
        redis_sync.Redis.from_url(redis_url).flushdb()
        (tmp_path / str(round_)).mkdir()
        stack = Stack(redis_url, tmp_path / str(round_))
        stack.add("fetch", "--provider", "simulated", "--refresh-s", "0", "--grace-s", str(GRACE_S))
        if name != "fetch":
            stack.add(name, "--grace-s", str(GRACE_S))
        try:
            for service in stack.services.values():
                service.wait_serving()
            with grpc.insecure_channel(stack[name].addr) as channel:
                grpc.channel_ready_future(channel).result(timeout=10)
                call = _open_stream(name, channel)
                _, outcome = in_background(lambda: list(call))
                started = time.monotonic()
                code = stack[name].stop(signal.SIGTERM, timeout=GRACE_S + 10)
                stopped_after = time.monotonic() - started
                wait_for(lambda: outcome, 10, f"round {round_}: the end of the stream ({name} exited {code})")
            assert code == 0, f"round {round_}: {name} exited {code}:\n{stack[name].log()[-3000:]}"
            assert stopped_after < GRACE_S / 4, f"round {round_}: {name} took {stopped_after:.1f} s to stop"
        finally:
            stack.stop()
