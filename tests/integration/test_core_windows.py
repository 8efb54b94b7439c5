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


def write_days(url: str, symbol: str, first_ms: int, days: int, close: np.ndarray | None = None) -> None:
    times = first_ms + np.arange(days, dtype=np.int64) * DAY
    close = 100 + np.arange(days, dtype=float) if close is None else close

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


def _answer(response: core_pb2.GetStatsResponse) -> core_pb2.GetStatsResponse:
    """The answer without what every call sets anew."""
    out = core_pb2.GetStatsResponse()
    out.CopyFrom(response)
    out.ClearField("cached")
    out.ClearField("freshness")
    return out


def _computed(response: core_pb2.GetStatsResponse) -> core_pb2.GetStatsResponse:
    """What two computations of one answer share: all but the time each was made."""
    out = _answer(response)
    out.ClearField("as_of")
    return out


def test_a_repeated_request_is_answered_anew_once_either_series_changes(stack, core):
    """A repeat of the same request bytes is answered from its last answer while the series and
    the benchmark are unchanged; a write to either (the benchmark alone too) makes a new answer,
    the one a request never seen before gets."""
    today = now_ms() // DAY * DAY
    rng = np.random.default_rng(7)
    write_days(stack.redis_url, "XRP-USD", today - 40 * DAY, 40, 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 40))))
    bench_close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 40)))
    write_days(stack.redis_url, "LINK-USD", today - 40 * DAY, 40, bench_close)
    request = core_pb2.GetStatsRequest(symbol="XRP-USD", interval="1d", lookback="20d", benchmark="LINK-USD")
    same = core_pb2.GetStatsRequest(symbol="XRP-USD", interval="1d", lookback="480h", benchmark="LINK-USD")

    first, second, third = (core.GetStats(request, timeout=30) for _ in range(3))
    assert not first.cached and second.cached and third.cached
    assert _answer(first) == _answer(second) == _answer(third) and first.HasField("beta")

    bench_close[-3] *= 1.2  # a correction of one benchmark bar inside the window
    write_days(stack.redis_url, "LINK-USD", today - 40 * DAY, 40, bench_close)
    after_bench = core.GetStats(request, timeout=30)
    assert not after_bench.cached and after_bench.beta != first.beta
    assert _computed(after_bench) == _computed(core.GetStats(same, timeout=30))

    write_days(stack.redis_url, "XRP-USD", today, 1, np.array([250.0]))  # today's bar: the window moves
    after_symbol = core.GetStats(request, timeout=30)
    assert not after_symbol.cached and after_symbol.end.ToMilliseconds() == today
    assert _computed(after_symbol) == _computed(core.GetStats(same, timeout=30))
    assert core.GetStats(request, timeout=30).cached


def test_a_repeated_request_whose_coverage_the_clock_moves_is_never_answered_from_the_last(stack, monkeypatch):
    """A window ending after now expects bars up to now: a repeat once now is past its end expects
    them all, however unchanged the series (the clock is the service's own, moved here)."""
    from services.core import server

    today = now_ms() // DAY * DAY
    write_days(stack.redis_url, "AVAX-USD", today - 30 * DAY, 30)  # the windows need nothing earlier
    clock = {"now": today + 3_600_000}
    monkeypatch.setattr(server, "now_ms", lambda: clock["now"])

    class Context:
        def set_code(self, code): raise AssertionError(code)
        def set_details(self, details): raise AssertionError(details)

    async def go():
        client = aioredis.from_url(stack.redis_url)
        service = server.CoreService(server.CoreSettings(), client)
        ends_later = core_pb2.GetStatsRequest(symbol="AVAX-USD", interval="1d", lookback="492h",
                                              end=ts(today + 23 * 3_600_000), benchmark="AVAX-USD").SerializeToString()
        ends_at_data = core_pb2.GetStatsRequest(symbol="AVAX-USD", interval="1d", lookback="492h",
                                                benchmark="AVAX-USD").SerializeToString()
        answers = []
        for moved in (0, DAY, DAY):
            clock["now"] += moved
            answers.append([core_pb2.GetStatsResponse.FromString(await service.GetStats(raw, Context()))
                            for raw in (ends_later, ends_at_data)])
        await service.stop()
        await client.aclose()
        return answers

    answers = asyncio.run(go())
    # 20.5 days: up to 01:00 today the first expects 20 bars, once past 23:00 today all 21
    assert [later.coverage.expected_bars for later, _ in answers] == [20, 21, 21]
    assert [at.coverage.expected_bars for _, at in answers] == [21, 21, 21]
    assert [later.cached for later, _ in answers] == [False, True, True]
    assert [at.cached for _, at in answers] == [False, True, True]
    assert answers[2][1].freshness.age_seconds - answers[0][1].freshness.age_seconds == 2 * 86_400
