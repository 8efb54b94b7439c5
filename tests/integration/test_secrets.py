"""No secret anywhere a run echoes it, and a local run listens on loopback only.

One `cryptolens up` with everything secret a deployment has: the Redis password it generates, a
webhook URL with a token in its path and query (the webhook refuses, so failures get logged), an
API key, a TLS key. Calls that succeed and calls that fail, a service with a wrong Redis password,
services stopped by bad settings; then every byte the run produced is searched for every secret:
output, files under the data dir, /metrics bodies, gRPC error messages, every child's command line.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc, core_pb2, core_pb2_grpc
from services.common.tls import ClientTLS, channel
from tests.conftest import ROOT, free_port, require_tool
from tests.integration.test_local_up import Up, descendants, pick_offset
from tests.tls_certs import TestCA
from tests.webhook_receiver import WebhookReceiver

API_KEY = "CG-apikey-5e1f0c2b9d"
PATH_TOKEN = "T0KEN-path-8a41c7"
QUERY_TOKEN = "S1G-query-02be9f"
WRONG_PASSWORD = "WRONG-redis-pass-77d1"
BAD_URL_SECRETS = ("T0KEN-in-a-bad-url-3c", "PASSWORD-in-a-bad-url-9f")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    require_tool("redis-server")
    tmp = tmp_path_factory.mktemp("secrets")
    ca = TestCA(tmp)
    server = ca.issue("server")
    hook = WebhookReceiver(default=503, path=f"/hooks/{PATH_TOKEN}?sig={QUERY_TOKEN}")  # refuses: failures logged
    env = {"CRYPTOLENS_TLS_CERT_FILE": str(server.cert), "CRYPTOLENS_TLS_KEY_FILE": str(server.key),
           "CRYPTOLENS_TLS_CA_FILE": str(ca.cert), "CRYPTOLENS_WEBHOOK_URL": hook.url,
           "CRYPTOLENS_COINGECKO_API_KEY": API_KEY, "CRYPTOLENS_EVAL_INTERVAL_S": "1",
           "CRYPTOLENS_NOTIFY_BACKOFF_S": "0.2", "CRYPTOLENS_NOTIFY_MAX_BACKOFF_S": "0.5"}
    up = Up(tmp, pick_offset(), "--data-dir", str(tmp / "data"), env=env)
    up.env.pop("CRYPTOLENS_REDIS_URL", None)  # its own Redis, with the password it generates
    up.start()
    try:
        up.wait_up(120)
        yield {"up": up, "tmp": tmp, "data": tmp / "data", "ca": ca, "key": server.key, "hook": hook}
    finally:
        if up.proc.poll() is None:
            up.ctrl_c()
        hook.close()


def listening_sockets(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state owned by one of ``pids``."""
    owner = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owner[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in owner:  # 0A: LISTEN
                continue
            hex_addr, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_addr)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian words
            address = ipaddress.ip_address(raw)
            address = getattr(address, "ipv4_mapped", None) or address  # gRPC binds ::ffff:127.0.0.1
            found.append((owner[fields[9]], str(address), int(hex_port, 16)))
    return found


def test_a_local_run_listens_on_loopback_only(run):
    up = run["up"]
    pids = set(descendants(up.proc.pid)) | {up.proc.pid}
    sockets = listening_sockets(pids)
    expected = {up.port(p) for p in (50051, 50052, 50053, 9101, 9102, 9103, 8501)}
    redis_port = int(re.search(r"redis://(?:\S*@)?127\.0\.0\.1:(\d+)/", up.log()).group(1))
    assert expected | {redis_port} <= {port for _, _, port in sockets}, sockets  # every server was seen
    assert [s for s in sockets if not ipaddress.ip_address(s[1]).is_loopback] == []


def serve(name: str, env: dict[str, str], seconds: float | None = None) -> str:
    """Output of `cryptolens serve NAME` with ``env``: run to its end, or for ``seconds`` then stopped."""
    argv = [sys.executable, "-m", "services.cli", "serve", name, "--host", "127.0.0.1", "--grpc-port",
            str(free_port()), "--metrics-port", str(free_port())]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=seconds or 60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    return out


