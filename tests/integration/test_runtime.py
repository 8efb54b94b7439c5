"""The shared service runtime, seen from outside: health follows Redis, ports, signals, logs."""

from __future__ import annotations

import asyncio
import json
import logging
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
from tests.integration.services import ServiceProcess, Stack

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
    assert messages.count("redis not reachable yet; waiting for it") == 1  # at start, once, not per check
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


def test_a_service_that_cannot_be_built_says_why_in_one_line_and_exits_2(tmp_path):
    missing = tmp_path / "nowhere.csv"
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "serve", "fetch", "--provider", "csv", "--csv-file",
         f"BTC-USD:1d={missing}", "--grpc-port", str(free_port()), "--metrics-port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cryptolens serve fetch: ") and str(missing) in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def _entries(service: ServiceProcess, since: int, until: int) -> list[dict]:
    return [json.loads(line) for line in service.log().splitlines()[since:until] if line.startswith("{")]


def test_a_redis_outage_is_one_calm_line_not_one_per_tick(tmp_path):
    """Fetch refreshes and Alerts evaluates every second while Redis is gone for 6 s: each service
    says "redis lost" once, no line repeats per tick, and no traceback is logged."""
    redis = RedisServer(tmp_path)
    redis.start()
    stack = Stack(redis.url, tmp_path, extra_env={"CRYPTOLENS_REDIS_CHECK_S": "0.5"})
    stack.add("fetch", "--provider", "simulated", "--refresh-s", "1", "--history-days", "5")
    stack.add("core")
    stack.add("alerts", "--eval-interval-s", "1")
    try:
        for service in stack.services.values():
            service.wait_serving()
        marks = {name: len(service.log().splitlines()) for name, service in stack.services.items()}
        redis.stop()
        time.sleep(6)
        redis.start()
        for service in stack.services.values():
            service.wait_serving()
        ends = {name: len(service.log().splitlines()) for name, service in stack.services.items()}
    finally:
        stack.stop()
        redis.stop()
    for name, service in stack.services.items():
        entries = _entries(service, marks[name], ends[name])
        messages = [e["msg"] for e in entries]
        assert messages.count("redis lost") == 1 and messages.count("redis reachable") == 1, (name, messages)
        assert not [e for e in entries if "exc" in e], (name, [e for e in entries if "exc" in e][:1])
        loud = [(e["logger"], e["msg"]) for e in entries if e["level"] in ("WARNING", "ERROR")]
        assert len(loud) == len(set(loud)), (name, loud)  # nothing logged once per tick


class FlakyService:
    """Its Redis hook fails the first three times (as when Redis answers PING but not yet more)."""

    full_names = ("test.Flaky",)

    def __init__(self):
        self.hook_calls = 0

    def register(self, server) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def on_redis(self, up: bool) -> None:
        if up:
            self.hook_calls += 1
            if self.hook_calls <= 3:
                raise RuntimeError("not yet")


async def test_a_failing_redis_hook_is_retried_and_logged_once(redis_server, caplog):
    import grpc.aio

    from services.common.config import ServiceSettings
    from services.common.redis_client import redis_client
    from services.common.runtime import ServiceRuntime

    settings = ServiceSettings(host="127.0.0.1", grpc_port=free_port(), redis_url=redis_server.url, redis_check_s=0.2)
    service = FlakyService()
    runtime = ServiceRuntime(settings, service, redis_client(redis_server.url))
    caplog.set_level("INFO", "cryptolens.runtime")
    await runtime.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                        response_deserializer=health_pb2.HealthCheckResponse.FromString)
            for _ in range(100):
                if (await check(health_pb2.HealthCheckRequest(), timeout=1)).status == SERVING:
                    break
                await asyncio.sleep(0.1)
            assert (await check(health_pb2.HealthCheckRequest(), timeout=1)).status == SERVING
    finally:
        await runtime.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "cryptolens.runtime"]
    assert service.hook_calls == 4
    assert messages.count("redis reachable") == 1
    assert len([m for m in messages if m.startswith("could not start work that needs Redis")]) == 1
    assert "work that needs Redis started" in messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]
