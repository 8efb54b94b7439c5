"""WatchBars resumes: a client that reconnects after a connection age-out, a Fetch restart or a
Redis restart misses no write (defect 9), through ui/client.py's resuming helper."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import redis.asyncio as aioredis

from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc
from services.common.bars import make_bars
from services.common.store import PriceStore
from tests.conftest import RedisServer
from tests.integration.services import Stack
from ui.client import CryptoLensClient

DAY = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01


class Watcher:
    """ui/client.py's watch_bars in a thread, collecting updates."""

    def __init__(self, addr: str, symbol: str, after: str = ""):
        self.updates: list[dict] = []
        self.client = CryptoLensClient(fetch_addr=addr)
        self.symbol, self.after = symbol, after
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None
        self.thread.start()

    def _run(self) -> None:
        try:
            for update in self.client.watch_bars([self.symbol], after=self.after, retry_s=0.2):
                self.updates.append(update)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def wait_for(self, n: int, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.updates) < n and time.monotonic() < deadline and self.error is None:
            time.sleep(0.05)
        assert self.error is None, self.error
        assert len(self.updates) >= n, f"only {len(self.updates)} of {n} updates"
        return self.updates


def write_day(url: str, symbol: str, day: int) -> None:
    async def go():
        client = aioredis.from_url(url)
        try:
            bars = make_bars([T0 + day * DAY], [1.0 + day], [1.0 + day], [1.0 + day], [1.0 + day])
            await PriceStore(client).write(symbol, "1d", bars, "simulated", "simulated")
        finally:
            await client.aclose()
    asyncio.run(go())


def test_watch_resumes_across_age_outs_and_a_fetch_restart(redis_server, tmp_path):
    url = redis_server.url[:-1] + "10"
    asyncio.run(aioredis.from_url(url).flushdb())
    args = ("--provider", "simulated", "--refresh-s", "0", "--max-connection-age-s", "1", "--grace-s", "0.5")
    stack = Stack(url, tmp_path)
    fetch = stack.add("fetch", *args).wait_serving()
    watcher = Watcher(fetch.addr, "ADA-USD")
    time.sleep(0.5)
    try:
        for day in range(12):  # writes spread over several connection age-outs
            write_day(url, "ADA-USD", day)
            time.sleep(0.4)
        watcher.wait_for(12)
        fetch.stop()  # a restart: writes land while no Fetch is up
        for day in range(12, 16):
            write_day(url, "ADA-USD", day)
        fetch.start()
        fetch.wait_serving()
        for day in range(16, 18):
            write_day(url, "ADA-USD", day)
        updates = watcher.wait_for(18)
    finally:
        stack.stop()
    versions = [int(u["data_version"]) for u in updates]
    assert versions == list(range(1, 19))  # every write once, in order: none lost, none repeated
    assert [u["bars"][0]["close"] for u in updates] == [1.0 + d for d in range(18)]
    assert "resume_token" in updates[0]


def test_a_redis_restart_pauses_the_stream_and_it_goes_on(tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    stack = Stack(redis.url, tmp_path)
    fetch = stack.add("fetch", "--provider", "simulated", "--refresh-s", "0").wait_serving()
    try:
        with grpc.insecure_channel(fetch.addr) as channel:
            stream = fetch_pb2_grpc.FetchServiceStub(channel).WatchBars(
                fetch_pb2.WatchBarsRequest(symbols=["DOT-USD"]), timeout=60)
            time.sleep(0.5)
            write_day(redis.url, "DOT-USD", 0)
            first = next(stream)
            redis.stop()  # Redis restarts empty (no persistence)
            time.sleep(2)
            redis.start()
            fetch.wait_serving()
            write_day(redis.url, "DOT-USD", 1)  # version 1 again: a new, empty Redis
            second = next(stream)  # the same stream, not an error
            stream.cancel()
    finally:
        stack.stop()
        redis.stop()
    assert first.bars[0].close == 1.0 and second.bars[0].close == 2.0
    assert second.resume_token > first.resume_token
    assert sum("stream paused" in line for line in fetch.log().splitlines()) == 1
