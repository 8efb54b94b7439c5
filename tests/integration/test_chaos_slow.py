"""Latency injected in front of a dependency: callers hit their deadlines, degrade, and recover.

A slow Core seen by the page's client (Fetch and Alerts keep answering it); a slow Fetch seen by
Core's and Alerts' fetch-through (each answers within its own deadline, never hangs, and serves
again once the latency is gone).
"""

from __future__ import annotations

import time

import grpc
import pytest
from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc, core_pb2, core_pb2_grpc

from tests.conftest import RedisServer
from tests.integration.services import Stack
from tests.latency_proxy import LatencyProxy
from ui.client import CryptoLensClient, ServiceError

SLOW_S = 4.0


def until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (ServiceError, grpc.RpcError):
            pass
        time.sleep(0.3)
    return False


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    redis_server = RedisServer(tmp)
    redis_server.start()
    stack = Stack(redis_server.url, tmp)
    stack.add("fetch", "--provider", "simulated", "--refresh-s", "0", "--history-days", "30")
    with LatencyProxy(stack["fetch"].grpc_port) as slow_fetch:
        stack.add("core", "--fetch-addr", slow_fetch.addr, "--fetch-timeout-s", "1")
        stack.add("alerts", "--fetch-addr", slow_fetch.addr, "--fetch-timeout-s", "1", "--eval-interval-s", "3600")
        try:
            for name in ("fetch", "core", "alerts"):
                stack[name].wait_serving(timeout=60)
            with LatencyProxy(stack["core"].grpc_port) as slow_core:
                yield stack, slow_fetch, slow_core
        finally:
            stack.stop()
            redis_server.stop()


def test_a_slow_core_costs_the_page_one_deadline_and_hides_nothing_else(slow_stack):
    stack, _, slow_core = slow_stack
    client = CryptoLensClient(stack["fetch"].addr, slow_core.addr, stack["alerts"].addr, timeout_s=1.0)
    assert int(client.stats("BTC-USD", "1h", "7d")["count"]) > 0

    slow_core.delay_s = SLOW_S
    started = time.monotonic()
    with pytest.raises(ServiceError, match="did not answer within 1 s"):
        client.stats("BTC-USD", "1h", "7d")
    assert time.monotonic() - started < 2.5  # the deadline, not the latency
    series, _, _ = client.list_series()  # prices and alerts still come while Core is slow
    assert series
    assert isinstance(client.alerts(), dict)  # answered (a failure raises ServiceError)

    slow_core.delay_s = 0
    assert until(lambda: int(client.stats("BTC-USD", "1h", "7d")["count"]) > 0, 15), "never recovered"


def test_a_slow_fetch_makes_fetch_through_answer_within_its_deadline_then_recover(slow_stack):
    stack, slow_fetch, _ = slow_stack
    request = core_pb2.GetStatsRequest(symbol="XRP-USD", interval="4h", lookback="30d")  # not stored yet
    slow_fetch.delay_s = SLOW_S
    with grpc.insecure_channel(stack["core"].addr) as channel:
        core = core_pb2_grpc.CoreServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as exc:
            core.GetStats(request, timeout=30)
        took = time.monotonic() - started
        assert exc.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), exc.value
        assert "fetch" in exc.value.details().lower(), exc.value.details()
        assert took < 1 + 2, f"Core took {took:.1f} s with a 1 s fetch deadline"
        assert stack["core"].health() == 1  # degraded answers, not a sick service

        with grpc.insecure_channel(stack["alerts"].addr) as alerts_channel:
            alerts = alerts_pb2_grpc.AlertsServiceStub(alerts_channel)
            backtest = alerts_pb2.BacktestRequest(rule="drawdown", symbol="ADA-USD", interval="4h")  # not stored
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as exc:
                alerts.Backtest(backtest, timeout=30)
            took = time.monotonic() - started
            assert exc.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), exc.value
            assert took < 1 + 2, f"Alerts took {took:.1f} s with a 1 s fetch deadline"
            assert stack["alerts"].health() == 1

            slow_fetch.delay_s = 0
            assert until(lambda: core.GetStats(request, timeout=30).count > 0, 20), "Core never recovered"
            assert until(lambda: alerts.Backtest(backtest, timeout=30) is not None, 20), "Alerts never recovered"
