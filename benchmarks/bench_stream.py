"""Exchange streams: trade frames one process receives, parses and applies (bars written to Redis,
batched per bar change), beside json.loads of the same frames; and frame -> Redis -> WatchBars
latency through a real Fetch process fed by a local WebSocket server.

Targets (issue 10): >= 50,000 trade frames/s parsed and applied; p99 <= 50 ms frame to WatchBars.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import multiprocessing
import socket
import statistics
import struct
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


def _blob_server(frames: list[str], port_out) -> None:
    """A minimal WebSocket server process: one handshake, then every frame pre-encoded in one write,
    so the sender is never what limits the receiving process."""
    blob = b"".join(b"\x81" + (bytes([len(d)]) if len(d) < 126 else b"\x7e" + struct.pack(">H", len(d))) + d
                    for d in (f.encode() for f in frames))
    server = socket.create_server(("127.0.0.1", 0))
    port_out.put(server.getsockname()[1])
    while True:
        conn, _ = server.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key"))
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + blob)


class _NoRest:
    name = "binance"

    def origin_of(self, symbol, interval):
        return "live"


async def _throughput(url: str, ws_port: int, n: int, start_ms: int) -> dict:
    """Frames received over a real local WebSocket, parsed, applied and written, in one process."""
    client = aioredis.from_url(url)
    ingestor = Ingestor(PriceStore(client), [])
    await client.flushdb()

    async def no_repair(symbol, interval):
        return None

    manager = StreamManager(ingestor, {"binance": _NoRest()}, {"binance": SYMBOLS},
                            {"binance": f"ws://127.0.0.1:{ws_port}"}, ["1m", "1h"], no_repair)
    manager._spawn_repair = lambda provider, symbols: None  # no REST here: cover the hour as a seed would
    for symbol in SYMBOLS:
        manager.builder.seed(symbol, empty_bars(), start_ms // 3_600_000 * 3_600_000, start_ms)
    done, seen, writes = asyncio.Event(), {"frames": 0, "first": 0.0}, {"n": 0}
    apply = manager._on_frame

    def counting(parsed, now_ms):
        if not seen["frames"]:
            seen["first"] = time.perf_counter()
        seen["frames"] += 1
        apply(parsed, now_ms)
        if seen["frames"] == n:
            done.set()
    manager.connections["binance"].on_frame = counting
    real_write = manager.store.write

    async def counted(*args, **kwargs):
        writes["n"] += 1
        return await real_write(*args, **kwargs)
    manager.store.write = counted
    task = asyncio.create_task(manager.run())
    await asyncio.wait_for(done.wait(), 300)
    while any(st.dirty for st in manager.builder.state.values()):
        await asyncio.sleep(0.001)
    written = time.perf_counter()
    await asyncio.sleep(0.2)  # the last write in flight, if any (not counted)
    await manager.stop()
    task.cancel()
    await client.aclose()
    return {"seconds": written - seen["first"], "writes": writes["n"]}


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
    ports = multiprocessing.Queue()
    sender = multiprocessing.Process(target=_blob_server, args=(frames, ports), daemon=True)
    sender.start()
    ws_port = ports.get(timeout=60)
    with redis_server() as url:
        json_s = min(_json_only(frames) for _ in range(3))
        runs = [asyncio.run(_throughput(url, ws_port, n, start_ms)) for _ in range(3)]
        best = min(runs, key=lambda r: r["seconds"])
        latencies = _latency(url[:-1] + "1", 200 if quick else 1000)
    sender.terminate()
    rate = n / best["seconds"]
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 100 else max(latencies)
    rows = [
        {"name": f"json.loads of {n:,} aggTrade frames (baseline)", "median_ms": json_s * 1000, "ratio": 1.0,
         "note": f"{n / json_s:,.0f} frames/s"},
        {"name": "receive (aiohttp, local socket) + parse + apply + batched Redis writes (1m, 1h bars)",
         "median_ms": best["seconds"] * 1000,
         "ratio": best["seconds"] / json_s,
         "note": f"{rate:,.0f} trade frames/s; {best['writes']} store writes; target >= 50,000/s"},
        {"name": "frame -> Redis -> WatchBars, p50", "median_ms": p50, "ratio": None,
         "display": f"{p50:.1f} ms", "note": f"{len(latencies)} frames, one every 20 ms, real Fetch process"},
        {"name": "frame -> Redis -> WatchBars, p99", "median_ms": p99, "ratio": None,
         "display": f"{p99:.1f} ms", "note": "target <= 50 ms on loopback"},
    ]
    return {"title": "Exchange streams (Fetch)", "rows": rows,
            "notes": "Throughput: one process receives the frames from a local WebSocket server process that "
                     "writes them pre-encoded (so the sender never limits), through the Fetch stream connection, "
                     "builder and writer; Redis writes coalesced per changed bar; best of 3. Latency: "
                     "send time at the local WebSocket server to receipt of the WatchBars update carrying "
                     "that trade's price."}


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1))
