"""Every panel of the Grafana dashboard shows data from a real stack scraped by a real Prometheus.

Fetch (Binance provider against a local replay of its API, and its stream against a replay of a
recorded Binance session), Core and Alerts (a webhook receiver on loopback) run as processes on
their own Redis; Debian's ``prometheus`` scrapes them every second.
While calls flow, every target expression of helm/cryptolens/files/grafana-dashboard.json (Grafana
variables replaced by concrete values) is asked of Prometheus' HTTP API and must return at least
one finite sample, and every metric the dashboard names must exist.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc, core_pb2, core_pb2_grpc, fetch_pb2, fetch_pb2_grpc
from tests.conftest import ROOT, RedisServer, free_port, require_tool, wait_for_port
from tests.integration.services import Stack
from tests.replay_server import ReplayServer, SyntheticMarket
from tests.webhook_receiver import WebhookReceiver
from tests.ws_replay_server import WsReplayServer

DASHBOARD = ROOT / "helm" / "cryptolens" / "files" / "grafana-dashboard.json"
RULES = ROOT / "helm" / "cryptolens" / "files" / "prometheus-rules.yaml"
VARIABLES = {"$__rate_interval": "15s", "$job": ".+"}  # 15 s: several 1 s scrapes per window


def panel_targets() -> list[tuple[str, str]]:
    """(panel title, expression) for every target, with Grafana's variables replaced."""
    found = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"{panel['title']}: unreplaced variable in {expr}"
            found.append((panel["title"], expr))
    return found


def api(base: str, path: str) -> dict:
    body = json.loads(urllib.request.urlopen(f"{base}/api/v1/{path}", timeout=5).read())
    assert body["status"] == "success", body
    return body["data"]


def query(base: str, expr: str) -> list[dict]:
    return api(base, "query?" + urllib.parse.urlencode({"query": expr}))["result"]


