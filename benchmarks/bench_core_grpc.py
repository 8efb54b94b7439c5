"""GetStats over gRPC on a year of 1-minute bars beside a bare grpc.aio call: warm (result cache),
after a one-bar append or a rewrite of the open bar (incremental), and after a rewrite of an older
bar (the full read and recompute), side by side in one run; and Core's resident memory with ten
symbol-years of minute data loaded."""

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


async def _write_bar(store: PriceStore, where: str) -> None:
    """One write to BTC-USD 1m: a new bar after the newest ("append"), the newest bar's close
    changed ("open"), or a bar half a year back changed ("old", which no delta may skip)."""
    newest = (await store.read_page("BTC-USD", "1m", None, None, 1, newest=True))[0]
    if where == "old":
        bar = await store.read_page("BTC-USD", "1m", int(newest["ts"][0]) - 180 * 86_400_000, None, 1)
        bar = bar[0]
    else:
        bar = newest.copy()
    if where == "append":
        bar["ts"] += 60_000
    bar["close"] *= 1.0001
    await store.write("BTC-USD", "1m", bar, "bench")


async def _measure(core_addr: str, url: str, repeats: int) -> dict[str, list[float]]:
    request = core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", benchmark="BTC-USD")
    sliding = core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", benchmark="BTC-USD", lookback="365d")
    with_beta = core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", benchmark="ETH-USD", lookback="365d")
    samples = {"echo": [], "full": [], "append": [], "open": [], "beta": [], "warm": []}
    client = aioredis.from_url(url)
    store = PriceStore(client)

    async def timed(name: str, req) -> core_pb2.GetStatsResponse:
        t = time.perf_counter()
        reply = await core.GetStats(req, timeout=60)
        samples[name].append((time.perf_counter() - t) * 1000)
        return reply

    async with grpc.aio.insecure_channel(core_addr) as channel:
        core = core_pb2_grpc.CoreServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        await core.GetStats(request, timeout=60)  # connect and load once
        for _ in range(repeats):
            await _write_bar(store, "old")
            reply = await timed("full", sliding)
            assert not reply.cached and reply.count == 525_600
            await _write_bar(store, "append")
            await core.GetStats(sliding, timeout=60)  # the window is rebuilt once after the full read
            await core.GetStats(with_beta, timeout=60)  # and the returns paired with ETH-USD
            for _ in range(10):
                await _write_bar(store, "append")
                reply = await timed("append", sliding)
                assert not reply.cached and reply.count == 525_600
                await _write_bar(store, "open")
                reply = await timed("open", sliding)
                assert not reply.cached and reply.count == 525_600
                await _write_bar(store, "append")
                reply = await timed("beta", with_beta)
                assert not reply.cached and reply.HasField("beta")
                await timed("warm", sliding)
                t = time.perf_counter()
                await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                samples["echo"].append((time.perf_counter() - t) * 1000)
        for symbol in SYMBOLS:  # ten symbol-years resident
            await core.GetStats(core_pb2.GetStatsRequest(symbol=symbol, interval="1m"), timeout=60)
    await client.aclose()
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
    echo, full, append, opened, beta, warm = (median(samples[k]) for k in
                                              ("echo", "full", "append", "open", "beta", "warm"))

    def p99(name: str) -> str:
        return f"p99 {float(np.percentile(samples[name], 99)):.2f} ms"

    rows = [
        {"name": "bare grpc.aio call (Health/Check) — baseline", "median_ms": echo, "ratio": 1.0, "note": ""},
        {"name": "GetStats warm (result cache hit)", "median_ms": warm, "ratio": warm / echo,
         "note": f"{p99('warm')}; target p50 ≤ 2 ms"},
        {"name": "GetStats after a rewrite of an older bar (full Redis read + full recompute)", "median_ms": full,
         "ratio": full / echo, "note": f"{p99('full')}; target ≤ 60 ms"},
        {"name": "GetStats after a one-bar append (delta read, window slides by one bar)", "median_ms": append,
         "ratio": append / echo, "note": f"{p99('append')}; {full / append:.1f}x faster than the full "
                                         "recompute; target p50 ≤ 5 ms"},
        {"name": "GetStats after the open bar's close changes (delta read)", "median_ms": opened,
         "ratio": opened / echo, "note": f"{p99('open')}; {full / opened:.1f}x faster than the full recompute"},
        {"name": "GetStats with beta against ETH-USD after a one-bar append", "median_ms": beta,
         "ratio": beta / echo, "note": f"{p99('beta')}; {full / beta:.1f}x faster than the full recompute"},
        {"name": "Core resident memory, ten symbol-years of 1m data loaded", "median_ms": 0.0, "ratio": None,
         "display": f"{rss:.0f} MB", "note": f"{rss_before:.0f} MB at start; target < 300 MB"},
    ]
    return {"title": "Core over gRPC: GetStats on 525,600 one-minute bars (lookback 365d)", "rows": rows,
            "notes": f"{repeats} rounds, one client, loopback; each round: a rewrite of a bar 180 days back "
                     "then GetStats (full), one untimed append (the kept window is rebuilt), then 10 x (append "
                     "a bar, GetStats; rewrite the newest bar, GetStats; append a bar, GetStats with benchmark "
                     "ETH-USD; GetStats again (warm); Health/Check)."}


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
