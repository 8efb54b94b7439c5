"""Normalisation rules, and every real CSV in ../shared/data/prices through the csv provider."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest

from services.common.bars import FLAG_PARTIAL, FLAG_SUSPECT, make_bars
from services.common.normalize import normalize_bars, to_epoch_ms
from services.common.csv_bars import CsvError, content_hash, load_csv, parse_spec
from services.fetch.providers.csv_file import CsvProvider

HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01: synthetic series start here (times before 1990 are invalid)
INTERVALS = {60: "1m", 900: "15m", 3600: "1h", 86400: "1d"}


def ms(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value // 1_000_000)


@pytest.mark.parametrize("value, expected", [
    (1513555200, 1513555200000), (1513555200.0, 1513555200000), ("1513555200.0", 1513555200000),
    (1513555200000, 1513555200000), ("1513555200000", 1513555200000), (1513555200000000, 1513555200000),
    (1513555200000000000, 1513555200000), ("2017-12-18 00:00:00+00:00", 1513555200000),
    ("2017-12-18T00:00:00Z", 1513555200000), ("2017-12-18T01:00:00+01:00", 1513555200000),
    ("2017-12-18", 1513555200000), (1503014400.5, 1503014400500),
])
def test_timestamp_units_are_decided_per_value(value, expected):
    assert to_epoch_ms(np.array([value], dtype=object if isinstance(value, str) else None))[0] == expected


def test_mixed_units_in_one_column_and_invalid_values():
    out = to_epoch_ms(np.array(["1513555200000", "1513555200.0", "2023-03-01 00:00:00+00:00", "garbage", "",
                                "99", "1e30"], dtype=object))
    assert out.tolist() == [1513555200000, 1513555200000, 1677628800000, -1, -1, -1, -1]


def test_invalid_rows_are_dropped_and_the_rest_sorted_and_aligned():
    raw = make_bars(T0 + np.array([3 * HOUR + 17, HOUR, 2 * HOUR, 4 * HOUR, 5 * HOUR, 6 * HOUR]),
                    [10, 10, np.nan, 10, 10, -1], [11, 11, 11, 9, 11, 11], [9, 9, 9, 11, 9, 9], [10, 10, 10, 10, 10, 10],
                    [1, 1, 1, 1, -5, 1])
    result = normalize_bars(raw, HOUR)
    assert (result.bars["ts"] - T0).tolist() == [HOUR, 3 * HOUR]  # NaN, high<low, volume<0, price<=0 dropped
    assert result.dropped_invalid == 4
    assert result.gaps == [(T0 + 2 * HOUR, T0 + 2 * HOUR)]


def test_duplicates_complete_beats_partial_then_more_volume():
    raw = make_bars(T0 + np.array([HOUR, HOUR, 2 * HOUR, 2 * HOUR]), [1, 1, 1, 1], [3, 3, 3, 3], [1, 1, 1, 1], [2.0, 2.5, 2.0, 2.5],
                    [10, 5, 10, 20], [0, 0, FLAG_PARTIAL, 0])
    result = normalize_bars(raw, HOUR)
    assert result.bars["close"].tolist() == [2.0, 2.5]  # more volume wins; then complete beats partial
    assert result.duplicates == 2 and result.conflicts == 2


def test_open_bar_is_partial_and_open_high_low_are_made_consistent():
    raw = make_bars(T0 + np.array([0, HOUR]), [10, 10], [10.5, 10.5], [9.5, 9.5], [11, 10])  # close above high
    result = normalize_bars(raw, HOUR, now_ms=T0 + HOUR + 10)
    assert result.bars["high"][0] == 11 and result.partial and not result.bars["flags"][0] & FLAG_PARTIAL


def test_bad_tick_is_flagged_but_a_real_crash_is_not():
    close = np.full(60, 100.0)
    close[40:] = 55.0  # a real 45 % crash that holds
    low = close * 0.98
    low[20] = 0.06  # a bad tick
    raw = make_bars(T0 + np.arange(60) * DAY, close, close * 1.02, low, close)
    result = normalize_bars(raw, DAY)
    flagged = np.flatnonzero(result.bars["flags"] & FLAG_SUSPECT).tolist()
    assert flagged == [20] and result.suspect == 1
    assert result.bars["low"][20] == 100.0  # the bad wick is clamped to the body


def index() -> dict:
    from tests.conftest import SHARED_DATA

    return json.loads((SHARED_DATA / "index.json").read_text())["prices"] if SHARED_DATA.is_dir() else {}


@pytest.mark.parametrize("name", sorted(index()) or ["(shared data absent)"])
def test_every_shared_csv_ingests_to_strictly_increasing_unique_timestamps(shared_data, name):
    meta = index()[name]
    interval = INTERVALS[meta["interval_s"]]
    result = load_csv(shared_data / "prices" / name, interval)
    ts = result.bars["ts"]
    assert len(ts) and np.all(np.diff(ts) > 0)
    assert np.all(ts % (meta["interval_s"] * 1000) == 0)
    assert len(ts) == meta["rows"] - meta["duplicate_ts"]
    assert ts[0] == ms(meta["first_utc"]) or result.bars["flags"][0] & FLAG_SUSPECT
    assert ts[-1] == ms(meta["last_utc"])
    assert len(result.gaps) == meta["gaps"]
    assert result.dropped_invalid == 0
    b = result.bars
    assert np.all(b["low"] <= np.minimum(b["open"], b["close"])) and np.all(b["high"] >= np.maximum(b["open"], b["close"]))


def test_2021_export_mixed_units_duplicate_day_and_partial_newest_bar(shared_data):
    result = load_csv(shared_data / "prices" / "BTCUSDT_1d_cdd-binance-2021export.csv", "1d")
    assert len(result.bars) == 1408 and result.duplicates == 1  # 1,409 rows, 2017-12-18 twice
    day = result.bars[result.bars["ts"] == ms("2017-12-18")][0]
    assert day["volume"] == pytest.approx(10624.633071)  # the copy with more volume
    assert result.bars["ts"][-1] == ms("2021-06-24") and result.partial  # 662.9 against ~127k: a partial day


def test_hourly_overlap_and_the_conflicting_pair(shared_data):
    result = load_csv(shared_data / "prices" / "BTCUSDT_1h_cdd-binance.csv", "1h")
    assert result.duplicates == 2649
    bar = result.bars[result.bars["ts"] == ms("2020-11-20 07:00")][0]
    assert bar["close"] == 18212.00 and bar["volume"] == pytest.approx(6097.86638)  # complete beats partial
    assert result.conflicts >= 1
    first = result.bars[0]  # the bad print: open = high = 16199.91 while the price was ~4.3k
    assert first["ts"] == ms("2017-08-17 04:00") and first["flags"] & FLAG_SUSPECT
    assert first["open"] == first["close"] == 4308.83 and first["high"] < 5000
    jumps = {pd.Timestamp(a, unit="ms").strftime("%Y-%m-%d"): (b - a) // HOUR + 2 for a, b in result.gaps}
    assert jumps["2017-09-22"] == 5 and jumps["2021-04-25"] == 4  # hours between the bars around the gap


def test_bitstamp_bad_tick_flagged_real_2013_crash_kept(shared_data):
    result = load_csv(shared_data / "prices" / "BTCUSD_1d_bitstamp-coinbase.csv", "1d")
    by_day = {pd.Timestamp(t, unit="ms").strftime("%Y-%m-%d"): b for t, b in zip(result.bars["ts"], result.bars)}
    assert by_day["2017-04-15"]["flags"] & FLAG_SUSPECT and by_day["2017-04-15"]["low"] > 1000
    assert not by_day["2013-04-10"]["flags"] & FLAG_SUSPECT and by_day["2013-04-10"]["low"] == 70
    assert int((result.bars["volume"] == 0).sum()) == 33  # zero-volume days are kept


def test_kraken_15m_gap(shared_data):
    result = load_csv(shared_data / "prices" / "BTCUSD_15m_kraken.csv", "15m")
    assert result.gaps == [(ms("2023-02-22 00:15"), ms("2023-02-22 01:15"))]  # 90 minutes to the next bar


def test_csv_provider_specs_and_slices(shared_data, tmp_path):
    path = shared_data / "prices" / "BTCUSD_1d_kraken.csv"
    provider = CsvProvider.from_specs([f"btc-usd:1d={path}"])
    assert provider.supports("BTC-USD", "1d") and not provider.supports("BTC-USD", "1h")
    bars = asyncio.run(provider.fetch_bars("BTC-USD", "1d", ms("2023-01-01"), ms("2023-01-08")))
    assert len(bars) == 7 and bars["close"][0] == pytest.approx(16614.9, abs=0.5)
    for bad in ("BTC-USD=x.csv", f"BTC-USD:2h={path}", f"BTCUSD:1d={path}"):
        with pytest.raises(ValueError, match="bad csv file spec"):
            parse_spec(bad)
    broken = tmp_path / "broken.csv"
    broken.write_text("time,price\n1,2\n")
    with pytest.raises(ValueError, match="missing column"):
        load_csv(broken, "1d")


@pytest.mark.parametrize("content, reason", [
    (None, "no such file"),
    (b"", "the file is empty"),
    (b"\n  \n", "the file is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 20, "binary content"),
    (b"\xff\xfe\xfa\xfb" * 100 + b"timestamp,open,high,low,close,volume\n", "binary content"),
    (b"timestamp,open,high,low,close,volume\n1672531200,1,2,0.5,1.5,10\n1672617600,1,2,0.5,1.5,10,99,98\n",
     "ragged rows"),
    (b"timestamp,open,high,low,close,volume\nnot-a-time,x,y,z,w,v\n1672617600,-1,-1,-1,-1,1\n", "no valid bar"),
    (b"timestamp,open,high,low,close,volume\n", "no valid bar"),
    (b"time,price\n1,2\n", "missing column"),
])
def test_bad_csv_files_are_refused_with_one_line_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CsvError) as exc:
        load_csv(path, "1d")
    message = str(exc.value)
    assert message.startswith(str(path)) and reason in message and "\n" not in message


def test_a_daily_file_given_as_hourly_is_refused(shared_data):
    with pytest.raises(CsvError, match="bars are 1d apart, but the file was given as 1h"):
        load_csv(shared_data / "prices" / "BTCUSD_1d_kraken.csv", "1h")


def test_future_bars_are_dropped_and_never_anchor_anything():
    now = T0 + 100 * HOUR
    far = 7_000_000_000_000  # the year 2191: inside the 1990-2200 sanity bounds
    raw = make_bars([T0, T0 + HOUR, now + 2 * HOUR, far], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4])
    result = normalize_bars(raw, HOUR, now_ms=now)
    assert result.bars["ts"].tolist() == [T0, T0 + HOUR, now + 2 * HOUR]  # within MAX_FUTURE_MS is kept
    assert result.dropped_future == 1 and result.dropped_invalid == 1


def test_csv_file_content_hash_names_the_content(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("timestamp,open,high,low,close,volume\n1,1,1,1,1,1\n")
    b.write_text("timestamp,open,high,low,close,volume\n1,1,1,1,1,1\n")
    assert content_hash(a) == content_hash(b)
    b.write_text("timestamp,open,high,low,close,volume\n1,1,1,1,2,1\n")
    assert content_hash(a) != content_hash(b)


def test_a_csv_row_in_the_far_future_is_dropped_not_the_newest_bar(tmp_path):
    path = tmp_path / "future.csv"
    path.write_text("timestamp,open,high,low,close,volume\n"
                    "1672531200,1,2,0.5,1.5,10\n1672617600,1,2,0.5,1.5,10\n1672704000,1,2,0.5,1.5,10\n"
                    "7000000000,1,2,0.5,1.5,10\n")  # 2191-10-26
    result = load_csv(path, "1d", now_ms=1_700_000_000_000)
    assert result.bars["ts"][-1] == 1_672_704_000_000 and result.dropped_future == 1
