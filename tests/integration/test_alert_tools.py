"""The backtest command on real history, and the rules file of a running Alerts service."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import grpc

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc
from tests.conftest import ROOT, free_port
from tests.integration.services import ServiceProcess


def backtest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", "alerts", "backtest", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_backtest_prints_one_json_transition_per_line(shared_data):
    result = backtest("--rule", "price_drop", "--symbol", "BTC-USD", "--interval", "1d", "--csv-file",
                      str(shared_data / "prices" / "BTCUSDT_1d_cdd-binance.csv"))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines and all({"time", "symbol", "rule", "from", "to", "value"} <= set(line) for line in lines)
    crash = [line for line in lines if line["time"] == "2020-03-12T00:00:00Z"]
    assert crash and crash[-1]["to"] == "ALERT" and crash[-1]["value"] > 0.39


def test_backtest_refuses_bad_input_with_a_message(shared_data):
    csv = str(shared_data / "prices" / "BTCUSDT_1d_cdd-binance.csv")
    result = backtest("--rule", "nope", "--symbol", "BTC-USD", "--csv-file", csv)
    assert result.returncode == 2 and "unknown rule 'nope'" in result.stderr
    result = backtest("--rule", "price_drop", "--symbol", "BTCUSD", "--csv-file", csv)
    assert result.returncode == 2 and "BASE-QUOTE" in result.stderr
    result = backtest("--rule", "price_drop", "--symbol", "BTC-USD", "--csv-file", "/nonexistent.csv")
    assert result.returncode == 2 and "cannot read" in result.stderr


def rule_ids(addr: str) -> set[str]:
    with grpc.insecure_channel(addr) as channel:
        reply = alerts_pb2_grpc.AlertsServiceStub(channel).ListRules(alerts_pb2.ListRulesRequest(), timeout=10)
    return {r.id for r in reply.rules}


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_rules_file_reloads_and_a_bad_file_keeps_the_last_good_rules(redis_server, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {id: first-rule, metric: price, condition: above, alert: 100}\n")
    service = ServiceProcess("alerts", free_port(), free_port(),
                             ["--rules-file", str(rules), "--rules-reload-s", "0.2"],
                             {"CRYPTOLENS_REDIS_URL": redis_server.url[:-1] + "6"}, tmp_path / "alerts.log")
    service.start().wait_serving()
    try:
        assert "first-rule" in rule_ids(service.addr)
        rules.write_text("rules:\n  - {id: broken, metric: happiness, alert: 1}\n")
        assert wait_for(lambda: "rules file rejected" in service.log())
        assert "first-rule" in rule_ids(service.addr) and "broken" not in rule_ids(service.addr)
        rules.write_text("rules:\n  - {id: second-rule, metric: price, condition: below, alert: 10}\n")
        assert wait_for(lambda: "second-rule" in rule_ids(service.addr))
        assert "first-rule" not in rule_ids(service.addr)
    finally:
        service.stop()
    assert "metric: unknown metric 'happiness'" in service.log()
