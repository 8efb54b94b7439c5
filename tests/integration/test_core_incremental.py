"""Incremental Core (issue #10 item 3) over gRPC with a real redis-server and real Core processes.

A warm Core follows a series through random appends, rewrites of the open bar and rewrites of
older bars; after each write its GetStats equals the full computation on what Redis holds, and at
the end a cold Core's answer, to 1e-9. Its metrics show which path each write took: a delta read
and a window updated in place, or the full read / rebuild whenever the shortcut cannot be proven
(an older bar rewritten, the updates log gone, a Redis restarted empty, another origin).
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis

from cryptolens.v1 import core_pb2, core_pb2_grpc
from services.common import analytics
from services.common.bars import find_gaps, make_bars
from services.common.store import UPDATES_LOG, PriceStore
from services.core import answers
from services.core.answers import _STATS
from tests.integration.services import ServiceProcess, start_core

MINUTE = 60_000
START = 1_767_225_600_000  # 2026-01-01
N = 20_000  # ~14 days of minutes: read whole, and a 10d lookback slides over it
REQUESTS = [core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", benchmark="BTC-USD", lookback="10d"),
            core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", benchmark="BTC-USD", risk_free_rate=0.04),
            core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", benchmark="ETH-USD", lookback="10d")]


def run(coro):
    return asyncio.run(coro)


class Store:
    """Writes and full reads of BTC-USD 1m through a short-lived client (each call its own loop)."""

    def __init__(self, url: str):
        self.url = url

    async def _do(self, fn):
        client = aioredis.from_url(self.url, socket_timeout=10)
        try:
            return await fn(client, PriceStore(client))
        finally:
            await client.aclose()

    def write(self, ts, close, origin: str | None = None, symbol: str = "BTC-USD") -> int:
        bars = make_bars(np.asarray(ts, np.int64), close, close, close, close, np.ones(len(ts)))
        return run(self._do(lambda c, s: s.write(symbol, "1m", bars, "test", origin))).version

    def bars(self, symbol: str = "BTC-USD") -> tuple[np.ndarray, np.ndarray]:
        data = run(self._do(lambda c, s: s.read(symbol, "1m")))
        return data.columns["ts"], data.columns["close"]

    def delete_log(self) -> None:
        run(self._do(lambda c, s: c.delete(UPDATES_LOG)))


def counters(core: ServiceProcess) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{core.metrics_port}/metrics", timeout=5).read().decode()
    out = {}
    for prefix, name, label in (("reads", "cryptolens_series_reads_total", "kind"),
                                 ("kept", "cryptolens_core_kept_stats_total", "result")):
        for value, number in re.findall(rf'^{name}{{{label}="(\w+)"}} (\S+)$', text, re.M):
            out[f"{prefix}:{value}"] = float(number)
    return out


def expected(store: Store, request) -> core_pb2.GetStatsResponse:
    """The full computation on what Redis holds now, over the window the request resolves to."""
    ts, close = store.bars()
    if request.lookback:
        end = int(ts[-1]) + MINUTE
        keep = (ts >= end - 10 * 1440 * MINUTE) & (ts < end)
        ts, close = ts[keep], close[keep]
    bench_ts = bench_close = None
    if request.benchmark != "BTC-USD":
        bench_ts, bench_close = store.bars(request.benchmark)
        inside = (bench_ts >= ts[0]) & (bench_ts <= ts[-1])
        bench_ts, bench_close = bench_ts[inside], bench_close[inside]
    values = analytics.compute_stats(ts, close, 525_600, request.risk_free_rate, bench_ts, bench_close)
    values["gaps"] = find_gaps(ts, MINUTE)
    return answers.stats_response("BTC-USD", "1m", "", values, int(ts[0]), int(ts[-1]), 0, "test")


def assert_same(got, want) -> None:
    assert got.count == want.count
    assert got.HasField("beta") == want.HasField("beta")
    if want.HasField("beta"):
        assert got.beta == pytest.approx(want.beta, rel=1e-9, abs=1e-12)
    assert (got.start, got.end) == (want.start, want.end)
    assert list(got.gaps) == list(want.gaps)
    assert (got.max_drawdown_time, got.worst_return_time) == (want.max_drawdown_time, want.worst_return_time)
    for name in _STATS:
        assert got.HasField(name) == want.HasField(name), name
        if want.HasField(name):
            assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-9, abs=1e-12), name


def test_incremental_answers_equal_full_and_cold_ones_and_fall_back_when_they_must(redis, tmp_path):
    rng = np.random.default_rng(11)
    store = Store(redis.url)
    ts = START + np.arange(N, dtype=np.int64) * MINUTE
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, N)))
    store.write(ts, close)
    eth = close * np.exp(np.cumsum(rng.normal(0, 0.0005, N)))  # correlated with BTC-USD
    store.write(ts[::-1][::2][::-1], eth[::-1][::2][::-1], symbol="ETH-USD")  # every other minute
    core = start_core(redis, tmp_path, "warm")
    channel = grpc.insecure_channel(core.addr)
    stub = core_pb2_grpc.CoreServiceStub(channel)

    def check(kind: str, kept: str) -> None:
        """Every request answers the full computation; the write to BTC-USD was read as ``kind``,
        the kept windows were ``kept``."""
        before = counters(core)
        for request in REQUESTS:
            reply = stub.GetStats(request, timeout=30)
            assert not reply.cached
            assert_same(reply, expected(store, request))
        after = counters(core)

        def grew(name: str) -> float:
            return after.get(name, 0) - before.get(name, 0)
        other = "full" if kind == "delta" else "delta"
        assert (grew(f"reads:{kind}"), grew(f"reads:{other}")) == (1, 0), (kind, before, after)
        # Two windows (10d, whole history) are kept; the third request shares the 10d one.
        want = {"updated": (len(REQUESTS), 0), "rebuilt": (1, 2)}[kept]
        assert (grew("kept:updated"), grew("kept:rebuilt"), grew("kept:full")) == (*want, 0), (kept, before, after)

    def same_as_cold(name: str) -> None:
        """A Core started now (nothing kept, nothing cached) answers the same."""
        cold = start_core(redis, tmp_path, name)
        try:
            with grpc.insecure_channel(cold.addr) as cold_channel:
                cold_stub = core_pb2_grpc.CoreServiceStub(cold_channel)
                for request in REQUESTS:
                    assert_same(stub.GetStats(request, timeout=30), cold_stub.GetStats(request, timeout=30))
        finally:
            cold.stop()

    try:
        for request in REQUESTS:
            assert_same(stub.GetStats(request, timeout=30), expected(store, request))
        last_ts, last = int(ts[-1]), float(close[-1])
        for step in range(40):
            op = rng.random()
            if op < 0.45:  # a new bar (now and then after a gap)
                last_ts += MINUTE * (4 if rng.random() < 0.1 else 1)
                last *= 1 + rng.normal(0, 0.002)
                store.write([last_ts], [last])
                check("delta", "updated")
            elif op < 0.85:  # the open bar's close changes
                last *= 1 + rng.normal(0, 0.002)
                store.write([last_ts], [last])
                check("delta", "updated")
            else:  # a bar a hundred minutes back is corrected: re-read from there, windows rebuilt
                old_ts, old_close = store.bars()
                store.write([old_ts[-100]], [old_close[-100] * 1.003])
                check("delta", "rebuilt")
        # The benchmark moves too: beta follows it (its pair of returns is brought forward).
        eth_ts, eth_close = store.bars("ETH-USD")
        store.write([eth_ts[-1] + 2 * MINUTE], [eth_close[-1] * 1.002], symbol="ETH-USD")
        for request in REQUESTS:
            assert_same(stub.GetStats(request, timeout=30), expected(store, request))
        # A bar far back (more than a delta may re-read): the whole series again.
        old_ts, old_close = store.bars()
        store.write([old_ts[-15_000]], [old_close[-15_000] * 0.99])
        check("full", "rebuilt")
        # The updates log lost (trimmed, deleted): nothing can be proven, the whole series again.
        store.delete_log()
        last_ts += MINUTE
        store.write([last_ts], [last])
        check("full", "rebuilt")
        last_ts += MINUTE
        store.write([last_ts], [last * 1.001])
        check("delta", "updated")  # and the shortcut is back on the next write

        same_as_cold("cold-1")

        # Another origin replaces the series: never merged into what was kept.
        store.write(ts, close * 3, origin="csv:other")
        check("full", "rebuilt")

        # Redis restarted empty and written again: the versions repeat, the epoch does not.
        redis.proc.kill()
        redis.proc.wait()
        redis.start()
        store.write(ts, close * 2)
        store.write(ts, eth * 2, symbol="ETH-USD")
        # Core notices Redis is back; each stale pooled connection may answer UNAVAILABLE once.
        calm = 0
        for _ in range(100):
            try:
                stub.GetStats(REQUESTS[calm % len(REQUESTS)], timeout=5)
                calm += 1
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                calm = 0
                time.sleep(0.05)
            if calm == 2 * len(REQUESTS):
                break
        assert calm == 2 * len(REQUESTS)
        for request in REQUESTS:  # the new numbers, from a full read
            assert_same(stub.GetStats(request, timeout=30), expected(store, request))
        last_ts, last = int(ts[-1]) + MINUTE, float(close[-1]) * 2
        store.write([last_ts], [last])
        check("delta", "updated")
        assert stub.GetStats(REQUESTS[0], timeout=5).last == pytest.approx(last)
        same_as_cold("cold-2")
    finally:
        channel.close()
        core.stop()
