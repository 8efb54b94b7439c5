"""Defect 5: a backtest over a year of minutes runs off the event loop, within the caps and the deadline."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc
from services.common.bars import make_bars
from services.common.store import PriceStore
from tests.conftest import free_port
from tests.integration.services import ServiceProcess

MINUTE = 60_000
YEAR_OF_MINUTES = 525_600
SYMBOL = "LINK-USD"


@pytest.fixture(scope="module")
def service(redis_server, tmp_path_factory):
    db_url = redis_server.url[:-1] + "8"

    async def write_year():
        client = aioredis.from_url(db_url)
        await client.flushdb()
        rng = np.random.default_rng(7)
        close = 20.0 * np.exp(np.cumsum(rng.normal(0, 0.001, YEAR_OF_MINUTES)))
        start = (int(time.time() * 1000) // MINUTE - YEAR_OF_MINUTES) * MINUTE
        ts = start + np.arange(YEAR_OF_MINUTES, dtype=np.int64) * MINUTE
        await PriceStore(client).write(SYMBOL, "1m", make_bars(ts, close, close, close, close,
                                                               np.ones(YEAR_OF_MINUTES)), "test")
        await client.aclose()

    asyncio.run(write_year())
    tmp = tmp_path_factory.mktemp("alerts-backtest")
    env = {"CRYPTOLENS_REDIS_URL": db_url, "CRYPTOLENS_REDIS_CHECK_S": "0.3",
           "CRYPTOLENS_FETCH_ADDR": f"127.0.0.1:{free_port()}"}
    process = ServiceProcess("alerts", free_port(), free_port(), ["--symbols", SYMBOL, "--eval-interval-s", "3600"],
                             env, tmp / "alerts.log").start().wait_serving()
    with grpc.insecure_channel(process.addr) as channel:
        stub = alerts_pb2_grpc.AlertsServiceStub(channel)
        for rule_id, metric, window in (("link-sharpe", "sharpe", "24h"), ("link-cvar", "cvar_95", "30d")):
            stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=alerts_pb2.Rule(
                id=rule_id, kind="threshold", symbol=SYMBOL, interval="1m", window=window, metric=metric,
                condition="below", warning=-5, alert=-10, clear=0, cooldown_s=0)), timeout=10)
    yield process
    process.stop()


def test_health_answers_within_100_ms_during_a_year_of_minutes_backtest(service):
    result: dict = {}

    def run_backtest():
        with grpc.insecure_channel(service.addr) as channel:
            started = time.perf_counter()
            result["reply"] = alerts_pb2_grpc.AlertsServiceStub(channel).Backtest(
                alerts_pb2.BacktestRequest(rule="link-sharpe", symbol=SYMBOL), timeout=300)
            result["seconds"] = time.perf_counter() - started

    with grpc.insecure_channel(service.addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # connected before the clock starts
        worker = threading.Thread(target=run_backtest)
        worker.start()
        probes = []
        while worker.is_alive():
            started = time.perf_counter()
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            probes.append((time.perf_counter() - started, status))
            time.sleep(0.05)
        worker.join()
    assert result["reply"].bars == YEAR_OF_MINUTES and result["reply"].events
    assert len(probes) >= 5, (len(probes), result["seconds"])
    slow = [round(p, 3) for p, _ in probes if p >= 0.1]
    assert not slow, (slow, len(probes))
    assert {s for _, s in probes} == {health_pb2.HealthCheckResponse.SERVING}


def test_a_backtest_stops_at_the_clients_deadline(service):
    with grpc.insecure_channel(service.addr) as channel:
        stub = alerts_pb2_grpc.AlertsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as exc:  # cvar_95 has no rolling form: it loops, and is cut off
            stub.Backtest(alerts_pb2.BacktestRequest(rule="link-cvar", symbol=SYMBOL), timeout=1.0)
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        started = time.perf_counter()
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert time.perf_counter() - started < 0.1
