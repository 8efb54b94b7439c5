"""The shared service runtime, seen from outside: health follows Redis, ports, signals, logs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from cryptolens.v1 import core_pb2, core_pb2_grpc
from tests.conftest import ROOT, RedisServer, free_port
from tests.integration.services import ServiceProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def core_process(tmp_path, redis_url: str, *args: str) -> ServiceProcess:
    env = {"CRYPTOLENS_REDIS_URL": redis_url, "CRYPTOLENS_REDIS_CHECK_S": "0.3"}
    return ServiceProcess("core", free_port(), free_port(), list(args), env, tmp_path / "core.log")


def test_health_follows_redis_and_recovers_by_itself(tmp_path):
    redis = RedisServer(tmp_path)  # not started yet: the service must start without it
    service = core_process(tmp_path, redis.url).start()
    try:
        service.wait_status(NOT_SERVING)
        assert service.health("cryptolens.v1.CoreService") == NOT_SERVING
        assert service.health("liveness") == SERVING  # alive, just not ready: no restart loop
        with grpc.insecure_channel(service.addr) as channel:
            with pytest.raises(grpc.RpcError) as exc:
                core_pb2_grpc.CoreServiceStub(channel).GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD"), timeout=10)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE and "Redis" in exc.value.details()
        redis.start()
        service.wait_status(SERVING)
        assert service.health("cryptolens.v1.CoreService") == SERVING
        redis.stop()
        service.wait_status(NOT_SERVING)
        redis.start()
        service.wait_status(SERVING)
    finally:
        assert service.stop() == 0
        redis.stop()
    lines = [json.loads(line) for line in service.log().splitlines() if line.startswith("{")]
    messages = [entry["msg"] for entry in lines]
    assert "redis reachable" in messages and "redis lost" in messages and "shutting down" in messages
    assert all({"ts", "level", "service", "msg"} <= set(entry) for entry in lines)


def test_sigterm_stops_gracefully(tmp_path, redis_server):
    service = core_process(tmp_path, redis_server.url).start()
    service.wait_serving()
    started = time.monotonic()
    assert service.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10


def test_taken_port_gives_one_clear_line_and_nonzero_exit(tmp_path, redis_server):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", "serve", "core", "--host", "127.0.0.1", "--grpc-port", str(port),
             "--metrics-port", "0", "--redis-url", redis_server.url],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"gRPC port 127.0.0.1:{port} is unavailable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_setting_stops_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "services.cli", "serve", "fetch", "--interval", "2h"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("cryptolens serve fetch: bad setting --interval='2h': "
                                     "'2h' is not one of 1m 5m 15m 1h 4h 1d")
