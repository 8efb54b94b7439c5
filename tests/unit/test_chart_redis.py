"""The bundled Redis exactly as the chart renders it: its shell command, password file and
readiness probe run for real (Debian's redis-server on loopback), with only the in-pod paths
moved to a temporary directory and a free loopback port added."""

from __future__ import annotations

import base64
import subprocess
import time

import pytest
import redis

from services.common.config import load_settings
from services.core.server import CoreSettings
from tests.conftest import free_port, require_tool, wait_for_port
from tests.unit.test_helm import by_kind, container, mounted_env, render


class RenderedRedis:
    """Runs the rendered container command (sh -c ...) with its volumes under ``tmp``."""

    def __init__(self, values: dict, tmp):
        require_tool("redis-server")
        self.docs = render(values)
        self.redis = container(self.docs, "cryptolens-redis")
        secret = by_kind(self.docs, "Secret")["cryptolens-redis"]["data"]
        self.password = base64.b64decode(secret["redis-password"]).decode()
        (tmp / "auth").mkdir()
        (tmp / "auth" / "redis-password").write_text(self.password)
        (tmp / "data").mkdir(exist_ok=True)
        self.tmp, self.port, self.proc = tmp, free_port(), None

    def _local(self, script: str) -> str:
        return (script.replace("/etc/redis-auth", str(self.tmp / "auth"))
                .replace("--dir /data", f"--dir {self.tmp / 'data'} --port {self.port} --bind 127.0.0.1"))

    def start(self) -> None:
        assert self.redis["command"] == ["sh", "-c"]
        self.proc = subprocess.Popen(["sh", "-c", self._local(self.redis["args"][0])],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:  # SIGTERM, as the kubelet sends: Redis flushes the AOF and exits
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def probe(self) -> int:
        command = self.redis["readinessProbe"]["exec"]["command"]
        local = [*command[:-1], self._local(command[-1]).replace("redis-cli ping", f"redis-cli -p {self.port} ping")]
        return subprocess.run(local, capture_output=True, timeout=10, check=False).returncode

    def client(self, password: str | None) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=password, socket_timeout=5)


@pytest.fixture
def bundled(tmp_path):
    servers = []

    def start(values: dict | None = None) -> RenderedRedis:
        server = RenderedRedis(values or {}, tmp_path)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.stop()


def test_password_is_required_and_the_services_url_carries_it(bundled, tmp_path):
    server = bundled()
    assert len(server.password) == 32 and server.password.isalnum()
    assert server.password not in str(server.redis)  # only in the Secret, read from a file
    with pytest.raises(redis.AuthenticationError):
        server.client(None).ping()
    assert server.probe() == 0
    (tmp_path / "auth" / "redis-password").write_text("wrong")
    assert server.probe() != 0  # readiness fails on a refused password, not just a closed port
    # What the services read: the generated URL from the mounted Secret, through their settings.
    url = load_settings(CoreSettings, env=mounted_env(server.docs, "cryptolens-core", tmp_path / "core")).redis_url
    local = redis.Redis.from_url(url.replace("@cryptolens-redis:6379", f"@127.0.0.1:{server.port}"))
    assert local.ping() is True


def test_persisted_by_default_and_full_means_refused_not_evicted(bundled):
    server = bundled({"redis": {"maxmemory": "2mb"}})
    db = server.client(server.password)
    assert db.config_get("appendonly") == {"appendonly": "yes"}
    assert db.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    db.set("bars:{BTC-USD:1h}", "kept")
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(2000):  # bounded: 2000 x 4 kB is far above 2 MB
            db.set(f"filler:{i}", "x" * 4096)
    assert db.get("bars:{BTC-USD:1h}") == b"kept"  # nothing was evicted to make room
    db.delete(*[f"filler:{i}" for i in range(2000)])

    server.stop()  # a pod restart: same volume, same password
    server.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            assert server.client(server.password).get("bars:{BTC-USD:1h}") == b"kept"
            break
        except redis.exceptions.BusyLoadingError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_without_persistence_the_data_is_memory_only(bundled):
    server = bundled({"redis": {"persistence": {"enabled": False}}})
    db = server.client(server.password)
    assert db.config_get("appendonly") == {"appendonly": "no"} and db.config_get("save") == {"save": ""}
    db.set("k", "v")
    server.stop()
    server.start()
    assert server.client(server.password).get("k") is None


def test_backup_and_restore_as_docs_kubernetes_md_describes(bundled, tmp_path):
    """Backup: `redis-cli --rdb` from the live server. Restore: the snapshot becomes the base of a
    fresh append-only file (a manifest naming it), then Redis restarts onto it."""
    server = bundled()
    db = server.client(server.password)
    db.set("bars:{BTC-USD:1h}", "before-backup")
    backup = tmp_path / "backup.rdb"
    result = subprocess.run(["redis-cli", "-p", str(server.port), "--rdb", str(backup)], capture_output=True,
                            text=True, timeout=30, env={"REDISCLI_AUTH": server.password, "PATH": "/usr/bin:/bin"},
                            check=False)
    assert result.returncode == 0 and backup.stat().st_size > 0, result.stderr
    db.set("bars:{BTC-USD:1h}", "after-backup")
    db.set("later", "x")

    server.stop()
    data = tmp_path / "data"
    (data / "appendonlydir").rename(data / "appendonlydir.old")
    (data / "appendonlydir").mkdir()
    backup.rename(data / "appendonlydir" / "appendonly.aof.1.base.rdb")
    (data / "appendonlydir" / "appendonly.aof.manifest").write_text("file appendonly.aof.1.base.rdb seq 1 type b\n")
    server.start()
    db = server.client(server.password)
    assert db.get("bars:{BTC-USD:1h}") == b"before-backup" and db.get("later") is None
    db.set("after-restore", "y")  # and the restored AOF keeps growing across restarts
    server.stop()
    server.start()
    assert server.client(server.password).get("after-restore") == b"y"
