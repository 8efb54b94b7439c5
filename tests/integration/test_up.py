"""`cryptolens up` end to end on the default ports: the README's run command, minus the venv setup."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool

DEFAULT_PORTS = (50051, 50052, 50053, 9101, 9102, 9103, 8501)


def _children(pid: int) -> set[int]:
    """Every live descendant of pid, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    busy = [p for p in DEFAULT_PORTS if _port_busy(p)]
    if busy:
        pytest.fail(f"default ports {busy} are taken on this machine; `cryptolens up` needs them")
    tmp = tmp_path_factory.mktemp("up")
    log = open(tmp / "up.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--data-dir", str(tmp / "data")],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    while "CryptoLens is up." not in (tmp / "up.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("cryptolens up did not come up within 60 s:\n" + (tmp / "up.log").read_text()[-4000:])
        time.sleep(0.25)
    yield proc, tmp / "up.log"
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


def grpcurl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("grpcurl"), "-plaintext", "-max-time", "30", *args], capture_output=True,
                          text=True, timeout=60)


def test_services_list_health_and_reflection(up):
    for port, service in ((50051, "FetchService"), (50052, "CoreService"), (50053, "AlertsService")):
        result = grpcurl(f"localhost:{port}", "list")
        assert result.returncode == 0, result.stderr
        listed = result.stdout.split()
        assert f"cryptolens.v1.{service}" in listed and "grpc.health.v1.Health" in listed
        assert any(name.startswith("grpc.reflection.") for name in listed)


def test_get_stats_then_metrics(up):
    result = grpcurl("-d", '{"symbol":"BTC-USD"}', "localhost:50052", "cryptolens.v1.CoreService/GetStats")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert int(stats["count"]) >= 90 * 24 and stats["annualized_volatility"] > 0 and stats["source"] == "simulated"
    grpcurl("localhost:50051", "cryptolens.v1.FetchService/ListSymbols")
    grpcurl("localhost:50053", "cryptolens.v1.AlertsService/ListRules")
    for port, method in ((9101, "ListSymbols"), (9102, "GetStats"), (9103, "ListRules")):
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert f'grpc_server_handled_total{{grpc_code="OK",grpc_method="{method}"' in text, port


def test_ui_answers(up):
    with urllib.request.urlopen("http://127.0.0.1:8501/_stcore/health", timeout=5) as reply:
        assert reply.status == 200 and reply.read() == b"ok"
    with urllib.request.urlopen("http://127.0.0.1:8501/", timeout=5) as reply:
        assert reply.status == 200 and b"<html" in reply.read().lower()


def test_sigterm_leaves_nothing_behind(up):
    proc, log = up
    children = _children(proc.pid)
    assert len(children) >= 5  # redis, fetch, core, alerts, ui
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    while any(_alive(pid) for pid in children) and time.monotonic() - started < 10:
        time.sleep(0.1)
    left = [pid for pid in children if _alive(pid)]
    assert left == [], f"still running after {time.monotonic() - started:.1f} s: {left}"
    assert time.monotonic() - started < 10
