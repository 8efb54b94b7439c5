"""Ingest one year of 1-minute bars from a replayed provider into Redis: end to end (HTTP paging,
JSON, parsing, normalisation, store), then parse-and-normalise alone, then the store write alone
beside a raw pipelined write of the same bytes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import redis.asyncio as aioredis

from benchmarks.support import median, redis_server, year_of_minutes
from services.common.bars import COLUMNS
from services.common.intervals import INTERVAL_MS
from services.common.store import CHUNK_BARS, PriceStore
from services.common.normalize import normalize_bars
from services.fetch.providers.binance import BinanceProvider, parse_klines

STEP = INTERVAL_MS["1m"]


def kline_pages(bars: np.ndarray) -> dict[int, bytes]:
    """Binance /api/v3/klines bodies (1,000 rows, prices as strings), keyed by startTime."""
    pages = {}
    for i in range(0, len(bars), 1000):
        page = bars[i:i + 1000]
        rows = [[int(t), f"{o:.2f}", f"{h:.2f}", f"{lo:.2f}", f"{c:.2f}", f"{v:.8f}", int(t) + STEP - 1, "0", 10,
                 "0", "0", "0"] for t, o, h, lo, c, v in zip(page["ts"], page["open"], page["high"], page["low"],
                                                             page["close"], page["volume"])]
        pages[int(page["ts"][0])] = json.dumps(rows).encode()
    return pages


class Replay(ThreadingHTTPServer):
    """Serves the pre-rendered pages, so the server costs next to nothing in the measurement."""

    daemon_threads = True

    def __init__(self, pages: dict[int, bytes]):
        self.pages = pages
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                start = int(parse_qs(urlparse(self.path).query)["startTime"][0])
                body = outer.pages.get(start, b"[]")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


async def _measure(url: str, pages: dict[int, bytes], bars: np.ndarray, repeats: int) -> dict[str, list[float]]:
    client = aioredis.from_url(url)
    store = PriceStore(client)
    server = Replay(pages)
    provider = BinanceProvider(f"http://127.0.0.1:{server.server_address[1]}")
    start, end = int(bars["ts"][0]), int(bars["ts"][-1]) + STEP
    bodies = list(pages.values())
    span = STEP * CHUNK_BARS
    chunks = np.split(bars, np.flatnonzero(np.diff(bars["ts"] // span)) + 1)
    payload = [{c: np.ascontiguousarray(p[c]).tobytes() for c in COLUMNS} for p in chunks]
    samples: dict[str, list[float]] = {"end_to_end": [], "parse_normalize": [], "store": [], "raw": []}
    now = int(time.time() * 1000)
    for i in range(repeats):
        await client.flushdb()
        t = time.perf_counter()
        fetched = await provider.fetch_bars("BTC-USD", "1m", start, end)
        clean = normalize_bars(fetched, STEP, now).bars
        await store.write("BTC-USD", "1m", clean, "binance")
        samples["end_to_end"].append((time.perf_counter() - t) * 1000)
        assert len(clean) == len(bars)

        t = time.perf_counter()
        parsed = np.concatenate([parse_klines(json.loads(body), now) for body in bodies])
        normalize_bars(parsed, STEP, now)
        samples["parse_normalize"].append((time.perf_counter() - t) * 1000)

        t = time.perf_counter()
        await store.write(f"S{i}-USD", "1m", clean, "binance")
        samples["store"].append((time.perf_counter() - t) * 1000)

        t = time.perf_counter()
        async with client.pipeline(transaction=False) as pipe:
            for j, fields in enumerate(payload):
                pipe.hset(f"raw:{i}:{j}", mapping=fields)
            await pipe.execute()
        samples["raw"].append((time.perf_counter() - t) * 1000)
    await provider.close()
    server.shutdown()
    await client.aclose()
    return samples


def run(quick: bool = False) -> dict:
    bars = year_of_minutes()
    bars["close"] = np.round(bars["close"], 2)  # what the JSON carries
    for c in ("open", "high", "low"):
        bars[c] = np.round(bars[c], 2)
    pages = kline_pages(bars)
    repeats = 2 if quick else 5
    with redis_server() as url:
        samples = asyncio.run(_measure(url, pages, bars, repeats))
    n = len(bars)
    e2e, parse, store, raw = (median(samples[k]) for k in ("end_to_end", "parse_normalize", "store", "raw"))
    rows = [
        {"name": "end to end: 526 HTTP pages → parse → normalise → store", "median_ms": e2e, "ratio": None,
         "note": f"{n / e2e * 1000:,.0f} bars/s; target ≥ 200,000"},
        {"name": "parse JSON + klines + normalise, no I/O", "median_ms": parse, "ratio": None,
         "note": f"{n / parse * 1000:,.0f} bars/s"},
        {"name": "raw pipelined HSET of the same bytes (baseline)", "median_ms": raw, "ratio": 1.0,
         "note": f"{n / raw * 1000 / 1e6:.1f} M bars/s"},
        {"name": "PriceStore.write", "median_ms": store, "ratio": store / raw,
         "note": f"{n / store * 1000 / 1e6:.1f} M bars/s; target within 3x of raw"},
    ]
    return {"title": "Fetch ingest: one year of 1-minute bars (525,600) from a replayed Binance",
            "rows": rows, "notes": f"Median of {repeats} rounds; a local HTTP server replays pre-rendered "
                                   "klines pages (1,000 rows each); redis-server on loopback."}


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1))