def test_no_secret_in_anything_the_run_produced(run):
    up, data, hook = run["up"], run["data"], run["hook"]
    auth = (data / "redis-auth.conf").read_text()
    password = re.search(r"^requirepass (\S+)$", auth, re.MULTILINE).group(1)
    assert (data / "redis-auth.conf").stat().st_mode & 0o077 == 0  # owner-only
    key_lines = [line for line in run["key"].read_text().splitlines() if not line.startswith("-----")]
    secrets = {"redis password": password, "webhook path token": PATH_TOKEN, "webhook query token": QUERY_TOKEN,
               "API key": API_KEY, "wrong Redis password": WRONG_PASSWORD,
               **{f"bad-setting secret {i}": s for i, s in enumerate(BAD_URL_SECRETS)},
               **{f"TLS key line {i}": line for i, line in enumerate(key_lines)}}
    produced: dict[str, str] = {}

    tls = ClientTLS(str(run["ca"].cert))
    core_addr, alerts_addr = f"127.0.0.1:{up.port(50052)}", f"127.0.0.1:{up.port(50053)}"
    with channel(core_addr, tls) as conn:
        core = core_pb2_grpc.CoreServiceStub(conn)
        assert core.GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD", lookback="7d"), timeout=60).count > 100
        for bad in (core_pb2.GetStatsRequest(symbol="BTCUSD"), core_pb2.GetStatsRequest(symbol="ZZZQ-USD"),
                    core_pb2.GetStatsRequest(symbol="BTC-USD", lookback="999999d")):
            with pytest.raises(grpc.RpcError) as exc:
                core.GetStats(bad, timeout=60)
            produced[f"GetStats error {bad.symbol[:4]}"] = f"{exc.value.code()} {exc.value.details()}"
    with channel(core_addr, ClientTLS()) as plain, pytest.raises(grpc.RpcError) as exc:
        core_pb2_grpc.CoreServiceStub(plain).GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD"), timeout=10)
    produced["plaintext call"] = f"{exc.value.code()} {exc.value.details()}"
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE

    # A rule that fires at once: the alert goes to the webhook, which refuses it, again and again.
    rule = alerts_pb2.Rule(id="always-firing", kind="threshold", symbol="BTC-USD", interval="1h", window="24h",
                           metric="price", condition="above", warning=1, alert=2, clear=0.5, pending_for_s=0)
    with channel(alerts_addr, tls) as conn:
        alerts_pb2_grpc.AlertsServiceStub(conn).CreateRule(alerts_pb2.CreateRuleRequest(rule=rule), timeout=30)
    deadline = time.monotonic() + 60
    while len(hook.paths) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(hook.paths) >= 3 and PATH_TOKEN in hook.paths[0], hook.paths  # the secret URL was in use

    for name, base in (("fetch", 9101), ("core", 9102), ("alerts", 9103)):
        with urllib.request.urlopen(f"http://127.0.0.1:{up.port(base)}/metrics", timeout=10) as reply:
            produced[f"{name} /metrics"] = reply.read().decode()
    assert "cryptolens_notifications_total" in produced["alerts /metrics"]
    for pid, cmdline in descendants(up.proc.pid).items():
        produced[f"cmdline of {pid}"] = cmdline
    produced["cmdline of cryptolens up"] = Path(f"/proc/{up.proc.pid}/cmdline").read_bytes().decode()

    redis_port = re.search(r"redis://(?:\S*@)?127\.0\.0\.1:(\d+)/", up.log()).group(1)
    produced["wrong Redis password"] = serve("fetch", {
        "CRYPTOLENS_REDIS_URL": f"redis://:{WRONG_PASSWORD}@127.0.0.1:{redis_port}/0",
        "CRYPTOLENS_PROVIDER": "simulated"}, seconds=6)
    produced["bad webhook setting"] = serve("alerts", {
        "CRYPTOLENS_WEBHOOK_URL": f"ftp://hooks.example.com/{BAD_URL_SECRETS[0]}"})
    produced["bad Redis setting"] = serve("core", {
        "CRYPTOLENS_REDIS_URL": f"http://:{BAD_URL_SECRETS[1]}@127.0.0.1:6379/0"})
    assert "CRYPTOLENS_WEBHOOK_URL='ftp://hooks.example.com/***'" in produced["bad webhook setting"]
    assert "CRYPTOLENS_REDIS_URL='http://:***@127.0.0.1:6379/0'" in produced["bad Redis setting"]

    assert up.ctrl_c() == 0
    produced["cryptolens up output"] = up.log()
    assert "CryptoLens is up." in produced["cryptolens up output"]
    assert f"grpcurl -cacert {run['ca'].cert} localhost:{up.port(50052)} list" in produced["cryptolens up output"]
    for path in data.rglob("*"):
        if path.is_file() and path.name != "redis-auth.conf":  # where the password lives, owner-only
            produced[str(path.relative_to(data))] = path.read_bytes().decode("latin-1")
    assert any(name.endswith("redis.log") for name in produced) and any(".aof" in name for name in produced)

    leaks = [(secret, where) for secret, value in secrets.items() for where, text in produced.items()
             if value in text]
    assert leaks == []
