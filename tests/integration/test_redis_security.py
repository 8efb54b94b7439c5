"""Redis credentials and TLS, against a real redis-server (and a Redis Cluster over TLS).

TLS: a CA and a server certificate for 127.0.0.1 made by the test (openssl); the client trusts the
server only with the CA file. Credentials: a password file and an ACL user; a wrong password makes
the service NOT_SERVING with one clear log line for the whole streak, never the password itself.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import redis.exceptions
from grpc_health.v1 import health_pb2

from services.common.bars import make_bars
from services.common.redis_client import Reachability, redis_client
from tests.conftest import free_port, require_tool, wait_for_port
from services.common.store import PriceStore
from tests.integration.redis_topologies import LocalCluster
from tests.integration.services import ServiceProcess

PASSWORD = "right-horse-battery"
WRONG = "wrong-staple-pw"


def _openssl(*args: str, cwd) -> None:
    subprocess.run([require_tool("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def certs(tmp_path):
    """ca.pem, and server.pem/server.key for 127.0.0.1 signed by it."""
    d = tmp_path / "certs"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=cryptolens test CA", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=d)
    return d


def _redis(tmp_path, *args: str, config: str = ""):
    """A redis-server on loopback; ``config`` goes in on stdin (a password never on the command line)."""
    port = free_port()
    proc = subprocess.Popen([require_tool("redis-server"), "-", "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path), *args, *(() if "--port" in args else
                                                                                    ("--port", str(port)))],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.stdin.write(config.encode())
    proc.stdin.close()
    return proc, port


@pytest.fixture
def tls_redis(tmp_path, certs):
    tls_port = free_port()
    proc, _ = _redis(tmp_path, "--port", "0", "--tls-port", str(tls_port),
                     "--tls-cert-file", str(certs / "server.pem"), "--tls-key-file", str(certs / "server.key"),
                     "--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-auth-clients", "no",
                     config=f"requirepass {PASSWORD}\n")
    try:
        wait_for_port(tls_port)
        yield tls_port
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def password_redis(tmp_path):
    proc, port = _redis(tmp_path, config=f"requirepass {PASSWORD}\n")
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.kill()
        proc.wait()


async def test_tls_needs_the_ca_that_signed_the_server(tls_redis, certs):
    url = f"rediss://127.0.0.1:{tls_redis}/0"
    trusted = redis_client(url, password=PASSWORD, ca_file=str(certs / "ca.pem"))
    untrusted = redis_client(url, password=PASSWORD)  # the system CAs do not know the test's CA
    plain = redis_client(f"redis://127.0.0.1:{tls_redis}/0", password=PASSWORD)
    try:
        assert await trusted.ping()
        await trusted.set("k", "v")
        assert await trusted.get("k") == b"v"
        with pytest.raises(redis.exceptions.ConnectionError, match="(?i)certificate"):
            await untrusted.ping()
        with pytest.raises(redis.exceptions.RedisError):
            await plain.ping()
    finally:
        for client in (trusted, untrusted, plain):
            await client.aclose()


def test_a_service_reaches_redis_over_tls_with_a_password_file(tls_redis, certs, tmp_path):
    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD + "\n")
    env = {"CRYPTOLENS_REDIS_URL": f"rediss://127.0.0.1:{tls_redis}/0",
           "CRYPTOLENS_REDIS_PASSWORD_FILE": str(secret), "CRYPTOLENS_REDIS_CA_FILE": str(certs / "ca.pem"),
           "CRYPTOLENS_FETCH_ADDR": f"127.0.0.1:{free_port()}"}
    core = ServiceProcess("core", free_port(), free_port(), [], env, tmp_path / "core.log").start()
    try:
        core.wait_serving(30)
        assert PASSWORD not in core.log()
    finally:
        core.stop()


async def test_a_cluster_over_tls(tmp_path, certs):
    cluster = LocalCluster(tmp_path / "cluster", replicas_per_master=0, tls=certs)
    try:
        cluster.start()
        assert cluster.url.startswith("rediss+cluster://")
        client = redis_client(cluster.url, ca_file=str(certs / "ca.pem"))
        untrusted = redis_client(cluster.url)
        try:
            assert await client.ping()
            store = PriceStore(client)
            for symbol in ("BTC-USD", "ETH-USD", "SOL-USD"):  # slots on several masters
                await store.write(symbol, "1h", make_bars([0, 3_600_000], [1, 2], [1, 2], [1, 2], [1, 2]), "test")
            assert len(await store.list_series()) == 3
            with pytest.raises(redis.exceptions.RedisClusterException, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusted.ping()
        finally:
            await client.aclose()
            await untrusted.aclose()
    finally:
        cluster.stop()


async def test_an_acl_user_from_the_url_or_the_settings(password_redis):
    admin = redis_client(f"redis://127.0.0.1:{password_redis}/0", password=PASSWORD)
    await admin.execute_command("ACL", "SETUSER", "reader", "on", ">reader-pw", "~cl:*", "+@read", "+ping")
    clients = [redis_client(f"redis://reader:reader-pw@127.0.0.1:{password_redis}/0"),
               redis_client(f"redis://127.0.0.1:{password_redis}/0", username="reader", password="reader-pw"),
               # the settings win over the URL's credentials
               redis_client(f"redis://reader:stale@127.0.0.1:{password_redis}/0", password="reader-pw")]
    try:
        for client in clients:
            assert await client.ping()
            assert await client.get("cl:nothing") is None
            with pytest.raises(redis.exceptions.NoPermissionError):
                await client.set("cl:x", "1")  # the ACL user, not the default one
    finally:
        for client in [admin, *clients]:
            await client.aclose()


def test_a_wrong_password_is_logged_once_and_never_shown(password_redis, tmp_path):
    secret = tmp_path / "redis-password"
    secret.write_text(WRONG)
    env = {"CRYPTOLENS_REDIS_URL": f"redis://127.0.0.1:{password_redis}/0", "CRYPTOLENS_REDIS_CHECK_S": "0.2",
           "CRYPTOLENS_REDIS_PASSWORD_FILE": str(secret), "CRYPTOLENS_FETCH_ADDR": f"127.0.0.1:{free_port()}"}
    core = ServiceProcess("core", free_port(), free_port(), [], env, tmp_path / "core.log").start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and core.health("liveness") != health_pb2.HealthCheckResponse.SERVING:
            time.sleep(0.1)
        time.sleep(3)  # about 15 failed checks
        assert core.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        log = core.log()
        assert log.count("redis refused our credentials") == 1, log[-3000:]
        assert WRONG not in log and PASSWORD not in log
    finally:
        core.stop()


async def test_a_wrong_cluster_password_is_logged_once(tmp_path, caplog):
    cluster = LocalCluster(tmp_path / "cluster", replicas_per_master=0, password=PASSWORD)
    try:
        cluster.start()
        wrong = Reachability(redis_client(cluster.url, password=WRONG))
        right = Reachability(redis_client(cluster.url, password=PASSWORD))
        try:
            for _ in range(3):
                with pytest.raises(redis.exceptions.RedisClusterException):
                    await wrong.ping()
            assert await right.ping()
        finally:
            await wrong.client.aclose()
            await right.client.aclose()
        refused = [r for r in caplog.records if "refused our credentials" in r.getMessage()]
        assert len(refused) == 1 and WRONG not in caplog.text and PASSWORD not in caplog.text
    finally:
        cluster.stop()
