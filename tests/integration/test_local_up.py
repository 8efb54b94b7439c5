"""Local runs that just work: `cryptolens up` as a person runs it, Ctrl-C included.

Every stack here runs on its own --port-offset (all seven ports and Redis checked free first), in
its own process group so that SIGINT to the group is exactly a Ctrl-C in a terminal. The tests in
this module never overlap: each stops its stacks (and every child) before it ends.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import redis as redis_sync
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cryptolens.v1 import core_pb2, core_pb2_grpc
from services import local_redis
from tests.conftest import ROOT, require_tool

SERVING_WITHIN_S = 15.0  # the bound for a restart right after a stop
BASE_PORTS = (50051, 50052, 50053, 9101, 9102, 9103, 8501, 6379)


def pick_offset() -> int:
    for _ in range(50):
        offset = random.randrange(1000, 15000)
        if all(local_redis.port_free(p + offset) for p in BASE_PORTS):
            return offset
    pytest.fail("no free set of ports for a second stack on this machine")


def descendants(pid: int) -> dict[int, str]:
    """Live descendants of pid with their command lines, from /proc."""
    parents, cmdlines = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] == "Z":
                continue
            parents[int(entry.name)] = int(stat[1])
            cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {p: cmdlines[p] for p in found}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def time_wait_on(port: int) -> bool:
    """Is any TCP socket with local port ``port`` in TIME_WAIT (state 06)?"""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "06":
                return True
    return False


class Up:
    """One `cryptolens up` process and its log."""

    def __init__(self, tmp: Path, offset: int, *args: str, env: dict[str, str] | None = None, run: int = 1):
        self.offset = offset
        self.log_path = tmp / f"up-{run}.log"
        self.argv = [sys.executable, "-m", "services.cli", "up", "--provider", "simulated", "--history-days", "30",
                     "--port-offset", str(offset), *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.children: dict[int, str] = {}

    def port(self, base: int) -> int:
        return base + self.offset

    def start(self) -> "Up":
        self._log = open(self.log_path, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_up(self, timeout: float = 60.0) -> float:
        """Seconds from start until the banner (printed once every health check is SERVING)."""
        deadline = self.started + timeout
        while "CryptoLens is up." not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"cryptolens up did not come up within {timeout} s:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        took = time.monotonic() - self.started
        self.children = descendants(self.proc.pid)
        return took

    def pid_of(self, what: str) -> int:
        [pid] = [p for p, cmd in descendants(self.proc.pid).items() if what in cmd]
        return pid

    @property
    def redis_url(self) -> str:
        """The banner shows the URL without its password; the password is in the file it names."""
        shown = re.search(r"Redis\s+(redis://\S+)", self.log()).group(1)
        auth = Path(re.search(r"password in (\S+)\)", self.log()).group(1)).read_text()
        return shown.replace("***", re.search(r"^requirepass (\S+)$", auth, re.MULTILINE).group(1))

    def ctrl_c(self, timeout: float = 20.0) -> int:
        """SIGINT to the whole process group, as a terminal's Ctrl-C; every child must be gone after."""
        children = descendants(self.proc.pid)
        os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in children if alive(p)], f"children left after Ctrl-C: {children}"
        self._log.close()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            children = descendants(self.proc.pid)
            self.proc.kill()  # the children get SIGTERM from the kernel (PR_SET_PDEATHSIG)
            self.proc.wait()
            deadline = time.monotonic() + 15
            while any(alive(p) for p in children) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in children:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def ups():
    started: list[Up] = []
    yield started
    for up in started:
        up.kill()


def serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False


def stats_count(up: Up) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{up.port(50052)}") as channel:
        return core_pb2_grpc.CoreServiceStub(channel).GetStats(
            core_pb2.GetStatsRequest(symbol="BTC-USD", lookback="7d"), timeout=30).count


def assert_calm(log: str) -> None:
    assert "Traceback" not in log and '"exc":' not in log, log[-4000:]


