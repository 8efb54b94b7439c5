"""Defect 3 against a real Alertmanager (Debian prometheus-alertmanager on loopback) and a webhook.

The alert is listed while CryptoLens says ALERT, stays listed past Alertmanager's resolve_timeout
(re-sent), an escalation leaves one alert, and it shows resolved within a minute of CryptoLens
saying OK with the default cooldown. Deleting a firing rule resolves it everywhere.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import json
import urllib.request

import grpc
import pytest
import redis.asyncio as aioredis

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc
from tests.conftest import free_port, require_tool, wait_for_port
from tests.integration.services import ServiceProcess
from tests.integration.test_alerts import SYMBOL, Receiver, wait_until, write_prices

RESOLVE_TIMEOUT_S = 5
RULE = "link-below-100"


@pytest.fixture
def alertmanager(tmp_path):
    binary = require_tool("prometheus-alertmanager")
    config = tmp_path / "alertmanager.yml"
    config.write_text(f"global:\n  resolve_timeout: {RESOLVE_TIMEOUT_S}s\n"
                      "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "am.log", "wb"))
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def listed(base: str) -> list[dict]:
    """Alerts Alertmanager holds as active for our rule (resolved ones are not listed)."""
    with urllib.request.urlopen(f"{base}/api/v2/alerts", timeout=5) as reply:
        alerts = json.loads(reply.read())
    return [a for a in alerts if a["labels"].get("rule") == RULE]


def gauges(service: ServiceProcess) -> dict[str, str]:
    """cryptolens_alert_state per rule for our symbol's user rule, from the service's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5) as reply:
        lines = reply.read().decode().splitlines()
    return {RULE: line.rsplit(" ", 1)[1] for line in lines
            if line.startswith("cryptolens_alert_state{") and f'rule="{RULE}"' in line}


@pytest.fixture
def env(redis_server, tmp_path):
    db_url = redis_server.url[:-1] + "4"
    asyncio.run(aioredis.from_url(db_url).flushdb())
    hook = Receiver()

    def start(*args: str) -> ServiceProcess:
        env = {"CRYPTOLENS_REDIS_URL": db_url, "CRYPTOLENS_REDIS_CHECK_S": "0.3",
               "CRYPTOLENS_FETCH_ADDR": f"127.0.0.1:{free_port()}"}
        return ServiceProcess("alerts", free_port(), free_port(),
                              ["--symbols", SYMBOL, "--eval-interval-s", "3600", "--webhook-url", hook.url,
                               "--notify-timeout-s", "2", "--lease-ttl-s", "2", *args],
                              env, tmp_path / "alerts.log").start().wait_serving()

    yield db_url, hook, start
    hook.close()


def rule() -> alerts_pb2.Rule:  # default cooldown (3600 s)
    return alerts_pb2.Rule(id=RULE, kind="threshold", symbol=SYMBOL, interval="1h", window="24h", metric="price",
                           condition="below", warning=100, alert=90, clear=105)


def evaluate(stub, last: float, db_url: str) -> str:
    write_prices(db_url, [120.0] * 30 + [last])
    reply = stub.Evaluate(alerts_pb2.EvaluateRequest(rules=[RULE]), timeout=30)
    return reply.statuses[0].grade


def test_alertmanager_lists_firing_alerts_past_resolve_timeout_and_sees_the_resolve(env, alertmanager):
    db_url, hook, start = env
    write_prices(db_url, [120.0] * 31)
    service = start("--alertmanager-url", alertmanager, "--alertmanager-resend-s", "2")
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule()), timeout=10)
            assert evaluate(stub, 95.0, db_url) == "WARNING"
            assert wait_until(lambda: [a["annotations"]["grade"] for a in listed(alertmanager)] == ["WARNING"])
            assert evaluate(stub, 85.0, db_url) == "ALERT"  # escalation: the same alert, now ALERT
            assert wait_until(lambda: [a["annotations"]["grade"] for a in listed(alertmanager)] == ["ALERT"])
            # Past resolve_timeout, still listed: the firing alert is re-sent while CryptoLens says ALERT.
            deadline = time.monotonic() + 3 * RESOLVE_TIMEOUT_S
            while time.monotonic() < deadline:
                alerts = listed(alertmanager)
                assert len(alerts) == 1 and alerts[0]["status"]["state"] == "active", alerts
                time.sleep(0.5)
            assert evaluate(stub, 110.0, db_url) == "OK"
            said_ok = time.monotonic()
            assert wait_until(lambda: listed(alertmanager) == [], timeout=60)
            assert time.monotonic() - said_ok < 60
            # The webhook got the fire, the escalation and the resolve despite the one-hour cooldown.
            assert wait_until(lambda: [b["grade"] for b in hook.received if b["rule"] == RULE]
                              == ["WARNING", "ALERT", "OK"])
    finally:
        service.stop()


def test_deleting_a_firing_rule_resolves_it_everywhere(env, alertmanager):
    db_url, hook, start = env
    write_prices(db_url, [120.0] * 31)
    service = start("--alertmanager-url", alertmanager, "--alertmanager-resend-s", "2")
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule()), timeout=10)
            assert evaluate(stub, 85.0, db_url) == "ALERT"
            assert wait_until(lambda: len(listed(alertmanager)) == 1)
            assert gauges(service) == {RULE: "2.0"}
            assert stub.DeleteRule(alerts_pb2.DeleteRuleRequest(id=RULE), timeout=10).deleted
            active = stub.ListAlerts(alerts_pb2.ListAlertsRequest(rule=RULE), timeout=10).active
            assert list(active) == []
            assert wait_until(lambda: listed(alertmanager) == [], timeout=30)
            time.sleep(2 * 2 + 1)  # two re-send rounds: a deleted rule is not brought back
            assert listed(alertmanager) == []
            assert wait_until(lambda: [b["grade"] for b in hook.received if b["rule"] == RULE] == ["ALERT", "OK"])
            assert gauges(service) == {}  # the gauge is gone, not stuck at 2
    finally:
        service.stop()


def test_disabling_a_firing_rule_resolves_it(env):
    db_url, hook, start = env
    write_prices(db_url, [120.0] * 31)
    service = start()
    try:
        with grpc.insecure_channel(service.addr) as channel:
            stub = alerts_pb2_grpc.AlertsServiceStub(channel)
            stub.CreateRule(alerts_pb2.CreateRuleRequest(rule=rule()), timeout=10)
            assert evaluate(stub, 85.0, db_url) == "ALERT"
            disabled = rule()
            disabled.enabled = False
            stub.UpdateRule(alerts_pb2.UpdateRuleRequest(rule=disabled), timeout=10)
            assert list(stub.ListAlerts(alerts_pb2.ListAlertsRequest(rule=RULE), timeout=10).active) == []
            assert wait_until(lambda: [b["grade"] for b in hook.received if b["rule"] == RULE] == ["ALERT", "OK"])
            assert "was disabled" in [b for b in hook.received if b["rule"] == RULE][-1]["message"]
    finally:
        service.stop()
