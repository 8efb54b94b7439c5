"""Core under load: 1, 8 and 32 concurrent clients on warm GetStats, beside a bare grpc.aio echo
server that answers the same method with the same reply bytes, measured in the same run.

The echo server is the ceiling for this machine, client and gRPC stack: a ratio of 1.0 would mean
Core's own work (its runtime's metrics and status mapping, the kept-state sync, checking that the
repeated request's states and window are unchanged, the freshness) costs nothing under load.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
from cryptolens.v1 import core_pb2

from benchmarks.bench_core_grpc import _free_port, _load, _rss_mb
from benchmarks.support import ROOT, redis_server

METHOD = "/cryptolens.v1.CoreService/GetStats"
REQUEST = core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", lookback="30d").SerializeToString()
CONCURRENCY = (1, 8, 32)
ROUNDS = 6  # each level's time is split into this many turns of echo, then Core


async def _echo_server(port: int, reply: bytes) -> None:
    """A bare grpc.aio server: GetStats answered with fixed bytes, nothing else."""
    async def handle(request: bytes, context) -> bytes:
        return reply

    handler = grpc.method_handlers_generic_handler("cryptolens.v1.CoreService", {
        "GetStats": grpc.unary_unary_rpc_method_handler(handle)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def _call(addr: str) -> bytes:
    async with grpc.aio.insecure_channel(addr) as channel:
        return await channel.unary_unary(METHOD)(REQUEST, timeout=60)


async def _drive(addr: str, clients: int, seconds: float) -> tuple[float, list[float]]:
    """``clients`` callers, each on its own channel, calling back to back for ``seconds``: the time
    they took and each call's latency (ms)."""
    latencies: list[float] = []
    channels = [grpc.aio.insecure_channel(addr) for _ in range(clients)]
    for channel in channels:
        await channel.unary_unary(METHOD)(REQUEST, timeout=60)  # connected before the clock starts
    stop = time.perf_counter() + seconds

    async def caller(channel) -> None:
        call = channel.unary_unary(METHOD)
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await call(REQUEST, timeout=60)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in channels))
    elapsed = time.perf_counter() - started
    for channel in channels:
        await channel.close()
    return elapsed, latencies


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds the process has used (all its threads)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(addr: str) -> None:
    for _ in range(300):
        try:
            asyncio.run(_call(addr))
            return
        except grpc.RpcError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answers GetStats on {addr}")


def run(quick: bool = False) -> dict:
    seconds = 5.0 if quick else 30.0
    with redis_server() as url:
        asyncio.run(_load(url, ["BTC-USD"]))
        core_port, echo_port = _free_port(), _free_port()
        env = {**os.environ, "CRYPTOLENS_REDIS_URL": url, "CRYPTOLENS_LOG_LEVEL": "WARNING"}
        core = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "core", "--host", "127.0.0.1",
                                 "--grpc-port", str(core_port), "--metrics-port", "0"], cwd=ROOT, env=env)
        echo = None
        try:
            core_addr, echo_addr = f"127.0.0.1:{core_port}", f"127.0.0.1:{echo_port}"
            _wait_ready(core_addr)
            reply = asyncio.run(_call(core_addr))  # the real answer, warm from here on
            echo = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_load", "--echo", str(echo_port),
                                     reply.hex()], cwd=ROOT, env=env)
            _wait_ready(echo_addr)
            results, cpu_us = {}, {}
            for clients in CONCURRENCY:
                elapsed, cpu = {"echo": 0.0, "core": 0.0}, {"echo": 0.0, "core": 0.0}
                latencies: dict[str, list[float]] = {"echo": [], "core": []}
                for _ in range(ROUNDS):  # echo and Core in turns: the machine's drift hits both alike
                    for name, addr, proc in (("echo", echo_addr, echo), ("core", core_addr, core)):
                        before = _cpu_s(proc.pid)
                        took, lat = asyncio.run(_drive(addr, clients, seconds / ROUNDS))
                        cpu[name] += _cpu_s(proc.pid) - before
                        elapsed[name] += took
                        latencies[name] += lat
                for name in ("echo", "core"):
                    results[name, clients] = len(latencies[name]) / elapsed[name], latencies[name]
                    cpu_us[name, clients] = cpu[name] / len(latencies[name]) * 1e6
            rss_core, rss_echo = _rss_mb(core.pid), _rss_mb(echo.pid)
        finally:
            for proc in (core, echo):
                if proc is not None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=30)
    rows = []
    for clients in CONCURRENCY:
        (echo_rate, echo_lat), (core_rate, core_lat) = results["echo", clients], results["core", clients]
        echo_p99, core_p99 = float(np.percentile(echo_lat, 99)), float(np.percentile(core_lat, 99))
        rows.append({"name": f"{clients} client(s): echo server (baseline)", "median_ms": float(np.median(echo_lat)),
                     "ratio": 1.0, "note": f"{echo_rate:,.0f} calls/s, p99 {echo_p99:.2f} ms; "
                                           f"server CPU {cpu_us['echo', clients]:.0f} µs per call"})
        rows.append({"name": f"{clients} client(s): Core warm GetStats", "median_ms": float(np.median(core_lat)),
                     "ratio": core_rate / echo_rate,
                     "note": f"{core_rate:,.0f} calls/s (ratio = throughput vs echo, target ≥ 0.8); "
                             f"p99 {core_p99:.2f} ms = {core_p99 / echo_p99:.2f}x echo's (target ≤ 1.5x); "
                             f"server CPU {cpu_us['core', clients]:.0f} µs per call"})
    rows.append({"name": "resident memory after the load", "median_ms": 0.0, "ratio": None,
                 "display": f"Core {rss_core:.0f} MB", "note": f"echo server {rss_echo:.0f} MB"})
    return {"title": "Core under concurrent load: warm GetStats beside a bare grpc.aio echo server",
            "rows": rows,
            "notes": f"{seconds:.0f} s per level and server, in {ROUNDS} turns of echo then Core; each client on its "
                     "own channel calling back to back, "
                     "all clients in one asyncio process on the same machine as the servers (loopback); the "
                     "echo server returns Core's own reply bytes for the same request (30 days of 1m bars). Server CPU per "
                     "call is the server process' user+system time (all threads) over the calls it answered: at 8 and "
                     "32 clients both servers run at about one core, so throughput follows it."}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--echo"]:
        asyncio.run(_echo_server(int(sys.argv[2]), bytes.fromhex(sys.argv[3])))
    else:
        import json

        print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