def has_data(result: list[dict]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def wait_ready(base: str, timeout: float = 30.0) -> None:
    """The port opens before Prometheus serves queries (503 until its storage is ready)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{base}/-/ready", timeout=5)
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def scraped_stack(tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    exchange = ReplayServer().__enter__()
    # FTM-USD is in the recorded stream session: the stream panels have frames, lag and a live bar.
    exchange.serve_market(SyntheticMarket(binance_symbols=frozenset({"BTCUSDT", "ETHUSDT", "SOLUSDT", "FTMUSDT"})))
    stream = WsReplayServer("binance_combined_stream_session.jsonl", speed=1).__enter__()
    webhook = WebhookReceiver()
    stack = Stack(redis.url, tmp_path)
    prometheus = None
    try:
        stack.add("fetch", "--provider", "binance", "--binance-url", exchange.url, "--refresh-s", "1",
                  "--history-days", "2", "--provider-timeout-s", "20", "--stream", "on",
                  "--binance-ws-url", stream.url, "--symbols", "BTC-USD,ETH-USD,SOL-USD,FTM-USD")
        stack.add("core")
        stack.add("alerts", "--eval-interval-s", "1", "--webhook-url", webhook.url)
        for name in ("fetch", "core", "alerts"):
            stack[name].wait_serving(60)
        port = free_port()
        targets = [f"127.0.0.1:{stack[n].metrics_port}" for n in ("fetch", "core", "alerts")]
        config = tmp_path / "prometheus.yml"
        config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                          f"rule_files: [{json.dumps(str(RULES))}]\n"
                          "scrape_configs:\n"
                          f"  - job_name: cryptolens\n    static_configs: [{{targets: {json.dumps(targets)}}}]\n")
        prometheus = subprocess.Popen([require_tool("prometheus"), f"--config.file={config}",
                                       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{port}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, 30)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        yield stack, base
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        stack.stop()
        webhook.close()
        stream.__exit__(None, None, None)
        exchange.__exit__(None, None, None)
        redis.stop()


def traffic(stack: Stack, stop: threading.Event) -> None:
    """What users do: stats (cache hits and a bad request), an open stream of alert events, and an
    operator's backfill now and then (with the stream on, nothing else asks the provider's REST API)."""
    with grpc.insecure_channel(stack["core"].addr) as core_channel, \
            grpc.insecure_channel(stack["alerts"].addr) as alerts_channel, \
            grpc.insecure_channel(stack["fetch"].addr) as fetch_channel:
        core = core_pb2_grpc.CoreServiceStub(core_channel)
        fetch = fetch_pb2_grpc.FetchServiceStub(fetch_channel)
        events = alerts_pb2_grpc.AlertsServiceStub(alerts_channel).WatchAlerts(alerts_pb2.WatchAlertsRequest(),
                                                                               timeout=120)
        try:
            turn = 0
            while not stop.wait(0.3):
                core.GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1h", lookback="1d"), timeout=30)
                with pytest.raises(grpc.RpcError):
                    core.GetStats(core_pb2.GetStatsRequest(symbol="not a symbol"), timeout=30)
                turn += 1
                if turn % 5 == 0:
                    start = Timestamp(seconds=int(time.time()) - 86_400)
                    fetch.Backfill(fetch_pb2.BackfillRequest(symbol="BTC-USD", interval="1h", start=start), timeout=30)
        finally:
            events.cancel()


def test_every_dashboard_panel_shows_data(scraped_stack):
    stack, prometheus = scraped_stack
    with grpc.insecure_channel(stack["alerts"].addr) as channel:  # a rule that fires: a transition, a notification
        alerts_pb2_grpc.AlertsServiceStub(channel).CreateRule(alerts_pb2.CreateRuleRequest(rule=alerts_pb2.Rule(
            id="btc-above-1", kind="threshold", symbol="BTC-USD", interval="1h", window="24h", metric="price",
            condition="above", warning=1, alert=2, clear=0.5, pending_for_s=0)), timeout=10)
    with grpc.insecure_channel(stack["fetch"].addr) as channel:  # a server stream that sends messages
        bars = fetch_pb2_grpc.FetchServiceStub(channel).WatchBars(
            fetch_pb2.WatchBarsRequest(symbols=["BTC-USD"], after="0-0"), timeout=120)  # from the backfill on
        stop = threading.Event()
        errors: list[BaseException] = []

        def run():
            try:
                traffic(stack, stop)
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        targets = panel_targets()
        missing = targets
        deadline = time.monotonic() + 60
        try:
            next(iter(bars))  # the stream stays open meanwhile
            while missing and time.monotonic() < deadline and not errors:
                missing = [(title, expr) for title, expr in missing if not has_data(query(prometheus, expr))]
                time.sleep(1)
        finally:
            stop.set()
            bars.cancel()
            thread.join(timeout=40)
    assert not errors, errors
    assert missing == [], "panels without data:\n" + "\n".join(f"{t}: {e}" for t, e in missing)

    names = sorted({n for _, expr in targets for n in re.findall(r"([a-z_:][a-z0-9_:]*)\{", expr)})
    counted = query(prometheus, f'count by (__name__) ({{__name__=~"{"|".join(names)}"}})')
    present = {s["metric"]["__name__"] for s in counted}
    assert set(names) - present == set()
    streamed = query(prometheus, 'max_over_time(cryptolens_stream_frames_total{provider="binance", kind="trade"}[5m])')
    assert streamed and float(streamed[0]["value"][1]) > 0, "the stream panels show a stream that never ran"
    assert {"cryptolens_notifications_dead_letters_total", "cryptolens_ingested_bars_total",
            "cryptolens_redis_errors_total", "grpc_server_msg_sent_total"} <= present


def test_the_operator_alerts_evaluate_on_real_metrics(scraped_stack):
    """Prometheus loads the chart's rules and evaluates them without error on what the services
    export. A healthy stack with callers sending bad requests raises nothing but the market alert of
    a rule in ALERT: caller errors are not server errors."""
    stack, prometheus = scraped_stack
    with grpc.insecure_channel(stack["alerts"].addr) as channel:
        alerts_pb2_grpc.AlertsServiceStub(channel).CreateRule(alerts_pb2.CreateRuleRequest(rule=alerts_pb2.Rule(
            id="btc-above-1", kind="threshold", symbol="BTC-USD", interval="1h", window="24h", metric="price",
            condition="above", warning=1, alert=2, clear=0.5, pending_for_s=0)), timeout=10)
    stop = threading.Event()
    thread = threading.Thread(target=traffic, args=(stack, stop), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        active: set = set()
        rules: list[dict] = []
        while time.monotonic() < deadline:
            rules = [r for group in api(prometheus, "rules")["groups"] for r in group["rules"]]
            active = {(a["labels"]["alertname"], a["labels"].get("rule", ""))
                      for a in api(prometheus, "alerts")["alerts"]}
            evaluated = rules and not any(r["lastEvaluation"].startswith("0001") for r in rules)
            # 20 s of calls, so a wrongly counted caller error would have raised the error-ratio alert.
            if evaluated and ("CryptoLensAlertFiring", "btc-above-1") in active and time.monotonic() > deadline - 40:
                break
            time.sleep(1)
    finally:
        stop.set()
        thread.join(timeout=40)
    assert rules and {r["health"] for r in rules} == {"ok"}, [(r["name"], r.get("lastError")) for r in rules]
    assert active == {("CryptoLensAlertFiring", "btc-above-1")}
