"""Three Fetch replicas on one Redis share 30 series evenly and take over a killed replica's series."""

from __future__ import annotations

import asyncio
import json
import math
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
REFRESH_S = 1.0
LEASE_S = 4.0


def owners(client: redis.Redis, pids: dict[int, str]) -> dict[str, str | None]:
    """Per symbol, the replica holding its lease (owner ids are ``host:pid:random``)."""
    values = client.mget([lease_key(s, INTERVAL) for s in SYMBOLS])
    return {s: pids.get(int(v.decode().split(":")[1]), v.decode()) if v else None for s, v in zip(SYMBOLS, values)}


def wait_settled(client, pids, names: set[str], timeout: float) -> tuple[dict[str, str], float]:
    """Waits for the state the spread rule leaves alone, the same on three reads in a row: every
    series held by one of ``names``, each holding share - 2 to share + 1 (share = ceil(series /
    replicas); above share + 1 a replica still gives leases back, so that state would move on).
    Returns the holders and the seconds it took."""
    share = math.ceil(len(SYMBOLS) / len(names))
    start = time.monotonic()
    in_a_row, held, last = 0, {}, None
    while time.monotonic() - start < timeout:
        held = owners(client, pids)
        counts = Counter(held.values())
        settled = set(counts) == names and all(share - 2 <= n <= share + 1 for n in counts.values())
        in_a_row = in_a_row + 1 if settled and held == last else int(settled)
        last = held
        if in_a_row == 3:
            return held, time.monotonic() - start
        time.sleep(0.3)
    raise AssertionError(f"never settled at {share} - 2 .. {share} + 1 over {sorted(names)}: "
                         f"{sorted(Counter(held.values()).items(), key=str)}")


def polls(replicas: dict[str, ServiceProcess], pids: dict[int, str], since_ms: int) -> list[tuple[int, str, str]]:
    """Every refresh started after ``since_ms``, as (time ms, symbol, replica), from the replicas' logs."""
    out = []
    for replica in replicas.values():
        for line in replica.log().splitlines():
            entry = json.loads(line) if line.startswith("{") and line.endswith("}") else {}
            if entry.get("msg") == "poll start" and entry["t_ms"] > since_ms:
                out.append((entry["t_ms"], entry["symbol"], pids[int(entry["owner"].split(":")[1])]))
    return sorted(out)


def wait_polled(replicas, pids, since_ms: int, symbols: list[str], timeout: float) -> list[tuple[int, str, str]]:
    """The refreshes since ``since_ms``, once every one of ``symbols`` had one (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = polls(replicas, pids, since_ms)
        if {s for _, s, _ in seen} >= set(symbols) or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def versions(replica: ServiceProcess) -> dict[str, int]:
    with grpc.insecure_channel(replica.addr) as channel:
        listed = fetch_pb2_grpc.FetchServiceStub(channel).ListSymbols(fetch_pb2.ListSymbolsRequest(), timeout=10)
    return {s.symbol: s.data_version for s in listed.series if s.interval == INTERVAL}


def test_three_replicas_share_the_series_evenly_and_take_over_a_killed_one(tmp_path):
    server = RedisServer(tmp_path)  # its own: the test reads every lease key of the database
    server.start()
    client = redis.Redis.from_url(server.url, socket_timeout=10)
    args = ("--provider", "simulated", "--refresh-s", str(REFRESH_S), "--lease-s", str(LEASE_S),
            "--history-days", "3", "--interval", INTERVAL, "--symbols", ",".join(SYMBOLS), "--log-level", "DEBUG")
    stacks = []
    for name in "abc":
        (tmp_path / name).mkdir()
        stacks.append(Stack(server.url, tmp_path / name))
    replicas = {name: stack.add("fetch", *args) for name, stack in zip("abc", stacks)}
    try:
        for replica in replicas.values():
            replica.wait_serving()
        pids = {replica.proc.pid: name for name, replica in replicas.items()}

        held, took = wait_settled(client, pids, set(replicas), timeout=25)
        counts = Counter(held.values())
        print("spread after start:", sorted(counts.items()), f"settled {took:.1f} s after serving")
        assert all(abs(n - 10) <= 2 for n in counts.values()), counts

        # Spread, not just leased: until every series was refreshed again, each is refreshed by its
        # holder alone.
        settled_ms = int(time.time() * 1000)
        seen = wait_polled(replicas, pids, settled_ms, SYMBOLS, timeout=15)
        refreshers = {s: {name for _, symbol, name in seen if symbol == s} for s in SYMBOLS}
        assert refreshers == {s: {name} for s, name in held.items()}

        victim = max(counts, key=counts.get)
        orphans = [s for s, name in held.items() if name == victim]
        survivors = {name: replica for name, replica in replicas.items() if name != victim}
        killed_ms = int(time.time() * 1000)
        replicas[victim].stop(signal.SIGKILL)

        # Taken over within the lease time: its leases and its heartbeat lapse at most LEASE_S after
        # its last tick, and each survivor sees that at its next tick, at most REFRESH_S later (plus
        # that tick's own run time, 1 s of slack here).
        seen = wait_polled(survivors, pids, killed_ms, orphans, timeout=LEASE_S + 10)
        first = {s: t for t, s, _ in reversed(seen)}
        assert set(orphans) <= set(first), f"never taken over: {sorted(set(orphans) - set(first))}"
        taken_s = max(first[s] for s in orphans) / 1000 - killed_ms / 1000
        print(f"the killed replica's {len(orphans)} series refreshed by the others {taken_s:.1f} s after the kill")
        assert taken_s <= LEASE_S + REFRESH_S + 1.0

        held, _ = wait_settled(client, pids, set(survivors), timeout=10)
        print("spread after the kill:", sorted(Counter(held.values()).items()))

        # The taken-over series are written again by their new holders: their versions move on.
        reader = next(iter(survivors.values()))
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
