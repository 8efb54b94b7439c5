"""Shared benchmark plumbing: a throwaway redis-server, timing, and minute-bar data."""

from __future__ import annotations

import contextlib
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from services.common.bars import make_bars

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MINUTES_PER_YEAR = 525_600


@contextlib.contextmanager
def redis_server():
    """A redis-server on a free loopback port, in memory only; yields its URL."""
    binary = shutil.which("redis-server")
    if not binary:
        raise SystemExit("benchmarks need redis-server on PATH (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                 "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        try:
            for _ in range(200):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait()


def year_of_minutes(start_ms: int = 1_672_531_200_000, seed: int = 1) -> np.ndarray:
    """525,600 one-minute bars: real BTCUSDT 1m closes tiled to a year when available, else a random walk."""
    path = SHARED / "prices" / "BTCUSDT_1m_binanceus.csv"
    if path.exists():
        closes = np.loadtxt(path, delimiter=",", skiprows=1, usecols=4)
        reps = -(-MINUTES_PER_YEAR // len(closes))
        # Chain the tiles so the joins are continuous: scale each repeat to start where the last ended.
        tiles = [closes]
        for _ in range(reps - 1):
            tiles.append(closes * (tiles[-1][-1] / closes[0]))
        close = np.concatenate(tiles)[:MINUTES_PER_YEAR]
    else:
        rng = np.random.default_rng(seed)
        close = 20_000 * np.exp(np.cumsum(rng.normal(0, 0.0008, MINUTES_PER_YEAR)))
    ts = start_ms + np.arange(MINUTES_PER_YEAR, dtype=np.int64) * 60_000
    spread = close * 0.0005
    return make_bars(ts, close, close + spread, close - spread, close, np.full(MINUTES_PER_YEAR, 1.5))


def time_interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Run each callable once per round, round after round, so drift hits them all alike. ms per call."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)