def test_up_again_at_once_after_ctrl_c_with_the_ui(tmp_path, ups):
    """The reported failure: 'port(s) 8501 already in use' for a minute after Ctrl-C (TIME_WAIT)."""
    offset = pick_offset()
    first = Up(tmp_path, offset, "--data-dir", str(tmp_path / "data"))
    ups.append(first.start())
    first.wait_up()
    ui_port = first.port(8501)
    # Clients connected at the stop: the servers close these sockets, which leaves them in TIME_WAIT.
    held = [socket.create_connection(("127.0.0.1", p)) for p in (ui_port, first.port(50052), first.port(6379))]
    with socket.create_connection(("127.0.0.1", ui_port)) as http:
        http.sendall(b"GET /_stcore/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert b"200" in http.recv(1024).split(b"\r\n")[0]
    assert stats_count(first) > 0
    assert first.ctrl_c() == 0
    for sock in held:
        sock.close()
    assert time_wait_on(ui_port), "the test needs the UI port in TIME_WAIT, as after a real Ctrl-C"

    second = Up(tmp_path, offset, "--data-dir", str(tmp_path / "data"), run=2)
    ups.append(second.start())
    took = second.wait_up(timeout=SERVING_WITHIN_S)
    print(f"second `cryptolens up` (UI, TIME_WAIT on {ui_port}) serving after {took:.1f} s")
    assert second.redis_url == first.redis_url  # Redis kept its port
    assert stats_count(second) > 0
    assert second.ctrl_c() == 0
    for up in (first, second):
        assert_calm(up.log())


def test_data_dir_of_the_embedded_server_then_redis_server(tmp_path, ups):
    """Run 1 with the embedded Valkey, run 2 chooses by itself (the server that wrote the data, so
    the data are still there), run 3 with Debian's redis-server 7 on the same data dir: serving."""
    redis_server = require_tool("redis-server")
    embedded = local_redis.embedded_binary()
    data = tmp_path / "data"
    offset = pick_offset()
    env = {local_redis.ENV: embedded}

    first = Up(tmp_path, offset, "--no-ui", "--data-dir", str(data), env=env)
    ups.append(first.start())
    first.wait_up()
    assert "(valkey 9." in first.log()
    redis_sync.Redis.from_url(first.redis_url).set("test:marker", "written by run 1")
    assert first.ctrl_c() == 0

    second = Up(tmp_path, offset, "--no-ui", "--data-dir", str(data), env={local_redis.ENV: ""}, run=2)
    ups.append(second.start())
    took = second.wait_up(timeout=SERVING_WITHIN_S)
    assert "(valkey 9." in second.log(), "without a choice, the server that wrote the data dir runs again"
    assert redis_sync.Redis.from_url(second.redis_url).get("test:marker") == b"written by run 1"
    assert second.ctrl_c() == 0

    third = Up(tmp_path, offset, "--no-ui", "--data-dir", str(data), "--redis-server", redis_server, run=3)
    ups.append(third.start())
    took3 = third.wait_up(timeout=SERVING_WITHIN_S)
    print(f"run 2 (remembered valkey) serving after {took:.1f} s, run 3 (redis-server 7) after {took3:.1f} s")
    assert "(redis 7." in third.log() and stats_count(third) > 0
    assert third.ctrl_c() == 0
    assert sorted(p.name for p in data.iterdir() if p.is_dir()) == ["redis-7", "valkey-9"]
    for up in (first, second, third):
        assert_calm(up.log())


def test_a_data_folder_the_server_cannot_read_is_moved_aside(tmp_path, ups):
    """What Debian's redis-server 7 did with a folder the embedded Valkey 9 wrote ("Bad file format
    reading the append only file"): the stack still starts, the data is kept beside it."""
    redis_server = require_tool("redis-server")
    data = tmp_path / "data"
    offset = pick_offset()
    first = Up(tmp_path, offset, "--no-ui", "--data-dir", str(data), env={local_redis.ENV: local_redis.embedded_binary()})
    ups.append(first.start())
    first.wait_up()
    assert first.ctrl_c() == 0
    shutil.copytree(data / "valkey-9", data / "redis-7")  # as the old single-folder layout left it

    second = Up(tmp_path, offset, "--no-ui", "--data-dir", str(data), "--redis-server", redis_server, run=2)
    ups.append(second.start())
    took = second.wait_up(timeout=SERVING_WITHIN_S)
    print(f"serving {took:.1f} s after start, the unreadable folder moved aside")
    assert "Bad file format" in second.log() and "moved it to redis-7.unreadable-1" in second.log()
    assert (data / "redis-7.unreadable-1" / "appendonlydir").is_dir()
    assert second.ctrl_c() == 0


def test_a_killed_child_is_restarted_and_nothing_else_stops(tmp_path, ups):
    up = Up(tmp_path, pick_offset(), "--no-ui", "--data-dir", str(tmp_path / "data"))
    ups.append(up.start())
    up.wait_up()
    others = {name: up.pid_of(f"serve {name}") for name in ("fetch", "alerts")}
    others["redis"] = up.pid_of(f":{up.port(6379)}")  # Redis retitles itself "redis-server 127.0.0.1:PORT"
    core = up.pid_of("serve core")
    killed = time.monotonic()
    os.kill(core, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not (serving(up.port(50052)) and up.pid_of("serve core") != core):
        assert up.proc.poll() is None, up.log()[-3000:]
        assert time.monotonic() < deadline, "core did not come back SERVING within 30 s:\n" + up.log()[-3000:]
        time.sleep(0.1)
    print(f"core SERVING again {time.monotonic() - killed:.1f} s after SIGKILL")
    assert stats_count(up) > 0
    assert {name: up.pid_of(f":{up.port(6379)}" if name == "redis" else f"serve {name}") for name in others} == others
    assert up.log().count("cryptolens up: core was killed by SIGKILL") == 1
    assert "restarting it in 1 s" in up.log()

    # Redis too: restarted on its port and data dir, the services find it again by themselves.
    redis_sync.Redis.from_url(up.redis_url).set("test:marker", "kept")
    time.sleep(1.5)  # appendfsync everysec
    os.kill(others["redis"], signal.SIGKILL)
    def recovered() -> bool:
        redis_pids = [p for p, cmd in descendants(up.proc.pid).items() if f":{up.port(6379)}" in cmd]
        return (redis_pids not in ([], [others["redis"]]) and "redis was killed by SIGKILL" in up.log()
                and all(serving(up.port(p)) for p in (50051, 50052, 50053)))

    deadline = time.monotonic() + 30
    while not recovered():
        assert time.monotonic() < deadline, "the stack did not recover from a Redis kill:\n" + up.log()[-3000:]
        time.sleep(0.1)
    assert redis_sync.Redis.from_url(up.redis_url).get("test:marker") == b"kept"
    assert stats_count(up) > 0

    # A second stack on the same data dir would start a second Redis on the same files: refused.
    second = Up(tmp_path, pick_offset(), "--no-ui", "--data-dir", str(tmp_path / "data"), run=2)
    ups.append(second.start())
    assert second.proc.wait(timeout=30) == 1
    assert second.log().strip().splitlines() == [f"cryptolens up: another cryptolens up is using the data dir "
                                                 f"{tmp_path / 'data'}"]
    assert up.ctrl_c() == 0
    assert_calm(up.log())


def test_a_missing_csv_file_is_one_line_and_exit_2(tmp_path, ups):
    missing = tmp_path / "nowhere" / "btc.csv"
    up = Up(tmp_path, pick_offset(), "--no-ui", "--data-dir", str(tmp_path / "data"),
            "--csv-file", f"BTC-USD:1d={missing}")
    ups.append(up.start())
    assert up.proc.wait(timeout=60) == 2
    lines = [line for line in up.log().splitlines() if line.strip() and not line.startswith("{")]
    assert len(lines) == 1 and str(missing) in lines[0], up.log()
    assert_calm(up.log())
