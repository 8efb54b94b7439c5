"""GetStats over gRPC on a year of 1-minute bars, cold and warm, beside a bare grpc.aio call;
and Core's resident memory with ten symbol-years of minute data loaded."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.support import ROOT, median, redis_server, year_of_minutes
from cryptolens.v1 import core_pb2, core_pb2_grpc
from services.common.store import PriceStore

SYMBOLS = [f"{base}-USD" for base in ("BTC", "ETH", "SOL", "XRP", "BNB", "ADA", "DOGE", "TRX", "BCH", "LTC")]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _load(url: str, symbols: list[str]) -> None:
    client = aioredis.from_url(url)
    store = PriceStore(client)
    bars = year_of_minutes()
    for i, symbol in enumerate(symbols):
        scaled = bars.copy()
        for col in ("open", "high", "low", "close"):
            scaled[col] = bars[col] * (1 + 0.1 * i)
        await store.write(symbol, "1m", scaled, "bench")
    await client.aclose()


async def _touch(url: str) -> None:
    """Rewrite the newest bar: a new data version, so the next GetStats is a full cache miss."""
    client = aioredis.from_url(url)
    store = PriceStore(client)
    last = (await store.read_bars("BTC-USD", "1m"))[-1:]
    await store.write("BTC-USD", "1m", last, "bench")
    await client.aclose()


async def _measure(core_addr: str, url: str, repeats: int) -> dict[str, list[float]]:
    request = core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", benchmark="BTC-USD")
    samples = {"echo": [], "cold": [], "warm": []}
    async with grpc.aio.insecure_channel(core_addr) as channel:
        core = core_pb2_grpc.CoreServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        await core.GetStats(request, timeout=60)  # connect and load once
        for _ in range(repeats):
            await _touch(url)
            t = time.perf_counter()
            reply = await core.GetStats(request, timeout=60)
            samples["cold"].append((time.perf_counter() - t) * 1000)
            assert not reply.cached and reply.count == 525_600
            for _ in range(20):
                t = time.perf_counter()
                reply = await core.GetStats(request, timeout=60)
                samples["warm"].append((time.perf_counter() - t) * 1000)
                assert reply.cached
                t = time.perf_counter()
                await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                samples["echo"].append((time.perf_counter() - t) * 1000)
        for symbol in SYMBOLS:  # ten symbol-years resident
            await core.GetStats(core_pb2.GetStatsRequest(symbol=symbol, interval="1m"), timeout=60)
    return samples


def run(quick: bool = False) -> dict:
    repeats = 5 if quick else 15
    with redis_server() as url:
        asyncio.run(_load(url, SYMBOLS))
        port = _free_port()
        env = {**os.environ, "CRYPTOLENS_REDIS_URL": url, "CRYPTOLENS_LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "core", "--host", "127.0.0.1",
                                 "--grpc-port", str(port), "--metrics-port", "0"], cwd=ROOT, env=env)
        try:
            addr = f"127.0.0.1:{port}"
            with grpc.insecure_channel(addr) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for _ in range(200):
                    try:
                        if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                            break
                    except grpc.RpcError:
                        pass
                    time.sleep(0.1)
            rss_before = _rss_mb(proc.pid)
            samples = asyncio.run(_measure(addr, url, repeats))
            rss = _rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    echo, cold, warm = (median(samples[k]) for k in ("echo", "cold", "warm"))
    p95_warm = float(np.percentile(samples["warm"], 95))
    rows = [
        {"name": "bare grpc.aio call (Health/Check) — baseline", "median_ms": echo, "ratio": 1.0, "note": ""},
        {"name": "GetStats warm (result cache hit)", "median_ms": warm, "ratio": warm / echo,
         "note": f"p95 {p95_warm:.2f} ms; target p50 ≤ 2 ms"},
        {"name": "GetStats cold (new data version: Redis read + compute + reply)", "median_ms": cold,
         "ratio": cold / echo, "note": "target ≤ 60 ms"},
        {"name": "Core resident memory, ten symbol-years of 1m data loaded", "median_ms": 0.0, "ratio": None,
         "display": f"{rss:.0f} MB", "note": f"{rss_before:.0f} MB at start; target < 300 MB"},
    ]
    return {"title": "Core over gRPC: GetStats on 525,600 one-minute bars", "rows": rows,
            "notes": f"{repeats} cold calls (each after a write that changes the data version) and "
                     f"{repeats * 20} warm calls interleaved with the baseline call, one client, loopback."}


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
