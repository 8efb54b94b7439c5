"""Real Redis topologies on loopback: a 3-master Redis Cluster with replicas, and a Sentinel set.

Every node is its own redis-server process with an append-only file (fsync every second) in the
test's tmp_path, on ports from ``free_port()`` (the cluster bus port too, set explicitly so it never
lands in the ephemeral range). ``stop()`` kills whatever is still running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import grpc
import redis

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc, core_pb2, core_pb2_grpc, fetch_pb2, fetch_pb2_grpc
from tests.conftest import free_port, require_tool, wait_for_port
from tests.integration.services import Stack


class Node:
    """One redis-server process (a cluster node, a replica or a sentinel)."""

    def __init__(self, tmp: Path, name: str, *args: str, sentinel_conf: str | None = None, password: str = "",
                 tls: Path | None = None):
        self.port = free_port()
        self.password = password
        self.tls = tls  # a folder with ca.pem, server.pem, server.key: TLS only, on self.port
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.sentinel_conf = sentinel_conf
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Node":
        binary = require_tool("redis-server")
        if self.sentinel_conf is not None:  # sentinel rewrites its config file: one per sentinel
            conf = self.dir / "sentinel.conf"
            conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n{self.sentinel_conf}")
            cmd = [binary, str(conf), "--sentinel"]
        else:
            cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                   "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", *self.args]
            if self.tls:
                cmd += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls / "server.pem"),
                        "--tls-key-file", str(self.tls / "server.key"), "--tls-ca-cert-file", str(self.tls / "ca.pem"),
                        "--tls-auth-clients", "no", "--tls-cluster", "yes", "--tls-replication", "yes"]
            if self.password:  # given on stdin as config, never on the command line
                cmd[1:1] = ["-"]
        self._log = open(self.dir / "server.log", "ab")
        stdin = subprocess.PIPE if self.password and self.sentinel_conf is None else None
        self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=self._log, stderr=subprocess.STDOUT)
        if stdin:
            self.proc.stdin.write(f"requirepass {self.password}\nmasterauth {self.password}\n".encode())
            self.proc.stdin.close()
        wait_for_port(self.port)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown save, only what the AOF already holds survives."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill()
        if self.proc is not None:
            self._log.close()
            self.proc = None

    def client(self) -> redis.Redis:
        password = self.password
        tls = {"ssl": True, "ssl_ca_certs": str(self.tls / "ca.pem")} if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, password=password or None, **tls)


def wait_until(check, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except redis.RedisError as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")


class LocalCluster:
    """Three masters and three replicas; a node unreachable for 1 s is failed over. With ``tls`` (a
    folder holding ca.pem, server.pem, server.key) clients, the cluster bus and replication use TLS."""

    def __init__(self, tmp: Path, masters: int = 3, replicas_per_master: int = 1, tls: Path | None = None,
                 password: str = ""):
        self.tmp = tmp
        self.tls = tls
        self.password = password
        self.nodes: list[Node] = []
        self.masters = masters
        self.replicas = replicas_per_master

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:self.masters])
        return f"{'rediss' if self.tls else 'redis'}+cluster://{seeds}"

    def start(self) -> "LocalCluster":
        require_tool("redis-cli")
        for i in range(self.masters * (1 + self.replicas)):
            self.nodes.append(Node(self.tmp, f"node{i}", "--cluster-enabled", "yes",
                                   "--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port()),
                                   "--cluster-node-timeout", "1000", tls=self.tls, password=self.password).start())
        tls = ["--tls", "--cacert", str(self.tls / "ca.pem")] if self.tls else []
        subprocess.run(["redis-cli", *tls, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                        "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                       check=True, capture_output=True, timeout=30,
                       env={**os.environ, "REDISCLI_AUTH": self.password} if self.password else None)
        wait_until(self._healthy, 30, "cluster_state:ok on every node with every replica in sync")
        return self

    def _healthy(self) -> bool:
        for node in self.nodes:
            if not self._ok(node):
                return False
            with node.client() as c:
                info = c.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
        return True

    @staticmethod
    def _ok(node: Node) -> bool:
        with node.client() as c:
            return b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO")

    def _table(self, via: Node) -> list[dict]:
        """CLUSTER NODES as seen by ``via``: port, flags, slot ranges of every node."""
        with via.client() as c:
            text = c.execute_command("CLUSTER", "NODES")
        text = text.decode() if isinstance(text, bytes) else text
        rows = []
        for line in text.splitlines():
            parts = line.split()
            slots = [tuple(int(x) for x in (r.split("-") * 2)[:2]) for r in parts[8:] if not r.startswith("[")]
            rows.append({"port": int(parts[1].split("@")[0].rsplit(":", 1)[1]), "flags": set(parts[2].split(",")),
                         "slots": slots})
        return rows

    def master_of(self, key: str) -> Node:
        with self.nodes[0].client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
        for row in self._table(self.nodes[0]):
            if "master" in row["flags"] and any(lo <= slot <= hi for lo, hi in row["slots"]):
                return next(n for n in self.nodes if n.port == row["port"])
        raise AssertionError(f"no master serves the slot of {key}")

    def wait_failover(self, dead: Node, timeout: float = 30) -> None:
        """Until every live node says the cluster is ok and ``dead``'s slots have a new master."""
        alive = [n for n in self.nodes if n is not dead and n.proc is not None and n.proc.poll() is None]

        def promoted() -> bool:
            if not all(self._ok(n) for n in alive):
                return False
            old = next(r for r in self._table(alive[0]) if r["port"] == dead.port)
            return "fail" in old["flags"] and not old["slots"]
        wait_until(promoted, timeout, f"failover of the master on port {dead.port}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class LocalSentinel:
    """One master, two replicas and three sentinels (quorum 2); a master down 1 s is failed over.
    With ``password`` every Redis requires it; with ``sentinel_password`` the sentinels require theirs."""

    MASTER = "cryptolens"

    def __init__(self, tmp: Path, password: str = "", sentinel_password: str = ""):
        self.tmp = tmp
        self.password = password
        self.sentinel_password = sentinel_password
        self.servers: list[Node] = []
        self.sentinels: list[Node] = []

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{self.MASTER}/0"

    def start(self) -> "LocalSentinel":
        master = Node(self.tmp, "server0", password=self.password).start()
        self.servers.append(master)
        for i in (1, 2):
            self.servers.append(Node(self.tmp, f"server{i}", "--replicaof", "127.0.0.1", str(master.port),
                                     password=self.password).start())
        conf = (f"sentinel monitor {self.MASTER} 127.0.0.1 {master.port} 2\n"
                + (f"sentinel auth-pass {self.MASTER} {self.password}\n" if self.password else "")
                + f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                f"sentinel failover-timeout {self.MASTER} 5000\n"
                f"sentinel parallel-syncs {self.MASTER} 1\n"
                + (f"requirepass {self.sentinel_password}\nsentinel sentinel-pass {self.sentinel_password}\n"
                   if self.sentinel_password else ""))
        for i in range(3):
            self.sentinels.append(Node(self.tmp, f"sentinel{i}", sentinel_conf=conf,
                                       password=self.sentinel_password).start())
        wait_until(self._ready, 30, "replicas in sync and every sentinel seeing 2 replicas and 2 other sentinels")
        return self

    def _ready(self) -> bool:
        for replica in self.servers[1:]:
            with replica.client() as c:
                if c.info("replication").get("master_link_status") != "up":
                    return False
        for s in self.sentinels:
            with s.client() as c:
                state = c.sentinel_master(self.MASTER)
                if int(state["num-slaves"]) < 2 or int(state["num-other-sentinels"]) < 2:
                    return False
        return True

    def master(self) -> Node:
        with self.sentinels[0].client() as c:
            _, port = c.sentinel_get_master_addr_by_name(self.MASTER)
        return next(n for n in self.servers if n.port == int(port))

    def wait_failover(self, dead: Node, timeout: float = 30) -> Node:
        """The new master, once every sentinel names it and it accepts writes."""
        def promoted():
            ports = set()
            for s in self.sentinels:
                with s.client() as c:
                    ports.add(int(c.sentinel_get_master_addr_by_name(self.MASTER)[1]))
            if len(ports) != 1 or dead.port in ports:
                return None
            port = ports.pop()
            node = next(n for n in self.servers if n.port == port)
            with node.client() as c:
                return node if c.info("replication")["role"] == "master" else None
        return wait_until(promoted, timeout, f"sentinel failover away from port {dead.port}")

    def stop(self) -> None:
        for node in [*self.sentinels, *self.servers]:
            node.stop()


# --- the services' answers while a topology fails over -------------------------------------------

OK_OR_RETRYABLE = {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class StackCalls:
    """GetBars (Fetch), GetStats (Core) and Evaluate (Alerts) against a running Stack; every status seen."""

    def __init__(self, stack):
        self.channels = {name: grpc.insecure_channel(stack[name].addr) for name in ("fetch", "core", "alerts")}
        self.fetch = fetch_pb2_grpc.FetchServiceStub(self.channels["fetch"])
        self.core = core_pb2_grpc.CoreServiceStub(self.channels["core"])
        self.alerts = alerts_pb2_grpc.AlertsServiceStub(self.channels["alerts"])
        self.codes: dict[str, set] = {"GetBars": set(), "GetStats": set(), "Evaluate": set()}

    def all_ok(self, symbol: str = "BTC-USD") -> bool:
        """One call of each; True when all three answered OK (statuses recorded either way)."""
        ok = True
        for name, call in (
            ("GetBars", lambda: self.fetch.GetBars(fetch_pb2.GetBarsRequest(symbol=symbol, interval="1h",
                                                                            lookback="7d"), timeout=5)),
            ("GetStats", lambda: self.core.GetStats(core_pb2.GetStatsRequest(symbol=symbol, interval="1h",
                                                                             lookback="7d"), timeout=5)),
            ("Evaluate", lambda: self.alerts.Evaluate(alerts_pb2.EvaluateRequest(symbols=[symbol]), timeout=5)),
        ):
            try:
                call()
                self.codes[name].add(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                self.codes[name].add(exc.code())
                ok = False
        return ok

    def until_all_ok(self, timeout: float) -> float:
        """Seconds until every call answered OK, calling every 0.2 s; fails after ``timeout``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.all_ok():
                return time.monotonic() - started
            time.sleep(0.2)
        raise AssertionError(f"the services did not answer OK within {timeout} s: {self.codes}")

    def unexpected_codes(self) -> dict[str, set]:
        return {name: codes - OK_OR_RETRYABLE for name, codes in self.codes.items() if codes - OK_OR_RETRYABLE}

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


@contextlib.contextmanager
def serving_stack(url: str, tmp: Path, **extra_env: str) -> Iterator[tuple[Stack, StackCalls]]:
    """Fetch (simulated), Core and Alerts on the topology at ``url``, all three answering OK."""
    stack = Stack(url, tmp, extra_env={"CRYPTOLENS_REDIS_CHECK_S": "0.5", **extra_env})
    stack.add("fetch", "--provider", "simulated", "--refresh-s", "2", "--history-days", "30")
    stack.add("core")
    stack.add("alerts")
    calls = None
    try:
        for name in ("fetch", "core", "alerts"):
            stack[name].wait_serving(40)
        calls = StackCalls(stack)
        calls.until_all_ok(30)
        yield stack, calls
    finally:
        if calls is not None:
            calls.close()
        stack.stop()
