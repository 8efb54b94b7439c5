"""Core's request windows and its result cache: pure logic, no I/O."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import core_pb2
from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.intervals import Window
from services.common.limits import MAX_FUTURE_MS, MAX_WINDOW_BARS
from services.common.store import SeriesInfo
from services.core.result_cache import ResultCache
from services.core.windows import WindowSpec

DAY = 86_400_000
NOW = 1_790_000_000_000


def ms(value: int) -> Timestamp:
    out = Timestamp()
    out.FromMilliseconds(value)
    return out


def test_lookback_anchors_at_the_newest_bar_never_in_the_far_future():
    spec = WindowSpec.parse(core_pb2.GetStatsRequest(lookback="30d"), "1d", NOW)
    assert spec.resolve(NOW - 100 * DAY, NOW) == Window(NOW - 130 * DAY + 1, NOW - 100 * DAY + 1)
    assert spec.resolve(None, NOW) == Window(NOW - 30 * DAY, NOW)
    far = NOW + 100 * 365 * DAY  # a bogus bar in 2126
    assert spec.resolve(far, NOW).end_ms == NOW + MAX_FUTURE_MS


def test_window_cap_counts_bars_of_the_interval_and_symbols():
    WindowSpec.parse(core_pb2.GetStatsRequest(lookback="730d"), "1m", NOW)  # exactly the cap
    with pytest.raises(ResourceExhausted, match="MAX_WINDOW_BARS"):
        WindowSpec.parse(core_pb2.GetStatsRequest(lookback="731d"), "1m", NOW)
    with pytest.raises(ResourceExhausted, match="for 3 symbols"):
        WindowSpec.parse(core_pb2.GetCorrelationRequest(lookback="365d"), "1m", NOW, symbols=3)
    # A far end is refused before any I/O: it would anchor windows in the future.
    with pytest.raises(InvalidArgument, match="end"):
        WindowSpec.parse(core_pb2.GetStatsRequest(start=ms(NOW - 365 * DAY), end=ms(NOW + 100 * 365 * DAY)), "1m", NOW)
    with pytest.raises(ResourceExhausted):
        WindowSpec.parse(core_pb2.GetStatsRequest(start=ms(NOW - 800 * DAY)), "1m", NOW)


def test_whole_history_is_capped_by_what_is_stored():
    spec = WindowSpec.parse(core_pb2.GetStatsRequest(), "1m", NOW)
    window = spec.resolve(None, NOW)
    small = SeriesInfo("BTC-USD", "1m", 10, NOW - 10 * 60_000, NOW, 1, "x")
    spec.check_stored(window, [small])
    huge = SeriesInfo("BTC-USD", "1m", 0, NOW - (MAX_WINDOW_BARS + 1) * 60_000, NOW, 1, "x")
    with pytest.raises(ResourceExhausted, match="stored history"):
        spec.check_stored(window, [huge])


def test_bad_values_are_quoted_short():
    with pytest.raises(InvalidArgument, match="lookback") as exc:
        WindowSpec.parse(core_pb2.GetStatsRequest(lookback="9" * 10_000 + "d"), "1h", NOW)
    assert len(exc.value.message) < 200
    with pytest.raises(InvalidArgument, match="start"):
        WindowSpec.parse(core_pb2.GetStatsRequest(start=Timestamp(seconds=10**14)), "1h", NOW)


def test_result_cache_evicts_least_recently_used_within_its_bytes():
    cache = ResultCache(10_000)
    for i in range(20):
        cache.put(("k", i), b"x" * 1000)
        assert cache.bytes <= 10_000
    assert cache.get("m", ("k", 0)) is None and cache.get("m", ("k", 19)) is not None
    cache.put(("big",), b"x" * 20_000)  # larger than the whole budget: not kept, nothing evicted for it
    assert cache.get("m", ("big",)) is None and cache.get("m", ("k", 19)) is not None
