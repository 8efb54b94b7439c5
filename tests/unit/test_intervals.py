"""Symbols, intervals and windows."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.intervals import (DAY_MS, HOUR_MS, check_interval, check_symbol, parse_lookback,
                                       periods_per_year, resolve_window)


def test_periods_per_year_on_365_days():
    assert periods_per_year("1d") == 365
    assert periods_per_year("1h") == 8760
    assert periods_per_year("1m") == 525_600
    assert periods_per_year("4h") == 2190


@pytest.mark.parametrize("text, ms", [("24h", 24 * HOUR_MS), ("30d", 30 * DAY_MS), ("1y", 365 * DAY_MS),
                                      ("2w", 14 * DAY_MS), ("90m", 90 * 60_000)])
def test_lookbacks(text, ms):
    assert parse_lookback(text) == ms


@pytest.mark.parametrize("bad", ["", "0d", "-1d", "30", "d30", "1.5d", "30days", "101y", "99999999999999999999d"])
def test_bad_lookbacks_name_the_field(bad):
    with pytest.raises(InvalidArgument) as exc:
        parse_lookback(bad)
    assert exc.value.field == "lookback"


def test_symbols_are_canonicalised_and_checked():
    assert check_symbol(" btc-usd ") == "BTC-USD"
    for bad in ("BTCUSD", "BTC/USD", "", "B-USD", "BTC-USD-X"):
        with pytest.raises(InvalidArgument, match="symbol"):
            check_symbol(bad)
    with pytest.raises(InvalidArgument, match="interval"):
        check_interval("2h")


def test_windows():
    assert resolve_window("", None, None, now_ms=10 * DAY_MS).start_ms is None
    w = resolve_window("1d", None, None, now_ms=10 * DAY_MS, latest_ms=5 * DAY_MS)
    assert (w.start_ms, w.end_ms) == (4 * DAY_MS + 1, 5 * DAY_MS + 1)  # anchored on the newest bar, inclusive
    with pytest.raises(InvalidArgument, match="end must be after start"):
        resolve_window("", 5, 5, now_ms=10)
    with pytest.raises(InvalidArgument, match="either lookback or start"):
        resolve_window("1d", 5, None, now_ms=10)


def test_a_huge_bad_value_is_quoted_as_a_short_prefix():
    for check, field in ((check_symbol, "symbol"), (check_interval, "interval"), (parse_lookback, "lookback")):
        with pytest.raises(InvalidArgument) as exc:
            check("Z" * 1_000_000)
        assert exc.value.field == field and "1,000,000 chars" in exc.value.message
        assert len(exc.value.message) < 200


def test_request_timestamps_are_checked():
    from google.protobuf.timestamp_pb2 import Timestamp

    from cryptolens.v1 import core_pb2
    from services.common.convert import from_timestamp, now_ms

    request = core_pb2.GetStatsRequest(start=Timestamp(seconds=1_700_000_000, nanos=5_000_000))
    assert from_timestamp(request, "start") == 1_700_000_000_005 and from_timestamp(request, "end") is None
    for bad in (Timestamp(seconds=10**15), Timestamp(seconds=-10**15), Timestamp(seconds=0, nanos=-1),
                Timestamp(seconds=now_ms() // 1000 + 2 * 86_400), Timestamp(seconds=7_258_118_400)):  # 2200-01-01
        with pytest.raises(InvalidArgument) as exc:
            from_timestamp(core_pb2.GetStatsRequest(end=bad), "end")
        assert exc.value.field == "end"
