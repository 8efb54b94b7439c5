"""Windows mean what they say (issue 8, defect 3, Core side).

A lookback reaching before the first stored bar makes Core ask Fetch for the window's start; an
answer that cannot cover its window says how much it covers; a Fetch that was down once does not
make a series short for ever; every answer carries the newest bar's age and whether it is stale.
Real Redis, real Core and Fetch (simulated provider) processes.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import core_pb2, core_pb2_grpc, fetch_pb2, fetch_pb2_grpc
from services.common.bars import make_bars
from services.common.convert import now_ms
from services.common.store import PriceStore
from tests.conftest import RedisServer
from tests.integration.services import Stack

DAY = 86_400_000


def ts(ms: int) -> Timestamp:
    out = Timestamp()
    out.FromMilliseconds(ms)
    return out


def write_days(url: str, symbol: str, first_ms: int, days: int) -> None:
    times = first_ms + np.arange(days, dtype=np.int64) * DAY
    close = 100 + np.arange(days, dtype=float)

    async def go():
        client = aioredis.from_url(url)
        await PriceStore(client).write(symbol, "1d", make_bars(times, close, close, close, close, np.ones(days)),
                                       "test")
        await client.aclose()
    asyncio.run(go())


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    redis = RedisServer(tmp_path_factory.mktemp("windows-redis"))
    redis.start()
    stack = Stack(redis.url, tmp_path_factory.mktemp("windows"), {"CRYPTOLENS_FETCH_TIMEOUT_S": "20"})
    stack.add("core")  # Fetch comes later: the first test needs it down
    try:
        stack["core"].wait_serving()
        yield stack
    finally:
        stack.stop()
        redis.stop()


def start_fetch(stack) -> None:
    if "fetch" not in stack.services:
        stack.add("fetch", "--provider", "simulated", "--refresh-s", "3600", "--lease-s", "7200", "--history-days", "2")
    stack["fetch"].wait_serving()


@pytest.fixture(scope="module")
def core(stack):
    with grpc.insecure_channel(stack["core"].addr) as channel:
        yield core_pb2_grpc.CoreServiceStub(channel)


def test_a_fetch_that_was_down_once_does_not_make_the_series_short_for_ever(stack, core):
    today = now_ms() // DAY * DAY
    write_days(stack.redis_url, "ADA-USD", today - 90 * DAY, 91)
    request = core_pb2.GetStatsRequest(symbol="ADA-USD", interval="1d", lookback="365d")
    short = core.GetStats(request, timeout=30)  # Fetch is down: answer what is there, and say so
    assert short.count == 91 and short.coverage.bars == 91 and short.coverage.expected_bars == 365
    assert short.coverage.fraction == pytest.approx(91 / 365)
    assert short.coverage.first_bar.ToMilliseconds() == today - 90 * DAY
    start_fetch(stack)
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        reply = core.GetStats(request, timeout=30)
        if reply.count == 365:
            break
        time.sleep(0.5)
    assert reply.count == 365 and reply.coverage.fraction == 1.0


def test_lookback_beyond_the_stored_history_loads_the_missing_range(stack, core):
    start_fetch(stack)
    today = now_ms() // DAY * DAY
    with grpc.insecure_channel(stack["fetch"].addr) as channel:
        fetch_pb2_grpc.FetchServiceStub(channel).Backfill(fetch_pb2.BackfillRequest(
            symbol="SOL-USD", interval="1d", start=ts(today - 90 * DAY), end=ts(today + DAY)), timeout=30)
    stats = core.GetStats(core_pb2.GetStatsRequest(symbol="SOL-USD", interval="1d", lookback="1y"), timeout=60)
    assert stats.count == 365 and stats.coverage.expected_bars == 365 and stats.coverage.fraction == 1.0
    assert stats.coverage.requested_end.ToMilliseconds() == stats.end.ToMilliseconds() + 1  # anchored at the newest
    chart = core.GetTimeseries(core_pb2.GetTimeseriesRequest(symbol="SOL-USD", interval="1d", lookback="2y"),
                               timeout=60)
    assert chart.total_points == 730 and chart.coverage.fraction == 1.0


def test_every_answer_says_how_fresh_it_is(stack, core):
    start_fetch(stack)
    write_days(stack.redis_url, "DOT-USD", 1_735_689_600_000, 60)  # 2025-01-01 .. 2025-03-01: long stale
    old = core.GetStats(core_pb2.GetStatsRequest(symbol="DOT-USD", interval="1d", lookback="30d"), timeout=30)
    assert old.freshness.stale and old.freshness.stale_after_bars == 3
    assert old.freshness.newest_bar.ToMilliseconds() == 1_735_689_600_000 + 59 * DAY
    assert old.freshness.age_seconds > 200 * 86_400
    live = core.GetStats(core_pb2.GetStatsRequest(symbol="XRP-USD", interval="1h", lookback="1d"), timeout=60)
    assert not live.freshness.stale and live.freshness.age_seconds < 3 * 3600
    time.sleep(0.3)
    cached = core.GetStats(core_pb2.GetStatsRequest(symbol="DOT-USD", interval="1d", lookback="30d"), timeout=30)
    assert cached.cached and cached.freshness.age_seconds > old.freshness.age_seconds + 0.2  # age is current
    pair = core.GetCorrelation(core_pb2.GetCorrelationRequest(symbols=["DOT-USD", "ADA-USD"], interval="1d",
                                                              lookback="60d", end=ts(1_735_689_600_000 + 60 * DAY)),
                               timeout=30)
    assert pair.freshness["DOT-USD"].stale and not pair.freshness["ADA-USD"].stale
    assert pair.coverage["DOT-USD"].bars == 60 and pair.coverage["ADA-USD"].bars == 60 and pair.count == 59


def test_a_cached_answer_is_the_computed_one_and_a_window_past_now_expects_no_bars_after_now(stack, core):
    """GetStats goes out as the stored answer's bytes followed by its coverage and freshness: a hit
    parses to the same message as the miss, and the coverage of a window reaching hours past now
    counts the bars expected up to now (the clock moves it; it is never kept past that)."""
    today = now_ms() // DAY * DAY
    end = now_ms() + 12 * 3_600_000
    write_days(stack.redis_url, "LTC-USD", today - 10 * DAY, 10)  # up to yesterday
    request = core_pb2.GetStatsRequest(symbol="LTC-USD", interval="1d", start=ts(today - 10 * DAY),
                                       end=ts(end), benchmark="LTC-USD")
    first = core.GetStats(request, timeout=30)
    second = core.GetStats(request, timeout=30)
    assert not first.cached and second.cached and second.freshness.age_seconds >= first.freshness.age_seconds
    if now_ms() // DAY * DAY == today:  # not across midnight UTC
        assert first.coverage.bars == 10 and first.coverage.expected_bars == 11  # 10 days and today so far
        assert first.coverage.requested_end.ToMilliseconds() == end
    for answer in (first, second):
        answer.ClearField("cached")
        answer.ClearField("freshness")
    assert second == first and first.count == 10 and first.HasField("volatility")
