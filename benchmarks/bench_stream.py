"""Exchange streams: trade frames one process parses and applies (bars written to Redis, batched
per bar change), beside json.loads of the same frames; and frame -> Redis -> WatchBars latency
through a real Fetch process fed by a local WebSocket server.

Targets (issue 10): >= 50,000 trade frames/s parsed and applied; p99 <= 50 ms frame to WatchBars.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from websockets.asyncio.server import serve

from benchmarks.support import redis_server
from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc
from services.common.bars import empty_bars
from services.common.store import PriceStore
from services.fetch.ingest import Ingestor
from services.fetch.streams.manager import StreamManager

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD"]
MARKETS = {"BTC-USD": "BTCUSDT", "ETH-USD": "ETHUSDT", "SOL-USD": "SOLUSDT", "XRP-USD": "XRPUSDT"}


def trade_frames(n: int, start_ms: int, per_ms: int = 20) -> list[str]:
    """Combined-stream aggTrade frames shaped like the capture, ``per_ms`` trades per millisecond."""
    frames = []
    for i in range(n):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        t = start_ms + i // per_ms
        data = {"e": "aggTrade", "E": t + 1, "s": MARKETS[symbol], "a": 31718372 + i, "p": f"{100 + (i % 997) * 0.01:.8f}",
                "q": "0.50000000", "f": 38248910 + i, "l": 38248910 + i, "T": t, "m": i % 2 == 0, "M": True}
        frames.append(json.dumps({"stream": f"{MARKETS[symbol].lower()}@aggTrade", "data": data},
                                 separators=(",", ":")))
    return frames


class _NoRest:
    name = "binance"

    def origin_of(self, symbol, interval):
        return "live"


async def _throughput(url: str, frames: list[str], start_ms: int) -> dict:
    client = aioredis.from_url(url)
    ingestor = Ingestor(PriceStore(client), [])

    async def no_repair(symbol, interval):
        return None

    manager = StreamManager(ingestor, {"binance": _NoRest()}, {"binance": SYMBOLS}, {"binance": "ws://unused"},
                            ["1m", "1h"], no_repair)
    for symbol in SYMBOLS:
        manager.builder.seed(symbol, empty_bars(), start_ms // 3_600_000 * 3_600_000, start_ms)
    connection = manager.connections["binance"]
    writer = asyncio.create_task(manager._writer())
    writes = {"n": 0}
    real_write = manager.store.write

    async def counted(*args, **kwargs):
        writes["n"] += 1
        return await real_write(*args, **kwargs)
    manager.store.write = counted
    t0 = time.perf_counter()
    for i in range(0, len(frames), 2000):  # the socket hands frames over in bursts; the writer runs between
        for text in frames[i:i + 2000]:
            connection._frame(text)
        await asyncio.sleep(0)
    while any(s.dirty for s in manager.builder.state.values()) or manager._wake.is_set():
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.3)  # the last batch in flight
    elapsed = time.perf_counter() - t0 - 0.3
    writer.cancel()
    await client.aclose()
    return {"seconds": elapsed, "writes": writes["n"]}


def _json_only(frames: list[str]) -> float:
    t0 = time.perf_counter()
    for text in frames:
        json.loads(text)
    return time.perf_counter() - t0


# --- latency through a real Fetch ---------------------------------------------------------
class _Feed:
    """A local Binance-like stream server sending one trade every ``gap_s``; remembers send times."""

    def __init__(self, count: int, gap_s: float):
        self.count, self.gap_s = count, gap_s
        self.sent: dict[str, float] = {}  # price text -> send time (perf_counter)
        self.ready = threading.Event()
        self.start_sending = threading.Event()
        self.port = 0

    def run(self):
        asyncio.run(self._main())

    async def _main(self):
        async with serve(self._handle, "127.0.0.1", 0, compression=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            self.ready.set()
            await asyncio.sleep(3600)

    async def _handle(self, ws):
        while not self.start_sending.is_set():
            await asyncio.sleep(0.05)
        for i in range(self.count):
            t = int(time.time() * 1000)
            price = f"{1000 + i * 0.01:.2f}"
            data = {"e": "aggTrade", "E": t, "s": "BTCUSDT", "a": i, "p": price, "q": "1.0", "f": i, "l": i, "T": t,
                    "m": False, "M": True}
            self.sent[price] = time.perf_counter()
            await ws.send(json.dumps({"stream": "btcusdt@aggTrade", "data": data}))
            await asyncio.sleep(self.gap_s)
        await asyncio.sleep(3600)


def _latency(redis_url: str, count: int) -> list[float]:
    from tests.integration.services import Stack
    from tests.replay_server import ReplayServer, SyntheticMarket

    feed = _Feed(count, 0.02)
    threading.Thread(target=feed.run, daemon=True).start()
    feed.ready.wait(10)
    latencies: list[float] = []
    with ReplayServer() as rest, tempfile.TemporaryDirectory() as tmp:
        rest.serve_market(SyntheticMarket(now_ms=int(time.time() * 1000) - 120_000))
        stack = Stack(redis_url, Path(tmp))
        stack.add("fetch", "--provider", "binance", "--binance-url", rest.url, "--binance-ws-url",
                  f"ws://127.0.0.1:{feed.port}", "--stream", "on", "--symbols", "BTC-USD", "--interval", "1m",
                  "--refresh-s", "0", "--history-days", "0", "--log-level", "WARNING")
        try:
            stack["fetch"].wait_serving()
            with grpc.insecure_channel(stack["fetch"].addr) as channel:
                call = fetch_pb2_grpc.FetchServiceStub(channel).WatchBars(
                    fetch_pb2.WatchBarsRequest(symbols=["BTC-USD"], interval="1m"), timeout=120)
                time.sleep(1.0)  # connected and seeded
                feed.start_sending.set()
                for update in call:
                    now = time.perf_counter()
                    for bar in update.bars:
                        sent = feed.sent.get(f"{bar.close:.2f}")
                        if sent is not None:
                            latencies.append((now - sent) * 1000)
                    if f"{1000 + (count - 1) * 0.01:.2f}" in {f"{b.close:.2f}" for b in update.bars}:
                        break
                call.cancel()
        finally:
            stack.stop()
    return latencies


def run(quick: bool = False) -> dict:
    n = 100_000 if quick else 400_000
    start_ms = int(time.time() * 1000) // 60_000 * 60_000
    frames = trade_frames(n, start_ms)
    with redis_server() as url:
        json_s = min(_json_only(frames) for _ in range(3))
        runs = [asyncio.run(_throughput(url, frames, start_ms)) for _ in range(3)]
        best = min(runs, key=lambda r: r["seconds"])
        latencies = _latency(url[:-1] + "1", 200 if quick else 1000)
    rate = n / best["seconds"]
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 100 else max(latencies)
    rows = [
        {"name": f"json.loads of {n:,} aggTrade frames (baseline)", "median_ms": json_s * 1000, "ratio": 1.0,
         "note": f"{n / json_s:,.0f} frames/s"},
        {"name": "parse + apply + batched Redis writes (1m and 1h bars)", "median_ms": best["seconds"] * 1000,
         "ratio": best["seconds"] / json_s,
         "note": f"{rate:,.0f} trade frames/s; {best['writes']} store writes; target >= 50,000/s"},
        {"name": "frame -> Redis -> WatchBars, p50", "median_ms": p50, "ratio": None,
         "display": f"{p50:.1f} ms", "note": f"{len(latencies)} frames, one every 20 ms, real Fetch process"},
        {"name": "frame -> Redis -> WatchBars, p99", "median_ms": p99, "ratio": None,
         "display": f"{p99:.1f} ms", "note": "target <= 50 ms on loopback"},
    ]
    return {"title": "Exchange streams (Fetch)", "rows": rows,
            "notes": "Throughput: one process, frames handed to the stream connection's frame handler in bursts "
                     "of 2,000 (as a socket delivers them), Redis writes coalesced per changed bar. Latency: "
                     "send time at the local WebSocket server to receipt of the WatchBars update carrying "
                     "that trade's price."}


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1))
