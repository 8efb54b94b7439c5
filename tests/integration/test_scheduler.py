"""The Fetch scheduler against a replayed exchange and a real Redis: backfill on first sight,
incremental refresh of only the new bars, repair of a gap once the provider can fill it."""

from __future__ import annotations

import time

import numpy as np

from services.common.bars import find_gaps
from services.common.store import PriceStore
from services.fetch.ingest import Ingestor
from services.fetch.lease import Leases
from services.fetch.providers.binance import BinanceProvider
from services.fetch.scheduler import Scheduler
from tests.replay_server import ReplayServer, SyntheticMarket

HOUR = 3_600_000


def start_times(requests) -> list[int]:
    return sorted(int(r.query["startTime"]) for r in requests if r.path == "/api/v3/klines")


async def test_backfill_then_incremental_refresh_then_gap_repair(redis_client):
    now = int(time.time() * 1000)
    last_open = now // HOUR * HOUR
    gap = (last_open - 10 * HOUR, last_open - 9 * HOUR)
    market = SyntheticMarket(now_ms=now, missing=frozenset(gap))  # the exchange's clock: fixed for the test
    with ReplayServer() as server:
        server.serve_market(market)
        provider = BinanceProvider(server.url)
        store = PriceStore(redis_client)
        scheduler = Scheduler(Ingestor(store, [provider]), Leases(redis_client, 10_000), ["BTC-USD"], "1h",
                              history_days=3, refresh_s=60)

        await scheduler.tick()  # first sight: the whole history window
        bars = await store.read_bars("BTC-USD", "1h")
        assert find_gaps(bars["ts"], HOUR) == [gap]
        assert bars["ts"][-1] == last_open and bars["ts"][0] <= last_open - 3 * 24 * HOUR + HOUR
        first_tick = len(server.requests)

        market.missing = frozenset()  # the provider has the two bars now
        await scheduler.tick()
        second = start_times(server.requests[first_tick:])
        # Only the newest stored bar onwards, then the gap itself: no re-download of history.
        assert second[-1] == last_open and gap[0] in second and min(second) >= gap[0]
        bars = await store.read_bars("BTC-USD", "1h")
        assert find_gaps(bars["ts"], HOUR) == [] and np.all(np.diff(bars["ts"]) == HOUR)
        await provider.close()


async def test_a_used_series_at_another_interval_is_kept_fresh(redis_client):
    """Defect 3: only the watched interval was refreshed; a series someone asked for at 4h froze."""
    step = 4 * HOUR
    now = int(time.time() * 1000)
    market = SyntheticMarket(now_ms=now - 3 * step)  # the exchange is three 4h bars behind, then catches up
    with ReplayServer() as server:
        server.serve_market(market)
        provider = BinanceProvider(server.url)
        store = PriceStore(redis_client)
        scheduler = Scheduler(Ingestor(store, [provider]), Leases(redis_client, 10_000), ["BTC-USD"], "1h",
                              history_days=3, refresh_s=60)
        await store.mark_used("ETH-USD", "4h")  # what GetBars does for every series it serves
        await scheduler.tick()
        before = (await store.info("ETH-USD", "4h")).last_ms
        market.now_ms = now
        await scheduler.tick()
        after = (await store.info("ETH-USD", "4h")).last_ms
        await provider.close()
    assert before == (now - 3 * step) // step * step
    assert after == now // step * step  # refreshed although the watched interval is 1h
