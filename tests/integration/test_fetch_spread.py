"""Three Fetch replicas on one Redis share 30 series evenly and take over a killed replica's series."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter

import grpc
import redis

from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc
from services.fetch.lease import Leases, lease_key
from services.fetch.providers.registry import SIMULATED_BASES
from tests.conftest import RedisServer
from tests.integration.services import ServiceProcess, Stack

SYMBOLS = [f"{base}-{quote}" for base in SIMULATED_BASES[:15] for quote in ("USD", "USDT")]
INTERVAL = "1h"
LEASE_S = 3.0


def owners(client: redis.Redis, pids: dict[int, str]) -> dict[str, str | None]:
    """Per symbol, the replica holding its lease (owner ids are ``host:pid:random``)."""
    values = client.mget([lease_key(s, INTERVAL) for s in SYMBOLS])
    return {s: pids.get(int(v.decode().split(":")[1]), v.decode()) if v else None for s, v in zip(SYMBOLS, values)}


def wait_spread(client, pids, want, slack: int, timeout: float) -> tuple[dict[str, str], float]:
    """Waits until every series is held and each replica in ``want`` holds want +- slack, the same
    on three reads in a row; returns the holders and the seconds it took."""
    start = time.monotonic()
    in_a_row, held = 0, {}
    while time.monotonic() - start < timeout:
        held = owners(client, pids)
        counts = Counter(held.values())
        even = None not in counts and set(counts) == set(want) and all(
            abs(counts[name] - n) <= slack for name, n in want.items())
        in_a_row = in_a_row + 1 if even else 0
        if in_a_row == 3:
            return held, time.monotonic() - start
        time.sleep(0.3)
    raise AssertionError(f"never spread as {want} +- {slack}: {sorted(Counter(held.values()).items(), key=str)}")


def pollers(replicas: dict[str, ServiceProcess], pids: dict[int, str], since_ms: int) -> dict[str, set[str]]:
    """Per symbol, the replicas that started a refresh of it after ``since_ms`` (from their logs)."""
    out: dict[str, set[str]] = {}
    for replica in replicas.values():
        for line in replica.log().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("msg") == "poll start" and entry["t_ms"] > since_ms:
                out.setdefault(entry["symbol"], set()).add(pids[int(entry["owner"].split(":")[1])])
    return out


def versions(replica: ServiceProcess) -> dict[str, int]:
    with grpc.insecure_channel(replica.addr) as channel:
        listed = fetch_pb2_grpc.FetchServiceStub(channel).ListSymbols(fetch_pb2.ListSymbolsRequest(), timeout=10)
    return {s.symbol: s.data_version for s in listed.series if s.interval == INTERVAL}


def test_three_replicas_share_the_series_evenly_and_take_over_a_killed_one(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    url = server.url
    client = redis.Redis.from_url(url, socket_timeout=10)
    args = ("--provider", "simulated", "--refresh-s", "1", "--lease-s", str(LEASE_S), "--history-days", "3",
            "--interval", INTERVAL, "--symbols", ",".join(SYMBOLS), "--log-level", "DEBUG")
    stacks = []
    for name in "abc":
        (tmp_path / name).mkdir()
        stacks.append(Stack(url, tmp_path / name))
    replicas = {name: stack.add("fetch", *args) for name, stack in zip("abc", stacks)}
    try:
        for replica in replicas.values():
            replica.wait_serving()
        pids = {replica.proc.pid: name for name, replica in replicas.items()}

        held, took = wait_spread(client, pids, {name: 10 for name in replicas}, slack=2, timeout=25)
        print("spread after start:", sorted(Counter(held.values()).items()), f"settled {took:.1f} s after serving")

        # Spread, not just leased: over the next ticks each series is refreshed, by its holder alone.
        settled_ms = int(time.time() * 1000)
        time.sleep(2.5)
        assert pollers(replicas, pids, settled_ms) == {s: {name} for s, name in held.items()}

        victim = max(replicas, key=lambda name: Counter(held.values())[name])
        orphans = [s for s, name in held.items() if name == victim]
        replicas[victim].stop(signal.SIGKILL)
        survivors = {name: 15 for name in replicas if name != victim}
        held, took = wait_spread(client, pids, survivors, slack=2, timeout=LEASE_S + 8)
        print("spread after the kill:", sorted(Counter(held.values()).items()), f"taken over in {took:.1f} s")

        # The taken-over series are refreshed again by their new holders: their versions move on.
        reader = replicas[next(iter(survivors))]
        before = versions(reader)
        deadline = time.monotonic() + 10
        stale = orphans
        while stale and time.monotonic() < deadline:
            time.sleep(0.5)
            now = versions(reader)
            stale = [s for s in orphans if now.get(s, 0) <= before.get(s, 0)]
        assert not stale, f"taken over but not refreshed: {stale}"
    finally:
        for stack in stacks:
            stack.stop()
        server.stop()


async def test_the_fair_share_counts_the_replicas_that_heartbeat(redis_client):
    a, b = Leases(redis_client, 1000, owner="a"), Leases(redis_client, 1000, owner="b")
    assert await a.fair_share(30) == 30
    assert await b.fair_share(30) == 15
    assert await a.fair_share(31) == 16
    await asyncio.sleep(1.2)  # b stopped heartbeating for longer than a lease: no longer counted
    assert await a.fair_share(30) == 30
    assert await b.fair_share(30) == 15
    await b.release_all()  # a replica that stops leaves at once
    assert await a.fair_share(30) == 30
