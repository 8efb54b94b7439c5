"""Real service processes on free loopback ports, for integration and black-box tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, free_port


def metric(port: int, name: str, **labels: str) -> float | None:
    """The sum of the samples ``name`` whose labels include ``labels`` on a /metrics port; None if none."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = [s.value for family in text_string_to_metric_families(body) for s in family.samples
             if s.name == name and labels.items() <= s.labels.items()]
    return sum(found) if found else None


@dataclass
class ServiceProcess:
    name: str
    grpc_port: int
    metrics_port: int
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> "ServiceProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", self.name, "--host", "127.0.0.1",
             "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port), *self.args],
            cwd=ROOT, env={**os.environ, **self.env}, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def health(self, service: str = "") -> int | None:
        with grpc.insecure_channel(self.addr) as channel:
            try:
                return health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=1).status
            except grpc.RpcError:
                return None

    def wait_status(self, status: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            if self.health() == status:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} health never became {status}:\n{self.log()[-3000:]}")

    def wait_serving(self, timeout: float = 30.0) -> "ServiceProcess":
        self.wait_status(health_pb2.HealthCheckResponse.SERVING, timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@dataclass
class Stack:
    """Fetch, Core and Alerts on free ports, sharing one Redis."""

    redis_url: str
    tmp: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def add(self, name: str, *args: str) -> ServiceProcess:
        ports = {n: free_port() for n in ("fetch", "core", "alerts")} if not self.services else None
        if ports:
            self._ports = ports
        # Exchange streams off unless a test asks (--stream on): no test dials a real exchange.
        env = {"CRYPTOLENS_REDIS_URL": self.redis_url, "CRYPTOLENS_LOG_LEVEL": "INFO", "CRYPTOLENS_STREAM": "off",
               "CRYPTOLENS_FETCH_ADDR": f"127.0.0.1:{self._ports['fetch']}",
               "CRYPTOLENS_CORE_ADDR": f"127.0.0.1:{self._ports['core']}",
               "CRYPTOLENS_ALERTS_ADDR": f"127.0.0.1:{self._ports['alerts']}", **self.extra_env}
        service = ServiceProcess(name, self._ports[name], free_port(), list(args), env, self.tmp / f"{name}.log")
        self.services[name] = service.start()
        return service

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name]

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()


def start_core(redis_server, tmp_path: Path, name: str, redis_url: str | None = None) -> ServiceProcess:
    """Core alone on ``redis_server`` (a RedisServer; ``redis_url``: reached another way, such as
    through a proxy), serving; its Fetch address answers nothing."""
    env = {"CRYPTOLENS_REDIS_URL": redis_url or redis_server.url, "CRYPTOLENS_REDIS_CHECK_S": "0.2",
           "CRYPTOLENS_FETCH_ADDR": f"127.0.0.1:{free_port()}", "CRYPTOLENS_FETCH_TIMEOUT_S": "1"}
    return ServiceProcess("core", free_port(), free_port(), [], env, tmp_path / f"{name}.log").start().wait_serving()


def point_page_at(stack: Stack, monkeypatch) -> dict[str, str]:
    """Point the dashboard (ui/app.py, run in the test process by Streamlit's AppTest) at a stack."""
    env = {"CRYPTOLENS_FETCH_ADDR": stack["fetch"].addr, "CRYPTOLENS_CORE_ADDR": stack["core"].addr,
           "CRYPTOLENS_ALERTS_ADDR": stack["alerts"].addr}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
