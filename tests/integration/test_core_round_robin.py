"""Replicas behind one target get calls evenly from a round_robin client: three Core replicas behind
one DNS name (as a headless Service gives them in Kubernetes) from the UI client, three Fetch
replicas from Core's fetch-through."""

from __future__ import annotations

import re
import signal
import socket
import struct
import threading
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.fetch.providers.registry import SIMULATED_BASES
from tests.conftest import RedisServer, free_port
from tests.integration.services import ServiceProcess, Stack
from ui.client import CryptoLensClient, ServiceError

CALLS = 300
NAME = "core.cryptolens.test"
ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")  # all loopback on Linux: one port, three replicas


class NameServer:
    """A DNS server on loopback that answers NAME with one A record per address, like the DNS of a
    headless Service (one record per ready pod); every other name is NXDOMAIN, AAAA has none."""

    def __init__(self, name: str, addresses: tuple[str, ...]):
        self.name, self.addresses = name, addresses
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                query, peer = self.sock.recvfrom(512)
            except OSError:  # closed
                return
            end, labels = 12, []
            while query[end]:
                labels.append(query[end + 1:end + 1 + query[end]].decode().lower())
                end += 1 + query[end]
            qtype = struct.unpack(">H", query[end + 1:end + 3])[0]
            known = ".".join(labels) == self.name
            records = [socket.inet_aton(a) for a in self.addresses] if known and qtype == 1 else []
            header = struct.pack(">HHHHHH", struct.unpack(">H", query[:2])[0], 0x8180 | (0 if known else 3),
                                 1, len(records), 0, 0)
            answers = b"".join(struct.pack(">HHHIH", 0xC00C, 1, 1, 5, 4) + r for r in records)  # ttl 5 s
            self.sock.sendto(header + query[12:end + 5] + answers, peer)

    def close(self) -> None:
        self.sock.close()


def served(service: ServiceProcess, method: str, host: str = "127.0.0.1") -> int:
    """Calls of ``method`` this replica answered, from its own /metrics request counter (every code)."""
    text = urllib.request.urlopen(f"http://{host}:{service.metrics_port}/metrics", timeout=5).read().decode()
    pattern = rf'^grpc_server_handled_total\{{[^}}]*grpc_method="{method}"[^}}]*\}} ([0-9.e+]+)$'
    return int(sum(float(v) for v in re.findall(pattern, text, re.MULTILINE)))


def call_until(client: CryptoLensClient, deadline: float, failed: list[str]) -> None:
    while time.monotonic() < deadline:
        try:
            client.stats("BTC-USD", "1h", "7d")
        except ServiceError as exc:
            failed.append(str(exc))


def wait_serving(core: ServiceProcess, host: str) -> None:
    with grpc.insecure_channel(f"{host}:{core.grpc_port}") as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True)


def test_calls_spread_evenly_over_three_core_replicas_behind_one_name_and_skip_a_stopped_one(tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    names = NameServer(NAME, ADDRESSES)
    stack = Stack(redis.url, tmp_path)
    fetch = stack.add("fetch", "--provider", "simulated", "--symbols", "BTC-USD", "--history-days", "10",
                      "--refresh-s", "3600", "--lease-s", "7200")
    env = {"CRYPTOLENS_REDIS_URL": redis.url, "CRYPTOLENS_FETCH_ADDR": fetch.addr}
    port = free_port()
    cores = [ServiceProcess("core", port, free_port(), ["--host", host], env, tmp_path / f"core{i}.log").start()
             for i, host in enumerate(ADDRESSES)]
    try:
        fetch.wait_serving()
        for core, host in zip(cores, ADDRESSES):
            wait_serving(core, host)
        # The UI's channel resolves the name through our DNS server, as a pod resolves a headless Service.
        client = CryptoLensClient(fetch_addr=fetch.addr, core_addr=f"dns://127.0.0.1:{names.port}/{NAME}:{port}")
        for _ in range(CALLS):
            assert client.stats("BTC-USD", "1h", "7d")["symbol"] == "BTC-USD"
        counts = [served(core, "GetStats", host) for core, host in zip(cores, ADDRESSES)]
        print("GetStats calls per replica:", counts)
        assert sum(counts) == CALLS
        # round_robin turns over the connected replicas strictly; only the first calls, made while a
        # replica is still connecting, can land unevenly. pick_first (gRPC's default) puts all on one.
        assert all(abs(n - CALLS / 3) <= 30 for n in counts), counts

        # The same replicas as a list of addresses, the form for a client outside Kubernetes.
        listed = CryptoLensClient(core_addr="ipv4:" + ",".join(f"{host}:{port}" for host in ADDRESSES))
        for _ in range(30):
            listed.stats("BTC-USD", "1h", "7d")
        more = [served(core, "GetStats", host) - n for core, host, n in zip(cores, ADDRESSES, counts)]
        print("GetStats calls per replica from an address list:", more)
        assert sum(more) == 30 and all(abs(n - 10) <= 3 for n in more), more

        # A replica stopped while calls go on (SIGTERM: graceful, as in a rolling update) drops out
        # of the rotation: no call fails, and after it the other two share the calls.
        failed: list[str] = []
        calling = threading.Thread(target=call_until, args=(client, time.monotonic() + 3, failed))
        calling.start()
        time.sleep(0.5)
        cores[0].stop(signal.SIGTERM)
        calling.join()
        assert not failed, failed[:3]
        before = [served(core, "GetStats", host) for core, host in zip(cores[1:], ADDRESSES[1:])]
        for _ in range(100):
            client.stats("BTC-USD", "1h", "7d")
        after = [served(core, "GetStats", host) - n for core, host, n in zip(cores[1:], ADDRESSES[1:], before)]
        print("GetStats calls per remaining replica:", after)
        # Not exactly 50/50: each state change of the stopped one's subchannel (gRPC keeps trying to
        # reconnect it) builds a new picker, which starts its turns at a random replica.
        assert sum(after) == 100 and all(abs(n - 50) <= 5 for n in after), after
    finally:
        for core in cores:
            core.stop()
        stack.stop()
        names.close()
        redis.stop()


def test_core_fetches_through_from_three_fetch_replicas_in_turn(tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    stacks, symbols = [], [f"{base}-{quote}" for base in SIMULATED_BASES[3:18] for quote in ("USD", "EUR")]
    for i in range(3):
        (tmp_path / str(i)).mkdir()
        stacks.append(Stack(redis.url, tmp_path / str(i)))
    fetches = [stack.add("fetch", "--provider", "simulated", "--history-days", "10", "--refresh-s", "3600",
                         "--lease-s", "7200")
               for stack in stacks]
    env = {"CRYPTOLENS_REDIS_URL": redis.url, "CRYPTOLENS_FETCH_ADDR": "ipv4:" + ",".join(f.addr for f in fetches)}
    core = ServiceProcess("core", free_port(), free_port(), [], env, tmp_path / "core.log").start()
    try:
        for service in [*fetches, core]:
            service.wait_serving()
        client = CryptoLensClient(core_addr=core.addr)
        for symbol in symbols:  # none watched, so Redis has none yet: one GetBars to Fetch apiece
            assert client.stats(symbol, "1h", "7d")["symbol"] == symbol
        counts = [served(fetch, "GetBars") for fetch in fetches]
        print("fetch-through calls per Fetch replica:", counts)
        # As above: strict turns once all are connected (Core's channel opens on its first call).
        assert sum(counts) == len(symbols) and all(abs(n - len(symbols) / 3) <= 3 for n in counts), counts
    finally:
        core.stop()
        for stack in stacks:
            stack.stop()
        redis.stop()
