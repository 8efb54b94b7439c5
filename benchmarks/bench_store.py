"""Store write of one year of 1-minute bars, beside a raw pipelined Redis write of the same bytes."""

from __future__ import annotations

import asyncio

import numpy as np
import redis.asyncio as aioredis

from benchmarks.support import median, redis_server, year_of_minutes
from services.common.bars import COLUMNS
from services.common.intervals import INTERVAL_MS
from services.common.store import CHUNK_BARS, PriceStore


async def _measure(url: str, repeats: int) -> dict[str, list[float]]:
    import time

    bars = year_of_minutes()
    client = aioredis.from_url(url)
    store = PriceStore(client)
    span = INTERVAL_MS["1m"] * CHUNK_BARS
    ids = bars["ts"] // span
    cuts = np.flatnonzero(np.diff(ids)) + 1
    pages = np.split(bars, cuts)
    payload = [{c: np.ascontiguousarray(p[c]).tobytes() for c in COLUMNS} for p in pages]

    async def raw(i: int) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for j, fields in enumerate(payload):
                pipe.hset(f"raw:{i}:{j}", mapping=fields)
            await pipe.execute()

    samples = {"raw": [], "store": [], "store_merge": []}
    for i in range(repeats):
        await client.flushdb()
        t = time.perf_counter()
        await raw(i)
        samples["raw"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        await store.write("BTC-USD", "1m", bars, "bench")
        samples["store"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        await store.write("BTC-USD", "1m", bars, "bench")  # every chunk exists: read + merge + write
        samples["store_merge"].append((time.perf_counter() - t) * 1000)
    await client.aclose()
    return samples


def run(quick: bool = False) -> dict:
    repeats = 3 if quick else 9
    with redis_server() as url:
        samples = asyncio.run(_measure(url, repeats))
    n = 525_600
    raw, store, merge = (median(samples[k]) for k in ("raw", "store", "store_merge"))
    rows = [
        {"name": "raw pipelined HSET of the same chunk bytes (baseline)", "median_ms": raw, "ratio": 1.0,
         "note": f"{n / raw * 1000 / 1e6:.1f} M bars/s"},
        {"name": "PriceStore.write, new series", "median_ms": store, "ratio": store / raw,
         "note": f"{n / store * 1000 / 1e6:.1f} M bars/s; target within 3x of raw"},
        {"name": "PriceStore.write, over an existing year (read + merge + write)", "median_ms": merge,
         "ratio": merge / raw, "note": f"{n / merge * 1000 / 1e6:.1f} M bars/s"},
    ]
    return {"title": "Store write: 525,600 one-minute bars (7 columns, 65 chunks)", "rows": rows,
            "notes": f"Median of {repeats} interleaved rounds against a fresh redis-server on loopback."}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
