"""The Redis price store against a real redis-server."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from services.common.bars import BAR_DTYPE, FLAG_PARTIAL, make_bars
from services.common.intervals import INTERVAL_MS
from services.common.store import CHUNK_BARS, UPDATES_CHANNEL, PriceStore

MIN = INTERVAL_MS["1m"]


def minute_bars(start_ms: int, n: int, price0: float = 100.0) -> np.ndarray:
    ts = start_ms + np.arange(n, dtype=np.int64) * MIN
    close = price0 + np.arange(n) * 0.01
    return make_bars(ts, close, close + 1, close - 1, close, np.ones(n))


async def test_write_read_roundtrip_spans_chunks(redis_client):
    store = PriceStore(redis_client)
    bars = minute_bars(0, CHUNK_BARS * 3 + 17)
    result = await store.write("BTC-USD", "1m", bars, "test")
    assert result.written == len(bars) and result.version == 1
    assert await redis_client.zcard("cl:v1:s:{BTC-USD:1m}:idx") == 4  # compact chunks, not one member per bar
    full = await store.read_bars("BTC-USD", "1m")
    assert full.dtype == BAR_DTYPE
    np.testing.assert_array_equal(full, bars)
    window = await store.read("BTC-USD", "1m", bars["ts"][100], bars["ts"][CHUNK_BARS + 50])
    assert list(window.columns) == ["ts", "close"]
    np.testing.assert_array_equal(window.columns["ts"], bars["ts"][100:CHUNK_BARS + 50])
    np.testing.assert_array_equal(window.columns["close"], bars["close"][100:CHUNK_BARS + 50])
    info = await store.info("BTC-USD", "1m")
    assert (info.count, info.first_ms, info.last_ms, info.source) == (len(bars), 0, int(bars["ts"][-1]), "test")


async def test_version_changes_on_every_write_and_merge_overwrites(redis_client):
    store = PriceStore(redis_client)
    await store.write("ETH-USD", "1m", minute_bars(0, 100), "a")
    update = minute_bars(50 * MIN, 100, price0=500.0)  # overlaps 50, adds 50
    result = await store.write("ETH-USD", "1m", update, "b")
    assert result.version == 2
    bars = await store.read_bars("ETH-USD", "1m")
    assert len(bars) == 150 and np.all(np.diff(bars["ts"]) == MIN)
    assert bars["close"][49] == pytest.approx(100.49) and bars["close"][50] == 500.0
    assert (await store.info("ETH-USD", "1m")).count == 150


async def test_partial_bar_never_replaces_complete_one(redis_client):
    store = PriceStore(redis_client)
    complete = minute_bars(0, 3)
    await store.write("SOL-USD", "1m", complete, "a")
    partial = minute_bars(2 * MIN, 2, price0=1.0)
    partial["flags"] = FLAG_PARTIAL
    await store.write("SOL-USD", "1m", partial, "a")
    bars = await store.read_bars("SOL-USD", "1m")
    assert bars["close"][2] == complete["close"][2] and bars["flags"][2] == 0
    assert bars["flags"][3] == FLAG_PARTIAL


async def test_concurrent_writers_lose_nothing(redis_client, scratch_redis_url):
    import redis.asyncio as aioredis

    clients = [aioredis.from_url(scratch_redis_url) for _ in range(4)]
    stores = [PriceStore(c) for c in clients]
    pages = [minute_bars(i * 1000 * MIN, 1000) for i in range(8)]
    results = await asyncio.gather(*(stores[i % 4].write("BTC-USD", "1m", p, "x") for i, p in enumerate(pages)))
    assert sorted(r.version for r in results) == list(range(1, 9))
    bars = await stores[0].read_bars("BTC-USD", "1m")
    assert len(bars) == 8000 and np.all(np.diff(bars["ts"]) == MIN)
    for c in clients:
        await c.aclose()


async def test_write_publishes_update(redis_client):
    store = PriceStore(redis_client)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(UPDATES_CHANNEL)
    await pubsub.get_message(timeout=1)  # subscribe confirmation
    await store.write("BTC-USD", "1h", minute_bars(0, 5)[:0], "x")  # empty page: no event
    bars = make_bars([0, 3_600_000], [1, 2], [1, 2], [1, 2], [1, 2])
    await store.write("BTC-USD", "1h", bars, "x")
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    event = json.loads(message["data"])
    assert event == {"symbol": "BTC-USD", "interval": "1h", "version": 1, "source": "x", "first": 0,
                     "last": 3_600_000, "bars": 2, "origin": "x", "replaced": False}
    await pubsub.aclose()


async def test_unknown_series_and_listing(redis_client):
    store = PriceStore(redis_client)
    assert await store.read("NOPE-USD", "1h") is None
    assert await store.info("NOPE-USD", "1h") is None
    await store.write("BTC-USD", "1d", make_bars([0], [1], [1], [1], [1]), "csv")
    await store.write("ADA-USD", "1h", make_bars([0], [1], [1], [1], [1]), "csv")
    listed = [(s.symbol, s.interval) for s in await store.list_series()]
    assert listed == [("ADA-USD", "1h"), ("BTC-USD", "1d")]


async def test_a_write_of_another_origin_replaces_the_series_atomically(redis_client):
    store = PriceStore(redis_client)
    await store.write("BTC-USD", "1m", minute_bars(0, CHUNK_BARS * 2, price0=68_000.0), "simulated", "simulated")
    live = minute_bars(CHUNK_BARS * MIN, 10, price0=50_000.0)  # overlaps the simulated chunks partly
    result = await store.write("BTC-USD", "1m", live, "binance", "live")
    assert result.replaced
    bars = await store.read_bars("BTC-USD", "1m")
    np.testing.assert_array_equal(bars, live)  # nothing simulated is left, not even outside the new range
    assert await redis_client.zcard("cl:v1:s:{BTC-USD:1m}:idx") == 1
    info = await store.info("BTC-USD", "1m")
    assert (info.origin, info.count, info.first_ms, info.last_ms) == ("live", 10, live["ts"][0], live["ts"][-1])
    again = await store.write("BTC-USD", "1m", minute_bars(CHUNK_BARS * MIN + 10 * MIN, 5, 50_010.0), "kraken", "live")
    assert not again.replaced and (await store.info("BTC-USD", "1m")).count == 15  # same origin: merged


async def test_provenance_records_which_exchange_served_which_range(redis_client):
    store = PriceStore(redis_client)
    await store.write("ETH-USD", "1m", minute_bars(0, 100), "binance", "live")
    await store.write("ETH-USD", "1m", minute_bars(100 * MIN, 50), "kraken", "live")
    await store.write("ETH-USD", "1m", minute_bars(120 * MIN, 60), "binance", "live")  # overwrites kraken's tail
    info = await store.info("ETH-USD", "1m")
    assert info.provenance == [(0, 99 * MIN, "binance"), (100 * MIN, 119 * MIN, "kraken"),
                               (120 * MIN, 179 * MIN, "binance")]


async def test_read_page_reads_only_what_a_page_needs(redis_client):
    store = PriceStore(redis_client)
    bars = minute_bars(0, CHUNK_BARS * 5 + 3)
    await store.write("SOL-USD", "1m", bars, "x", "live")
    page, more = await store.read_page("SOL-USD", "1m", 10 * MIN, None, 100)
    assert more and page["ts"].tolist() == bars["ts"][10:110].tolist()
    tail, more = await store.read_page("SOL-USD", "1m", None, bars["ts"][-1], 7, newest=True, columns=("ts",))
    assert more and tail["ts"].tolist() == bars["ts"][-8:-1].tolist() and tail.dtype.names == ("ts",)
    whole, more = await store.read_page("SOL-USD", "1m", None, None, len(bars))
    assert not more and len(whole) == len(bars)
    empty, more = await store.read_page("NOPE-USD", "1m", None, None, 10)
    assert len(empty) == 0 and not more


async def test_every_write_is_logged_in_a_resumable_stream(redis_client):
    from services.common.events import read_stream
    from services.common.store import UPDATES_LOG

    store = PriceStore(redis_client)
    for i in range(3):
        await store.write("BTC-USD", "1h", make_bars([i * 3_600_000], [1], [1], [1], [1]), "x", "live")
    seen = []
    async for entry_id, fields in read_stream(redis_client, UPDATES_LOG, "0-0"):
        seen.append((entry_id, json.loads(fields["event"])["version"]))
        if len(seen) == 3:
            break
    assert [v for _, v in seen] == [1, 2, 3]
    async for _, fields in read_stream(redis_client, UPDATES_LOG, seen[0][0]):  # resume after the first
        assert json.loads(fields["event"])["version"] == 2
        break
