"""Fetch replicas on one Redis share the series evenly and take over those of a replica that dies or stops."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter

import grpc
import pytest
import redis

from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc
from services.common.store import PriceStore
from services.fetch.ingest import Ingestor
from services.fetch.lease import REPLICAS_KEY, Leases, lease_key
from services.fetch.providers.registry import SIMULATED_BASES, KnownAssets
from services.fetch.providers.simulated import SimulatedProvider
from services.fetch.scheduler import Scheduler
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
    series held, each of ``names`` holding its quota (series // replicas, or one more). Returns the
    holders and the seconds it took."""
    whole = len(SYMBOLS) // len(names)
    start = time.monotonic()
    in_a_row, held, last = 0, {}, None
    while time.monotonic() - start < timeout:
        held = owners(client, pids)
        counts = Counter(held.values())
        settled = set(counts) == names and all(n in (whole, whole + 1) for n in counts.values())
        in_a_row = in_a_row + 1 if settled and held == last else int(settled)
        last = held
        if in_a_row == 3:
            return held, time.monotonic() - start
        time.sleep(0.3)
    raise AssertionError(f"never settled at {whole} or {whole + 1} each over {sorted(names)}: "
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


def test_three_replicas_share_30_series_evenly_and_take_over_a_killed_and_a_stopped_one(tmp_path):
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

        # A replica that stops (SIGTERM) gives its leases back and leaves the set as it goes (they are
        # gone when it has exited, not seconds later on expiry); the last one takes them all.
        leaving, last = survivors
        handed = [s for s, name in held.items() if name == leaving]
        owner = client.get(lease_key(handed[0], INTERVAL))
        stopped_ms = int(time.time() * 1000)
        replicas[leaving].stop(signal.SIGTERM)
        assert owner not in client.mget([lease_key(s, INTERVAL) for s in handed])
        assert client.zscore(REPLICAS_KEY, owner) is None
        seen = wait_polled({last: replicas[last]}, pids, stopped_ms, handed, timeout=LEASE_S + 10)
        first = {s: t for t, s, _ in reversed(seen)}
        assert set(handed) <= set(first), f"never taken over: {sorted(set(handed) - set(first))}"
        handed_s = max(first[s] for s in handed) / 1000 - stopped_ms / 1000
        print(f"the stopped replica's {len(handed)} series refreshed by the last one {handed_s:.1f} s after the stop")
    finally:
        for stack in stacks:
            stack.stop()
        server.stop()


async def test_the_quotas_split_the_series_over_the_replicas_that_heartbeat(redis_client):
    a, b, c = (Leases(redis_client, 1000, owner=name) for name in "abc")
    assert await a.quota(30) == 30
    assert [await b.quota(31), await a.quota(31)] == [15, 16]  # the first by id gets the one left over
    assert [await c.quota(31), await a.quota(31), await b.quota(31)] == [10, 11, 10]
    await asyncio.sleep(1.2)  # b and c stopped heartbeating for longer than a lease: no longer counted
    assert await a.quota(30) == 30
    assert [await b.quota(30), await c.quota(30)] == [15, 10]
    await b.release_all()  # a replica that stops leaves at once
    assert [await a.quota(30), await c.quota(30)] == [15, 15]


async def test_replicas_that_join_late_get_their_part(redis_client):
    """Five replicas share the 30 series 6 each; two more join: all seven end with 4 or 5, the two
    newcomers included. (The first rule, a share of ceil(30 / 7) = 5 and a release only above 6,
    left them none.)"""
    store, provider = PriceStore(redis_client), KnownAssets(SimulatedProvider())

    def replica(name: str) -> Scheduler:  # in-process replicas, ticked in turn: the order is the test's
        return Scheduler(Ingestor(store, [provider]), Leases(redis_client, 60_000, owner=name), SYMBOLS,
                         INTERVAL, history_days=1, refresh_s=1)

    async def spread(replicas: list[Scheduler]) -> dict[str, int]:
        for _ in range(3):
            for r in replicas:
                await r.tick()
        held = Counter([await redis_client.get(lease_key(s, INTERVAL)) for s in SYMBOLS])
        return {r.leases.owner: held[r.leases.owner.encode()] for r in replicas}

    replicas = [replica(f"r{i}") for i in range(5)]
    assert set((await spread(replicas)).values()) == {6}
    replicas += [replica("r5"), replica("r6")]
    counts = await spread(replicas)
    assert sum(counts.values()) == 30 and set(counts.values()) == {4, 5}, counts


async def test_a_stop_that_cancels_a_refresh_as_its_lease_block_ends_stops_it(redis_client):
    """A stop cancels the scheduler. One that came as a ``hold`` block ended, while it waited for the
    renewer to finish, went to the renewer, which was finishing anyway and ate it: the scheduler ran
    on and the process was killed 15 s later with its leases held (1 SIGTERM in about 12)."""
    leases = Leases(redis_client, 60_000, owner="a")
    for spins in range(6):  # cancelled 0, 1, 2 ... loop steps after the block's body
        body_done = asyncio.Event()

        async def refresh() -> str:
            async with leases.hold("BTC-USD", "1h"):
                body_done.set()
            return "ran on"

        task = asyncio.create_task(refresh())
        await body_done.wait()
        for _ in range(spins):
            await asyncio.sleep(0)
        if task.done():
            break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
