"""gRPC over TLS between real processes, with a CA the test makes: every server TLS only, clients
(Core and Alerts to Fetch, the UI client, the health probe, grpcurl) verifying it; plaintext and
strangers refused; mTLS; bad files stop a service with one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cryptolens.v1 import core_pb2, core_pb2_grpc
from services.common.tls import ClientTLS, channel
from tests.conftest import ROOT, RedisServer, free_port, require_tool
from tests.integration.services import ServiceProcess, Stack
from tests.tls_certs import TestCA
from tests.unit.test_helm import container, mounted_env, render
from ui.client import CryptoLensClient, ServiceError

SERVING = health_pb2.HealthCheckResponse.SERVING
FETCH_ARGS = ("--provider", "simulated", "--symbols", "BTC-USD", "--history-days", "7", "--refresh-s", "30")


def health(addr: str, tls: ClientTLS, timeout: float = 2.0) -> int:
    with channel(addr, tls) as conn:
        return health_pb2_grpc.HealthStub(conn).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status


def wait_serving(service: ServiceProcess, tls: ClientTLS, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise AssertionError(f"{service.name} exited with {service.proc.returncode}:\n{service.log()}")
        try:
            if health(service.addr, tls, 1.0) == SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{service.name} never SERVING over TLS:\n{service.log()[-3000:]}")


def refused(addr: str, tls: ClientTLS) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        health(addr, tls)
    return exc.value


def get_stats(addr: str, tls: ClientTLS, symbol: str, interval: str = "1h"):
    with channel(addr, tls) as conn:
        return core_pb2_grpc.CoreServiceStub(conn).GetStats(
            core_pb2.GetStatsRequest(symbol=symbol, interval=interval, lookback="7d"), timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    ca = TestCA(folder)
    return {"ca": ca, "server": ca.issue("server"), "client": ca.issue("client", usages=("client",)),
            "stranger": TestCA(folder, "Stranger CA")}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("tls-redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def tls_stack(certs, redis_url, tmp_path_factory):
    """Fetch, Core and Alerts serving TLS only; Core and Alerts reach Fetch over TLS."""
    server, ca = certs["server"], certs["ca"]
    stack = Stack(redis_url, tmp_path_factory.mktemp("tls-stack"), extra_env={
        "CRYPTOLENS_TLS_CERT_FILE": str(server.cert), "CRYPTOLENS_TLS_KEY_FILE": str(server.key),
        "CRYPTOLENS_TLS_CA_FILE": str(ca.cert)})
    stack.add("fetch", *FETCH_ARGS)
    stack.add("core")
    stack.add("alerts", "--symbols", "BTC-USD")
    try:
        for name in ("fetch", "core", "alerts"):
            wait_serving(stack[name], ClientTLS(str(ca.cert)))
        yield stack
    finally:
        stack.stop()


def test_get_stats_and_core_fetch_through_over_tls(tls_stack, certs):
    tls = ClientTLS(str(certs["ca"].cert))
    stats = get_stats(tls_stack["core"].addr, tls, "BTC-USD")
    assert stats.count > 100 and stats.source == "simulated"
    # XRP-USD 4h is in nobody's watch list: Core gets it from Fetch, over TLS.
    through = get_stats(tls_stack["core"].addr, tls, "XRP-USD", "4h")
    assert through.count > 20 and through.source == "simulated"
    assert '"tls": true' in tls_stack["fetch"].log()


def test_plaintext_and_a_stranger_ca_are_refused(tls_stack, certs):
    for name in ("fetch", "core", "alerts"):
        addr = tls_stack[name].addr
        assert refused(addr, ClientTLS()).code() == grpc.StatusCode.UNAVAILABLE, name
        assert refused(addr, ClientTLS(str(certs["stranger"].cert))).code() == grpc.StatusCode.UNAVAILABLE, name
        # The certificate is for 127.0.0.1 and localhost; another name does not verify.
        wrong_name = ClientTLS(str(certs["ca"].cert), server_name="core.example.com")
        assert refused(addr, wrong_name).code() == grpc.StatusCode.UNAVAILABLE, name


def test_grpcurl_with_the_ca_lists_services(tls_stack, certs):
    grpcurl = require_tool("grpcurl")
    addr = tls_stack["core"].addr
    listed = subprocess.run([grpcurl, "-cacert", str(certs["ca"].cert), "-max-time", "20", addr, "list"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "cryptolens.v1.CoreService" in listed.stdout.split() and "grpc.health.v1.Health" in listed.stdout
    plain = subprocess.run([grpcurl, "-plaintext", "-max-time", "10", addr, "list"], capture_output=True,
                           text=True, timeout=60)
    assert plain.returncode != 0 and "cryptolens.v1.CoreService" not in plain.stdout


def test_health_probe_and_ui_client_use_the_ca_from_the_environment(tls_stack, certs, monkeypatch):
    env = {**os.environ, "CRYPTOLENS_TLS_CA_FILE": str(certs["ca"].cert)}
    for name in ("fetch", "core", "alerts"):
        probe = subprocess.run([sys.executable, "-m", "services.healthcheck", tls_stack[name].addr], cwd=ROOT,
                               env=env, capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0 and "SERVING" in probe.stdout, probe.stderr
    plain = subprocess.run([sys.executable, "-m", "services.healthcheck", tls_stack["core"].addr], cwd=ROOT,
                           env={k: v for k, v in env.items() if k != "CRYPTOLENS_TLS_CA_FILE"},
                           capture_output=True, text=True, timeout=30)
    assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr

    addrs = {f"{n}_addr": tls_stack[n].addr for n in ("fetch", "core", "alerts")}
    monkeypatch.delenv("CRYPTOLENS_TLS_CA_FILE", raising=False)
    with pytest.raises(ServiceError, match="not reachable"):
        CryptoLensClient(**addrs, timeout_s=5).stats("BTC-USD", "1h", "7d")
    monkeypatch.setenv("CRYPTOLENS_TLS_CA_FILE", str(certs["ca"].cert))
    client = CryptoLensClient(**addrs, timeout_s=30)
    assert int(client.stats("BTC-USD", "1h", "7d")["count"]) > 100  # int64: a string in JSON
    assert isinstance(client.rules(), list) and "BTC-USD" in client.list_series()[1]


@pytest.fixture(scope="module")
def mtls_fetch(certs, redis_url, tmp_path_factory):
    """A Fetch that requires a client certificate signed by the test CA."""
    server, ca = certs["server"], certs["ca"]
    stack = Stack(redis_url, tmp_path_factory.mktemp("mtls"), extra_env={
        "CRYPTOLENS_TLS_CERT_FILE": str(server.cert), "CRYPTOLENS_TLS_KEY_FILE": str(server.key),
        "CRYPTOLENS_TLS_CA_FILE": str(ca.cert)})
    stack.add("fetch", *FETCH_ARGS, "--tls-client-ca-file", str(ca.cert))
    try:
        client = certs["client"]
        wait_serving(stack["fetch"], ClientTLS(str(ca.cert), str(client.cert), str(client.key)))
        yield stack
    finally:
        stack.stop()


def test_mtls_needs_a_client_certificate(mtls_fetch, certs):
    ca, client = str(certs["ca"].cert), certs["client"]
    addr = mtls_fetch["fetch"].addr
    assert refused(addr, ClientTLS(ca)).code() == grpc.StatusCode.UNAVAILABLE
    stranger = certs["stranger"].issue("stranger-client", usages=("client",))  # a certificate the CA never signed
    assert refused(addr, ClientTLS(ca, str(stranger.cert), str(stranger.key))).code() == grpc.StatusCode.UNAVAILABLE
    assert health(addr, ClientTLS(ca, str(client.cert), str(client.key))) == SERVING


def test_core_presents_its_client_certificate_to_fetch(mtls_fetch, certs):
    ca, client = str(certs["ca"].cert), certs["client"]
    without = mtls_fetch.add("core")  # TLS, but no client certificate
    try:
        wait_serving(without, ClientTLS(ca))
        with pytest.raises(grpc.RpcError) as exc:
            get_stats(without.addr, ClientTLS(ca), "DOGE-USD", "4h")
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, exc.value.details()
    finally:
        without.stop()
        del mtls_fetch.services["core"]
    core = mtls_fetch.add("core", "--tls-client-cert-file", str(client.cert), "--tls-client-key-file",
                          str(client.key))
    wait_serving(core, ClientTLS(ca))
    stats = get_stats(core.addr, ClientTLS(ca), "DOGE-USD", "4h")
    assert stats.count > 20 and stats.source == "simulated"


def serve_fetch(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CRYPTOLENS_REDIS_URL": "redis://127.0.0.1:1/0"}
    return subprocess.run([sys.executable, "-m", "services.cli", "serve", "fetch", "--host", "127.0.0.1",
                           "--grpc-port", str(free_port()), "--metrics-port", str(free_port()),
                           "--provider", "simulated", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", ["missing key", "key of another certificate", "not a certificate",
                                  "cert without key", "client CA without cert"])
def test_a_bad_tls_file_stops_the_service_with_one_line(certs, tmp_path, case):
    server, other = certs["server"], certs["client"]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    args = {
        "missing key": ["--tls-cert-file", str(server.cert), "--tls-key-file", str(tmp_path / "absent.pem")],
        "key of another certificate": ["--tls-cert-file", str(server.cert), "--tls-key-file", str(other.key)],
        "not a certificate": ["--tls-cert-file", str(garbage), "--tls-key-file", str(server.key)],
        "cert without key": ["--tls-cert-file", str(server.cert)],
        "client CA without cert": ["--tls-client-ca-file", str(certs["ca"].cert)],
    }[case]
    result = serve_fetch(tmp_path, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--tls-" in lines[0] and "Traceback" not in result.stderr, result.stderr
    for key in (server.key, other.key):  # never a key's content
        body = key.read_text().splitlines()[1]
        assert body not in result.stdout + result.stderr


def test_the_charts_tls_probes_work_as_rendered(certs, redis_url, tmp_path):
    """The chart with mTLS on: a Fetch configured by the rendered TLS environment, the mounted files
    holding a real certificate, answers the rendered readiness and liveness exec probes."""
    ca, name = certs["ca"], "grpc.cryptolens.internal"
    both = ca.issue("chart", hosts=(name,), usages=("server", "client"))  # one certificate, as in the chart
    docs = render({"tls": {"enabled": True, "secretName": "grpc-tls", "serverName": name, "mutual": True}})
    files = {"grpc-tls": {"tls.crt": both.cert.read_text(), "tls.key": both.key.read_text(),
                          "ca.crt": ca.cert.read_text()}}
    rendered = mounted_env(docs, "cryptolens-fetch", tmp_path / "pod", files)
    tls_env = {k: v for k, v in rendered.items() if k.startswith("CRYPTOLENS_TLS_")}
    assert {"CRYPTOLENS_TLS_CLIENT_CA_FILE", "CRYPTOLENS_TLS_CLIENT_CERT_FILE"} <= set(tls_env)
    fetch = Stack(redis_url, tmp_path, extra_env=tls_env).add("fetch", *FETCH_ARGS)
    try:
        wait_serving(fetch, ClientTLS.from_env(tls_env))
        c = container(docs, "cryptolens-fetch")
        for probe in ("readinessProbe", "livenessProbe"):
            command = [part.replace(":50051", f":{fetch.grpc_port}") for part in c[probe]["exec"]["command"]]
            result = subprocess.run(command, cwd=ROOT, env={**os.environ, **tls_env, "PATH": os.path.dirname(
                sys.executable) + os.pathsep + os.environ["PATH"]}, capture_output=True, text=True, timeout=30)
            assert result.returncode == 0 and "SERVING" in result.stdout, (probe, result.stderr)
        without_cert = {k: v for k, v in tls_env.items() if "CLIENT_" not in k}  # a probe without the client cert
        result = subprocess.run([sys.executable, "-m", "services.healthcheck", fetch.addr], cwd=ROOT,
                                env={**os.environ, **without_cert}, capture_output=True, text=True, timeout=30)
        assert result.returncode == 1 and "UNAVAILABLE" in result.stderr
    finally:
        fetch.stop()
