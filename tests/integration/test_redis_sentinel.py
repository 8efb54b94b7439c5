"""Fetch, Core and Alerts on a real Sentinel set: 1 master, 2 replicas, 3 sentinels, AOF every second
(and `cryptolens up --redis-url redis+sentinel://...`, which starts no Redis of its own).

Every Redis requires a password and the sentinels another, which the services read from
``CRYPTOLENS_REDIS_PASSWORD_FILE`` and ``CRYPTOLENS_REDIS_SENTINEL_PASSWORD_FILE`` (the URL has
none). The services find the master through ``redis+sentinel://``; the master is killed with -9,
the sentinels promote a replica, and the services reconnect to it: calls answer OK or UNAVAILABLE
meanwhile, all OK again within a bound, nothing written a second before the kill lost.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time

import grpc
import pytest

from cryptolens.v1 import core_pb2, core_pb2_grpc

from services.alerts.engine import STATE_KEY
from services.common.store import series_key
from tests.conftest import ROOT
from tests.integration.redis_topologies import LocalSentinel, serving_stack, wait_until

PASSWORD = "s3rver-test-pw"
SENTINEL_PASSWORD = "s3ntinel-test-pw"
RECOVERY_BOUND_S = 20  # failover done → every call OK again


@pytest.fixture
def sentinel(tmp_path):
    topology = LocalSentinel(tmp_path / "sentinel", password=PASSWORD, sentinel_password=SENTINEL_PASSWORD)
    try:
        yield topology.start()
    finally:
        topology.stop()


@pytest.mark.timeout(90)
def test_services_follow_the_master_sentinel_promotes(sentinel, tmp_path):
    password_file, sentinel_file = tmp_path / "redis-password", tmp_path / "sentinel-password"
    password_file.write_text(PASSWORD + "\n")
    sentinel_file.write_text(SENTINEL_PASSWORD + "\n")
    with serving_stack(sentinel.url, tmp_path, CRYPTOLENS_REDIS_PASSWORD_FILE=str(password_file),
                       CRYPTOLENS_REDIS_SENTINEL_PASSWORD_FILE=str(sentinel_file)) as (stack, calls):
        old = sentinel.master()
        meta_key = series_key("BTC-USD", "1h", "meta")
        with old.client() as db:
            wait_until(lambda: db.hlen(STATE_KEY) > 0, 20, "alert states committed")
            db.set("cl:test:marker", "before-the-kill")
            before_count = int(db.hget(meta_key, "count"))
            before_states = db.hlen(STATE_KEY)
        time.sleep(1.5)  # past appendfsync everysec and the replication of these writes

        old.kill()
        started = killed_at = time.monotonic()
        while time.monotonic() - started < 1.5:  # calls while the master is down
            calls.all_ok()
            time.sleep(0.1)
        new = sentinel.wait_failover(old, timeout=30)
        took = calls.until_all_ok(RECOVERY_BOUND_S)
        print(f"kill → every call OK: {time.monotonic() - killed_at:.1f} s")
        print(f"sentinel failover {old.port} → {new.port}; all OK after {took:.1f} s; statuses {calls.codes}")

        assert calls.unexpected_codes() == {}
        with new.client() as db:
            assert db.get("cl:test:marker") == b"before-the-kill"
            assert int(db.hget(meta_key, "count")) >= before_count
            assert db.hlen(STATE_KEY) >= before_states
            version = int(db.hget(meta_key, "version"))
            wait_until(lambda: int(db.hget(meta_key, "version")) > version, 15, "Fetch writing to the new master")
        for name in ("fetch", "core", "alerts"):
            assert stack[name].proc.poll() is None, f"{name} died:\n{stack[name].log()[-2000:]}"
            assert PASSWORD not in stack[name].log() and SENTINEL_PASSWORD not in stack[name].log()


def _free_offset() -> int:
    """A --port-offset whose seven ports (gRPC, metrics, UI) are all free on loopback."""
    for _ in range(50):
        offset = random.randrange(2000, 9000)
        ports = [p + offset for p in (50051, 50052, 50053, 9101, 9102, 9103, 8501)]
        try:
            for port in ports:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return offset
    raise RuntimeError("no free --port-offset")


@pytest.mark.timeout(90)
def test_cryptolens_up_uses_the_sentinel_set(sentinel, tmp_path):
    password_file, sentinel_file = tmp_path / "redis-password", tmp_path / "sentinel-password"
    password_file.write_text(PASSWORD)
    sentinel_file.write_text(SENTINEL_PASSWORD)
    offset = _free_offset()
    log_path = tmp_path / "up.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--redis-url", sentinel.url, "--no-ui",
                                 "--provider", "simulated", "--history-days", "10", "--port-offset", str(offset),
                                 "--data-dir", str(tmp_path / "data")], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1",
                                     "CRYPTOLENS_REDIS_PASSWORD_FILE": str(password_file),
                                     "CRYPTOLENS_REDIS_SENTINEL_PASSWORD_FILE": str(sentinel_file)})
        try:
            wait_until(lambda: "CryptoLens is up." in log_path.read_text() or proc.poll() is not None, 60,
                       "cryptolens up")
            assert proc.poll() is None, log_path.read_text()[-3000:]
            with grpc.insecure_channel(f"127.0.0.1:{50052 + offset}") as channel:
                stats = core_pb2_grpc.CoreServiceStub(channel).GetStats(
                    core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1h", lookback="3d"), timeout=30)
            assert stats.count > 0
            with sentinel.master().client() as db:  # the data is on the Sentinel's master
                assert db.hget(series_key("BTC-USD", "1h", "meta"), "count") is not None
            assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())  # no Redis of its own
            assert PASSWORD not in log_path.read_text() and SENTINEL_PASSWORD not in log_path.read_text()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
