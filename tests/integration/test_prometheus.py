"""A real Prometheus scrapes the services; promtool lints what they expose."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client.parser import text_string_to_metric_families

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc, core_pb2, core_pb2_grpc, fetch_pb2, fetch_pb2_grpc
from tests.conftest import RedisServer, free_port, require_tool, wait_for_port
from tests.integration.services import ServiceProcess
from tests.integration.test_grafana_dashboard import wait_ready


def metrics_text(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def samples(port: int) -> list:
    return [s for family in text_string_to_metric_families(metrics_text(port)) for s in family.samples]


def value(port: int, name: str, **labels: str) -> float:
    return sum(s.value for s in samples(port) if s.name == name and labels.items() <= s.labels.items())


def _ts(iso: str) -> Timestamp:
    t = Timestamp()
    t.FromJsonString(iso)
    return t


def test_rpc_metrics_follow_grpc_prometheus_and_no_label_is_called_service(stack):
    """The Prometheus Operator's target label ``service`` would rename ours to ``exported_service``;
    streams count messages, never a latency (their duration is the client's choice)."""
    with grpc.insecure_channel(stack["fetch"].addr) as channel:
        fetch = fetch_pb2_grpc.FetchServiceStub(channel)
        fetch.Backfill(fetch_pb2.BackfillRequest(symbol="XRP-USD", interval="1d", start=_ts("2024-03-01T00:00:00Z"),
                                                 end=_ts("2024-03-05T00:00:00Z")), timeout=30)
        # Resumed from the log's start: the write above comes first, however slow the subscription.
        stream = fetch.WatchBars(fetch_pb2.WatchBarsRequest(symbols=["XRP-USD"], after="0-0"), timeout=20)
        assert next(iter(stream)).symbol == "XRP-USD"
        stream.cancel()
    with grpc.insecure_channel(stack["alerts"].addr) as channel:
        alerts_pb2_grpc.AlertsServiceStub(channel).ListRules(alerts_pb2.ListRulesRequest(), timeout=10)
    port = stack["fetch"].metrics_port
    watch = {"grpc_type": "server_stream", "grpc_service": "cryptolens.v1.FetchService", "grpc_method": "WatchBars"}
    deadline = time.monotonic() + 10
    while value(port, "grpc_server_handled_total", **watch) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)  # the stream's end is counted once the server sees the cancel
    assert value(port, "grpc_server_handled_total", grpc_code="CANCELLED", **watch) >= 1
    assert value(port, "grpc_server_started_total", **watch) >= 1
    assert value(port, "grpc_server_msg_sent_total", **watch) >= 1
    backfill = {"grpc_type": "unary", "grpc_method": "Backfill"}
    assert value(port, "grpc_server_handling_seconds_count", **backfill) >= 1
    assert value(port, "cryptolens_ingested_bars_total", symbol="XRP-USD", interval="1d", provider="simulated") >= 4
    for name in ("fetch", "core", "alerts"):
        found = samples(stack[name].metrics_port)
        assert [s for s in found if "service" in s.labels] == [], name
        assert {s.labels["grpc_type"] for s in found if s.name.startswith("grpc_server_handling_seconds")} == {"unary"}
        assert not [s for s in found if s.name.startswith("cryptolens_rpc_")], name


def test_redis_errors_are_counted_and_redis_up_drops(tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    core = ServiceProcess("core", free_port(), free_port(), [], {"CRYPTOLENS_REDIS_URL": redis.url,
                                                                 "CRYPTOLENS_REDIS_CHECK_S": "0.5"},
                          tmp_path / "core.log").start()
    try:
        core.wait_serving()
        port = core.metrics_port
        up = {"grpc_service": "cryptolens.v1.CoreService"}
        assert value(port, "cryptolens_redis_up", **up) == 1
        assert value(port, "cryptolens_redis_errors_total", kind="connection") == 0
        redis.stop()
        deadline = time.monotonic() + 20
        while value(port, "cryptolens_redis_errors_total", kind="connection") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert value(port, "cryptolens_redis_errors_total", kind="connection") >= 2
        assert value(port, "cryptolens_redis_up", **up) == 0
    finally:
        core.stop()
        redis.stop()


def test_promtool_accepts_the_exposition(stack):
    promtool = require_tool("promtool")
    for name in ("fetch", "core", "alerts"):
        result = subprocess.run([promtool, "check", "metrics"], input=metrics_text(stack[name].metrics_port),
                                capture_output=True, text=True, timeout=30)
        # promtool exits 0 when the text parses; lint remarks (if any) are printed, and we want none of ours.
        assert result.returncode == 0, result.stdout + result.stderr
        ours = [line for line in (result.stdout + result.stderr).splitlines()
                if "cryptolens_" in line or "grpc_" in line]
        assert ours == []


@pytest.fixture
def prometheus(stack, tmp_path):
    binary = require_tool("prometheus")
    port = free_port()
    targets = [f"127.0.0.1:{stack[n].metrics_port}" for n in ("fetch", "core")]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: cryptolens\n    static_configs: [{{targets: {json.dumps(targets)}}}]\n")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 30)
        wait_ready(f"http://127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success"
    return body["data"]["result"]


def test_prometheus_scrapes_rpc_metrics(stack, prometheus):
    with grpc.insecure_channel(stack["core"].addr) as channel:
        core_pb2_grpc.CoreServiceStub(channel).GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD", lookback="1d"),
                                                        timeout=30)
    deadline = time.monotonic() + 30
    up, calls = [], []
    while time.monotonic() < deadline:
        up = query(prometheus, 'up{job="cryptolens"} == 1')
        calls = query(prometheus, 'grpc_server_handled_total{grpc_method="GetStats",grpc_code="OK"}')
        if len(up) == 2 and calls:
            break
        time.sleep(0.5)
    assert len(up) == 2, up
    assert calls and float(calls[0]["value"][1]) >= 1
    latency = query(prometheus, 'histogram_quantile(0.5, sum by (le) (grpc_server_handling_seconds_bucket'
                                '{grpc_method="GetStats"}))')
    assert latency and float(latency[0]["value"][1]) > 0
