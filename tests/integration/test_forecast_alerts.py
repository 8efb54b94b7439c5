"""The forecast_volatility rule kind through a real Alerts process on real Redis: validated at
CreateRule (the minimum history named), backtested over the real BTC daily history."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import redis.asyncio as aioredis

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc
from services.alerts.backtest import backtest
from services.alerts.rules import rule_from_dict
from services.common.csv_bars import load_csv
from services.common.store import PriceStore
from tests.conftest import free_port
from tests.integration.services import ServiceProcess

RULE = dict(id="btc-forecast-vol", kind="forecast_volatility", symbol="BTC-USD", interval="1d", window="1000d",
            condition="above", warning=0.6, alert=0.9, clear=0.5, cooldown_s=0)


@pytest.fixture(scope="module")
def bars(shared_data):
    return load_csv(shared_data / "prices" / "BTCUSDT_1d_cdd-binance.csv", "1d").bars


@pytest.fixture(scope="module")
def alerts(redis_server, bars, tmp_path_factory):
    url = redis_server.url[:-1] + "15"

    async def write():
        client = aioredis.from_url(url)
        await client.flushdb()
        await PriceStore(client).write("BTC-USD", "1d", bars, "csv")
        await client.aclose()

    asyncio.run(write())
    env = {"CRYPTOLENS_REDIS_URL": url, "CRYPTOLENS_FETCH_ADDR": f"127.0.0.1:{free_port()}"}
    process = ServiceProcess("alerts", free_port(), free_port(), ["--symbols", "BTC-USD", "--interval", "1d",
                                                                  "--eval-interval-s", "3600"],
                             env, tmp_path_factory.mktemp("forecast-alerts") / "alerts.log").start().wait_serving()
    with grpc.insecure_channel(process.addr) as channel:
        yield alerts_pb2_grpc.AlertsServiceStub(channel)
    process.stop()


def test_a_window_shorter_than_the_minimum_history_is_refused_naming_it(alerts):
    with pytest.raises(grpc.RpcError) as exc:
        alerts.CreateRule(alerts_pb2.CreateRuleRequest(rule=alerts_pb2.Rule(**{**RULE, "window": "90d"})), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "window" in exc.value.details() and "MIN_HISTORY_BARS = 251" in exc.value.details()


def test_backtest_over_the_btc_history_matches_the_rule_package(alerts, bars):
    alerts.CreateRule(alerts_pb2.CreateRuleRequest(rule=alerts_pb2.Rule(**RULE)), timeout=10)
    reply = alerts.Backtest(alerts_pb2.BacktestRequest(rule=RULE["id"], symbol="BTC-USD"), timeout=120)
    assert reply.bars == len(bars) and reply.events
    expected = backtest(rule_from_dict(RULE), "BTC-USD", bars["ts"], bars["close"], "1d")
    assert [(e.time.ToMilliseconds(), e.grade) for e in reply.events] == [(t.time_ms, t.grade) for t in expected]
    first = reply.events[0]
    assert "forecast volatility of the next 1d bar" in first.message and "annualised" in first.message
