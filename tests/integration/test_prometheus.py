"""A real Prometheus scrapes the services; promtool lints what they expose."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request

import grpc
import pytest

from cryptolens.v1 import core_pb2, core_pb2_grpc
from tests.conftest import free_port, require_tool, wait_for_port


def metrics_text(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def test_promtool_accepts_the_exposition(stack):
    promtool = require_tool("promtool")
    for name in ("fetch", "core"):
        result = subprocess.run([promtool, "check", "metrics"], input=metrics_text(stack[name].metrics_port),
                                capture_output=True, text=True, timeout=30)
        # promtool exits 0 when the text parses; lint remarks (if any) are printed, and we want none of ours.
        assert result.returncode == 0, result.stdout + result.stderr
        ours = [line for line in (result.stdout + result.stderr).splitlines() if "cryptolens_" in line]
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
        calls = query(prometheus, 'cryptolens_rpc_requests_total{method="GetStats",code="OK"}')
        if len(up) == 2 and calls:
            break
        time.sleep(0.5)
    assert len(up) == 2, up
    assert calls and float(calls[0]["value"][1]) >= 1
    latency = query(prometheus, 'histogram_quantile(0.5, sum by (le) (cryptolens_rpc_latency_seconds_bucket'
                                '{method="GetStats"}))')
    assert latency and float(latency[0]["value"][1]) > 0
