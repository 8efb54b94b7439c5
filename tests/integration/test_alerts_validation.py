"""Defect 2: one rule must never stop alerting. Refused up front if it cannot run, isolated if it fails anyway."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc
from services.alerts import rules as rules_mod
from services.alerts.engine import AlertEngine
from services.alerts.rules.stored import RULES_KEY
from services.common.bars import make_bars
from services.common.csv_bars import load_csv
from services.common.series import SeriesSource
from services.common.store import PriceStore
from tests.conftest import ROOT, free_port
from tests.integration.services import ServiceProcess

HOUR = 3_600_000
DAY = 24 * HOUR


def write_series(url: str, symbol: str, interval: str, ts: np.ndarray, close: np.ndarray) -> None:
    async def go():
        client = aioredis.from_url(url)
        c = np.asarray(close, dtype=float)
        await PriceStore(client).write(symbol, interval, make_bars(ts, c, c, c, c, np.ones(len(c))), "test")
        await client.aclose()

    asyncio.run(go())


def recent_hours(closes: list[float]) -> np.ndarray:
    start = (int(time.time() * 1000) // HOUR - len(closes)) * HOUR
    return start + np.arange(len(closes), dtype=np.int64) * HOUR


@pytest.fixture
def db_url(redis_server):
    url = redis_server.url[:-1] + "3"
    asyncio.run(aioredis.from_url(url).flushdb())
    return url


def start_alerts(db_url: str, tmp_path, *args: str) -> ServiceProcess:
    env = {"CRYPTOLENS_REDIS_URL": db_url, "CRYPTOLENS_REDIS_CHECK_S": "0.3",
           "CRYPTOLENS_FETCH_ADDR": f"127.0.0.1:{free_port()}", "CRYPTOLENS_FETCH_TIMEOUT_S": "1"}
    return ServiceProcess("alerts", free_port(), free_port(), ["--eval-interval-s", "3600", *args], env,
                          tmp_path / "alerts.log").start().wait_serving()


BAD_RULES = [
    alerts_pb2.Rule(id="short-spike", kind="volatility_spike", window="1m", baseline_window="30d", interval="1h",
                    warning=1.5, alert=2.5),
    alerts_pb2.Rule(id="huge-drawdown", kind="drawdown", window="10000000000000000000d", interval="1h",
                    condition="below", warning=-0.2, alert=-0.4),
    alerts_pb2.Rule(id="too-many-bars", kind="threshold", metric="sharpe", window="3y", interval="1m",
                    condition="below", alert=-1),
    alerts_pb2.Rule(id="one-return", kind="threshold", metric="volatility", window="1h", interval="1h", alert=1),
]


def test_rules_that_cannot_run_are_refused_and_alerting_goes_on(db_url, tmp_path):
    write_series(db_url, "LINK-USD", "1h", recent_hours([100.0] * 40 + [80.0]), [100.0] * 40 + [80.0])
    service = start_alerts(db_url, tmp_path, "--symbols", "LINK-USD")
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            for rule in BAD_RULES:
                with pytest.raises(grpc.RpcError) as exc:
                    stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule), timeout=10)
                assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
                assert exc.value.details().startswith("window:"), exc.value.details()
                assert len(exc.value.details()) < 200
            reply = stub.Evaluate(alerts_pb2.EvaluateRequest(), timeout=30)
            assert {(s.rule, s.grade) for s in reply.statuses} >= {("price_drop", "ALERT")}
    finally:
        service.stop()


def test_a_stored_rule_that_cannot_run_is_ignored_and_every_other_pair_judged(db_url, tmp_path):
    """The rule a former version accepted survives in Redis; it must not stop anything after a restart."""
    async def store_bad_rule():
        client = aioredis.from_url(db_url)
        await client.hset(RULES_KEY, "short-spike", json.dumps({
            "id": "short-spike", "kind": "volatility_spike", "window": "1m", "baseline_window": "30d",
            "interval": "1h", "warning": 1.5, "alert": 2.5, "clear": 1.2}))
        await client.aclose()

    asyncio.run(store_bad_rule())
    write_series(db_url, "LINK-USD", "1h", recent_hours([100.0] * 40 + [80.0]), [100.0] * 40 + [80.0])
    service = start_alerts(db_url, tmp_path, "--symbols", "LINK-USD")
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            reply = stub.Evaluate(alerts_pb2.EvaluateRequest(), timeout=30)
            assert {s.rule for s in reply.statuses} == {"price_drop", "volatility_spike", "drawdown"}
            assert "short-spike" not in {r.id for r in stub.ListRules(alerts_pb2.ListRulesRequest(), timeout=10).rules}
            assert stub.DeleteRule(alerts_pb2.DeleteRuleRequest(id="short-spike"), timeout=10).deleted  # still removable
    finally:
        service.stop()
    assert "stored rule is invalid; ignored" in service.log()


def test_one_unavailable_series_does_not_stop_the_others(db_url, tmp_path):
    write_series(db_url, "LINK-USD", "1h", recent_hours([100.0] * 40 + [80.0]), [100.0] * 40 + [80.0])
    # DOGE-USD has no data and Fetch is not there: that series is UNAVAILABLE.
    service = start_alerts(db_url, tmp_path, "--symbols", "LINK-USD,DOGE-USD")
    try:
        with grpc.insecure_channel(service.addr) as channel:
            reply = alerts_pb2_grpc.AlertsServiceStub(channel).Evaluate(alerts_pb2.EvaluateRequest(), timeout=30)
    finally:
        service.stop()
    grades = {(s.symbol, s.rule): s.grade for s in reply.statuses}
    assert grades[("LINK-USD", "price_drop")] == "ALERT"
    assert {g for (sym, _), g in grades.items() if sym == "DOGE-USD"} == {"NO_DATA"}
    reasons = {(k.symbol, k.rule): k.reason for k in reply.skipped}
    assert "Fetch service could not provide DOGE-USD" in reasons[("DOGE-USD", "price_drop")]
    assert "Traceback" not in service.log()


def test_the_built_in_volatility_spike_backtests_at_1d(db_url, tmp_path, shared_data):
    bars = load_csv(shared_data / "prices" / "BTCUSDT_1d_cdd-binance.csv", "1d").bars
    write_series(db_url, "LINK-USD", "1d", bars["ts"], bars["close"])
    service = start_alerts(db_url, tmp_path, "--symbols", "LINK-USD")  # the service's interval is 1h
    try:
        with grpc.insecure_channel(service.addr) as channel:
            reply = alerts_pb2_grpc.AlertsServiceStub(channel).Backtest(alerts_pb2.BacktestRequest(
                rule="volatility_spike", symbol="LINK-USD", interval="1d"), timeout=60)
    finally:
        service.stop()
    assert reply.bars == len(bars)
    march_2020 = [e for e in reply.events if e.time.ToDatetime().strftime("%Y-%m") == "2020-03"]
    assert any(e.to == "ALERT" for e in march_2020)
    assert "its 90d baseline" in march_2020[0].message  # the daily windows, not 1h ones moved to 1d


def test_the_cli_backtests_the_built_in_volatility_spike_at_1d(shared_data):
    result = subprocess.run([sys.executable, "-m", "services.cli", "alerts", "backtest", "--rule", "volatility_spike",
                             "--symbol", "BTC-USD", "--interval", "1d", "--csv-file",
                             str(shared_data / "prices" / "BTCUSDT_1d_cdd-binance.csv")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert any(json.loads(line)["to"] == "ALERT" for line in result.stdout.splitlines())


async def test_a_rule_failing_at_run_time_is_isolated_in_error(redis_client, monkeypatch):
    """Whatever slips past validation (a bug in a metric): its pairs go ERROR with the reason, the rest is judged."""
    ts = recent_hours([100.0] * 40 + [75.0])
    close = np.array([100.0] * 40 + [75.0])
    store = PriceStore(redis_client)
    for symbol in ("LINK-USD", "DOT-USD"):
        await store.write(symbol, "1h", make_bars(ts, close, close, close, close, np.ones(len(close))), "test")
    real_measure = rules_mod.measure

    def measure(rule, *args, **kwargs):
        if rule.id == "price_drop":
            raise ValueError("min_periods 2 must be <= window 1")
        return real_measure(rule, *args, **kwargs)

    monkeypatch.setattr(rules_mod, "measure", measure)
    series = SeriesSource(store, "127.0.0.1:1", 1, 64 * 1024 * 1024)
    engine = AlertEngine(redis_client, series, ["LINK-USD", "DOT-USD"], [])
    before = REGISTRY.get_sample_value("cryptolens_alert_rule_errors_total", {"rule": "price_drop"}) or 0
    result = await engine.evaluate()
    await series.close()
    grades = {(s.symbol, s.rule_id): (s.grade, s.reason) for s in result.statuses}
    for symbol in ("LINK-USD", "DOT-USD"):
        assert grades[(symbol, "price_drop")] == ("ERROR", "ValueError: min_periods 2 must be <= window 1")
        assert grades[(symbol, "volatility_spike")] == ("NO_DATA", "not enough data for the 24h window yet")
        assert grades[(symbol, "drawdown")] == ("WARNING", "")
    assert REGISTRY.get_sample_value("cryptolens_alert_rule_errors_total", {"rule": "price_drop"}) == before + 2
    assert {(k.symbol, k.rule) for k in result.skipped} == {(s, r) for s in ("LINK-USD", "DOT-USD")
                                                            for r in ("price_drop", "volatility_spike")}
    stored = await engine.active()
    assert {(s.symbol, s.rule_id, s.state) for s in stored} >= {("LINK-USD", "price_drop", "ERROR")}
