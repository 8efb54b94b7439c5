"""SeriesSource deltas against a real redis-server: after many appends (enough to fold the tail
into the shared buffer more than once), open-bar rewrites and rewrites behind the fold, every
version equals a full read, and versions handed out earlier keep exactly their bars."""

from __future__ import annotations

import numpy as np
import redis.asyncio as aioredis

from services.common.bars import make_bars
from services.common.series import FOLD_BARS, SERIES_READS, SeriesSource
from services.common.store import PriceStore
from tests.conftest import free_port

MINUTE = 60_000
START = 1_767_225_600_000


def _bars(ts, close):
    ts = np.asarray(ts, np.int64)
    close = np.asarray(close, float)
    return make_bars(ts, close, close, close, close, np.ones(len(ts)))


def _reads(kind: str) -> float:
    return SERIES_READS.labels(kind)._value.get()


async def test_deltas_fold_and_never_change_what_was_handed_out(redis):
    rng = np.random.default_rng(3)
    client = aioredis.from_url(redis.url, socket_timeout=10)
    store = PriceStore(client)
    source = SeriesSource(store, f"127.0.0.1:{free_port()}", 1.0, 64 * 1024 * 1024)
    try:
        n = 5000
        last_ts = START + (n - 1) * MINUTE
        await store.write("BTC-USD", "1m", _bars(START + np.arange(n) * MINUTE, 100 + rng.random(n)), "test")
        series = await source.get("BTC-USD", "1m")
        handed = [(series, series.ts.copy(), series.close.copy())]
        full_before, delta_before = _reads("full"), _reads("delta")
        buffers = set()
        for step in range(400):
            op = rng.random()
            if op < 0.6:  # a page of new bars
                k = int(rng.integers(1, 40))
                ts = last_ts + MINUTE * np.arange(1, k + 1)
                last_ts = int(ts[-1])
                await store.write("BTC-USD", "1m", _bars(ts, 100 + rng.random(k)), "test")
            elif op < 0.95:  # the open bar rewritten
                await store.write("BTC-USD", "1m", _bars([last_ts], [100 + rng.random()]), "test")
            else:  # a bar behind the tail (already folded into the head) corrected
                back = last_ts - int(rng.integers(100, 3000)) * MINUTE
                await store.write("BTC-USD", "1m", _bars([back], [100 + rng.random()]), "test")
            series = await source.get("BTC-USD", "1m")
            want = await store.read("BTC-USD", "1m")
            assert np.array_equal(series.ts, want.columns["ts"]) and np.array_equal(series.close, want.columns["close"])
            assert len(series.tail_ts) <= FOLD_BARS
            buffers.add(id(series.buffer))
            if step % 25 == 0:
                handed.append((series, series.ts.copy(), series.close.copy()))
        assert _reads("full") == full_before  # every version came as a delta
        assert _reads("delta") - delta_before == 400
        assert len(buffers - {id(None)}) >= 2  # folded, and a correction behind the fold made a new buffer
        for old, ts, close in handed:  # older versions are intact whatever came after
            assert np.array_equal(old.ts, ts) and np.array_equal(old.close, close)
    finally:
        await source.close()
        await client.aclose()
