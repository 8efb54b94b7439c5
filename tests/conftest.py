"""Shared fixtures: a real redis-server on a free loopback port, the shared data folder."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from services.common import wait_for

wait_for.install()  # in-process tests run on the asyncio the services run on (services/common/wait_for.py)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CRYPTOLENS_SHARED_DATA", ROOT.parent / "shared" / "data"))
UI_APP = str(ROOT / "ui" / "app.py")  # the Streamlit page, for AppTest


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range, never the same twice in a session.

    Port 0 would hand out an ephemeral port, which any process's next outgoing connection (a
    service's Redis client, say) may take before the service under test binds it.
    """
    top = _ephemeral_start()
    for _ in range(500):
        port = random.randrange(max(1024, top - 20000), top)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def require_tool(name: str) -> str:
    """Path of a required command-line tool. Missing in CI is a failure, elsewhere a skip."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed; .ci/run must install it")
    pytest.skip(f"{name} is not installed")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data folder {SHARED_DATA} is missing")
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


class RedisServer:
    """A real redis-server process on loopback, in memory only."""

    def __init__(self, tmp: Path):
        self.binary = require_tool("redis-server")
        self.tmp = tmp
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis(tmp_path):
    """A redis-server of the test's own, for tests that kill, restart or empty it."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def scratch_redis_url(redis_server) -> str:
    """Database 1 of the session's Redis: tests may flush it; the running stack uses database 0."""
    return redis_server.url[:-1] + "1"


@pytest.fixture
async def redis_client(scratch_redis_url):
    import redis.asyncio as aioredis

    client = aioredis.from_url(scratch_redis_url, socket_timeout=10)  # a lost reply fails, never hangs
    await client.flushdb()
    yield client
    await client.aclose()
