"""Defect 1: every watched pair is judged, at the watched intervals; what is not judged says why.

Real Fetch (simulated provider, offline) and Alerts processes on one Redis."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc
from services.common.bars import make_bars
from services.common.store import PriceStore
from tests.integration.services import Stack

DAY = 86_400_000


def write_daily(url: str, symbol: str, closes: list[float], days_ago: int = 1) -> None:
    """Daily bars whose newest opened ``days_ago`` days before today."""
    async def go():
        client = aioredis.from_url(url)
        c = np.array(closes, dtype=float)
        today = int(time.time() * 1000) // DAY * DAY
        ts = today - (days_ago + len(c) - 1) * DAY + np.arange(len(c), dtype=np.int64) * DAY
        await PriceStore(client).write(symbol, "1d", make_bars(ts, c, c, c, c, np.ones(len(c))), "test")
        await client.aclose()

    asyncio.run(go())


@pytest.fixture
def stack(redis_server, tmp_path):
    db_url = redis_server.url[:-1] + "7"
    asyncio.run(aioredis.from_url(db_url).flushdb())
    group = Stack(db_url, tmp_path, {"CRYPTOLENS_REDIS_CHECK_S": "0.3"})
    yield group
    group.stop()


def test_daily_watch_list_is_judged_at_1d_and_unjudged_pairs_are_no_data(stack, tmp_path):
    url = stack.redis_url
    write_daily(url, "LINK-USD", [100.0] * 120 + [54.0])  # -46 % from the high
    write_daily(url, "ATOM-USD", [100.0] * 120, days_ago=10)  # stale: the newest bar is ten days old
    stack.add("fetch", "--symbols", "BTC-USD", "--interval", "1h", "--history-days", "2",
              "--refresh-s", "0").wait_serving()
    alerts = stack.add("alerts", "--symbols", "LINK-USD,ATOM-USD,AAA-USD", "--interval", "1d",
                       "--eval-interval-s", "3600").wait_serving()
    with grpc.insecure_channel(alerts.addr) as channel:
        stub = alerts_pb2_grpc.AlertsServiceStub(channel)
        builtins = [r for r in stub.ListRules(alerts_pb2.ListRulesRequest(), timeout=10).rules if r.builtin]
        assert {(r.id, r.interval) for r in builtins} == {("price_drop", "1d"), ("volatility_spike", "1d"),
                                                         ("drawdown", "1d")}
        reply = stub.Evaluate(alerts_pb2.EvaluateRequest(), timeout=60)
        grades = {(s.symbol, s.rule): s for s in reply.statuses}
        assert grades[("LINK-USD", "drawdown")].grade == "ALERT"
        assert grades[("LINK-USD", "drawdown")].value == pytest.approx(-0.46)
        assert grades[("LINK-USD", "price_drop")].grade == "ALERT"  # fell 46 % in 1d
        for rule in ("price_drop", "volatility_spike", "drawdown"):
            assert grades[("ATOM-USD", rule)].grade == "NO_DATA"
            assert grades[("AAA-USD", rule)].grade == "NO_DATA"  # nobody serves it: not OK
        reasons = {(k.symbol, k.rule): k.reason for k in reply.skipped}
        assert reasons[("ATOM-USD", "drawdown")].startswith("stale")
        assert reasons[("AAA-USD", "drawdown")].startswith("no data")
        only = stub.Evaluate(alerts_pb2.EvaluateRequest(symbols=["SOL-USD"]), timeout=30)
        assert [(k.symbol, k.reason) for k in only.skipped] == [("SOL-USD", "no enabled rule applies to this symbol")]
        active = {(a.symbol, a.rule, a.state) for a in stub.ListAlerts(alerts_pb2.ListAlertsRequest(),
                                                                        timeout=10).active}
        assert ("AAA-USD", "drawdown", "NO_DATA") in active
    with urllib.request.urlopen(f"http://127.0.0.1:{alerts.metrics_port}/metrics", timeout=5) as reply:
        metrics = reply.read().decode()
    assert 'cryptolens_alert_pairs{grade="NO_DATA"} 6.0' in metrics
    assert 'cryptolens_alert_state{rule="drawdown",symbol="AAA-USD"} -1.0' in metrics


def test_create_rule_refuses_a_symbol_nobody_serves(stack):
    stack.add("fetch", "--symbols", "BTC-USD", "--interval", "1h", "--history-days", "2",
              "--refresh-s", "0").wait_serving()
    alerts = stack.add("alerts", "--symbols", "BTC-USD", "--eval-interval-s", "3600").wait_serving()
    with grpc.insecure_channel(alerts.addr) as channel:
        stub = alerts_pb2_grpc.AlertsServiceStub(channel)
        rule = alerts_pb2.Rule(id="foo-low", kind="threshold", symbol="FOO-USD", interval="1h", window="24h",
                               metric="price", condition="below", alert=1)
        with pytest.raises(grpc.RpcError) as exc:
            stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule), timeout=30)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert exc.value.details().startswith("rule.symbol: FOO-USD")
        rule.id, rule.symbol = "eth-low", "ETH-USD"  # not stored yet, but Fetch serves it
        assert stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule), timeout=30).rule.symbol == "ETH-USD"


def test_more_watched_intervals_get_their_own_built_ins(stack):
    write_daily(stack.redis_url, "LINK-USD", [100.0] * 120 + [54.0])
    alerts = stack.add("alerts", "--symbols", "LINK-USD", "--interval", "1h", "--alert-intervals", "1d",
                       "--eval-interval-s", "3600").wait_serving()
    with grpc.insecure_channel(alerts.addr) as channel:
        stub = alerts_pb2_grpc.AlertsServiceStub(channel)
        ids = {(r.id, r.interval) for r in stub.ListRules(alerts_pb2.ListRulesRequest(), timeout=10).rules}
        assert {("drawdown", "1h"), ("drawdown.1d", "1d"), ("price_drop.1d", "1d")} <= ids
        reply = stub.Evaluate(alerts_pb2.EvaluateRequest(rules=["drawdown.1d", "drawdown"]), timeout=60)
    grades = {s.rule: s.grade for s in reply.statuses}
    assert grades == {"drawdown.1d": "ALERT", "drawdown": "NO_DATA"}  # no 1h data, and no Fetch to get it


def test_alerts_started_before_fetch_logs_one_calm_line(stack):
    """Fetch is not up yet: every tick finds nothing to judge; that is one line, not a traceback per tick."""
    alerts = stack.add("alerts", "--symbols", "BTC-USD,ETH-USD", "--eval-interval-s", "0.3",
                       "--fetch-timeout-s", "0.5").wait_serving()
    time.sleep(5)
    with urllib.request.urlopen(f"http://127.0.0.1:{alerts.metrics_port}/metrics", timeout=5) as reply:
        cycles = [float(line.split()[-1]) for line in reply.read().decode().splitlines()
                  if line.startswith("cryptolens_alert_evaluation_seconds_count")]
    assert cycles and cycles[0] >= 3  # several ticks ran
    log = alerts.log()
    assert "Traceback" not in log
    assert log.count("some pairs are not judged") == 1
