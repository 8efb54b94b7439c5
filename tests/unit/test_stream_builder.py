"""The stream bar builder: recorded sessions in, bars out; one truth across intervals; late trades."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.bars import FLAG_PARTIAL, empty_bars
from services.common.intervals import INTERVAL_MS
from services.fetch.streams.binance import BinanceStream
from services.fetch.streams.builder import BarBuilder
from services.fetch.streams.coinbase import CoinbaseStream
from services.fetch.streams.kraken import KrakenStream
from services.fetch.streams.messages import Kline, Trade
from tests.unit.test_stream_parsers import BINANCE_SYMBOLS, COINBASE_PRODUCTS, KRAKEN_SYMBOLS

MINUTE = 60_000
HOUR = 3_600_000
INTERVALS = ["1m", "5m", "15m", "1h", "4h", "1d"]


def replay(builder: BarBuilder, parser, lines, times) -> dict[tuple[str, str], dict[int, tuple]]:
    """Feed a session frame by frame (wall clock = the recorder's clock), flushing after each frame
    as the manager does; returns the last written value of every bar."""
    stored: dict[tuple[str, str], dict[int, tuple]] = {}

    def flush(wall_ms):
        for key, bars in builder.take_dirty(wall_ms).items():
            for b in bars:
                stored.setdefault(key, {})[int(b["ts"])] = tuple(b)[1:]

    for line, t in zip(lines, times):
        for event in parser.parse(line).events:
            if isinstance(event, Trade):
                builder.add_trade(event.symbol, event.ts_ms, event.price, event.qty)
            elif isinstance(event, Kline):
                builder.add_kline(event.symbol, event.open_ms, event.open, event.high, event.low, event.close,
                                  event.volume, event.event_ms, event.closed)
        flush(int(t * 1000))
    flush(int(times[-1] * 1000) + 2 * 86_400_000)  # much later: every bar has closed
    return stored


def covered(builder: BarBuilder, symbols, from_ms: int) -> BarBuilder:
    for s in symbols:
        builder.seed(s, empty_bars(), from_ms, from_ms)
    return builder


def session(folder, name):
    lines = (folder / name).read_text().splitlines()
    times = [float(t) for t in (folder / name.replace(".jsonl", ".ts.txt")).read_text().split()]
    return lines, times


def assert_rollups_match_minutes(stored, symbol):
    minutes = stored[(symbol, "1m")]
    for interval in INTERVALS[1:]:
        step = INTERVAL_MS[interval]
        for start, (o, h, lo, c, v, flags) in stored[(symbol, interval)].items():
            inside = [minutes[t] for t in sorted(minutes) if start <= t < start + step]
            assert (o, h, lo, c) == (inside[0][0], max(m[1] for m in inside), min(m[2] for m in inside), inside[-1][3])
            assert v == pytest.approx(sum(m[4] for m in inside), rel=1e-12)


def test_bars_built_from_the_binance_capture_equal_its_closing_klines(shared_data):
    lines, times = session(shared_data / "ws", "binance_combined_stream_session.jsonl")
    parser = BinanceStream(BINANCE_SYMBOLS)
    closing = [e for e in (parser.parse(x) for x in lines) if e.kind == "kline" for e in e.events if e.closed]
    assert len(closing) == 2
    builder = covered(BarBuilder(BINANCE_SYMBOLS, INTERVALS), BINANCE_SYMBOLS, 1628899200000)  # that day's start
    stored = replay(builder, BinanceStream(BINANCE_SYMBOLS), lines, times)
    for k in closing:  # trades and later klines around it never change the exchange's final minute
        assert stored[(k.symbol, "1m")][k.open_ms] == (k.open, k.high, k.low, k.close, k.volume, 0)
    for symbol in {k.symbol for k in closing}:
        assert_rollups_match_minutes(stored, symbol)


def trades_of(parser, lines):
    return [e for x in lines for e in parser.parse(x).events if isinstance(e, Trade)]


def resampled(trades, symbol, freq):
    """The reference: pandas' own OHLC resample of the trades (time-ordered)."""
    mine = sorted((t for t in trades if t.symbol == symbol), key=lambda t: t.ts_ms)
    frame = pd.DataFrame({"p": [t.price for t in mine], "q": [t.qty for t in mine]},
                         index=pd.to_datetime([t.ts_ms for t in mine], unit="ms"))
    ohlc = frame["p"].resample(freq).ohlc().dropna()
    ohlc["v"] = frame["q"].resample(freq).sum()
    return {int(ts.value // 1_000_000): (r.open, r.high, r.low, r.close, r.v) for ts, r in ohlc.iterrows()}


@pytest.mark.parametrize("name,parser", [
    ("kraken_v1_trade_session.jsonl", lambda: KrakenStream(KRAKEN_SYMBOLS, "wss://ws.kraken.com")),
    ("coinbase_session_ticker_matches.jsonl", lambda: CoinbaseStream(COINBASE_PRODUCTS)),
])
def test_trade_sessions_give_the_resampled_bars_at_every_interval(shared_data, name, parser):
    lines, times = session(shared_data / "ws", name)
    trades = trades_of(parser(), lines)
    symbols = sorted({t.symbol for t in trades})
    builder = covered(BarBuilder(symbols, INTERVALS), symbols, trades[0].ts_ms // 86_400_000 * 86_400_000)
    stored = replay(builder, parser(), lines, times)
    for symbol in symbols:
        for interval, freq in (("1m", "1min"), ("1h", "1h"), ("1d", "1D")):
            got = {ts: v[:5] for ts, v in stored[(symbol, interval)].items()}
            want = resampled(trades, symbol, freq)
            assert got.keys() == want.keys()
            for ts in want:
                assert got[ts] == pytest.approx(want[ts], rel=1e-12)
        assert_rollups_match_minutes(stored, symbol)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5 * HOUR - 1), st.floats(1, 1000), st.floats(0, 10)), min_size=1,
                max_size=300))
def test_every_interval_is_the_aggregate_of_its_minutes(rows):
    start = 1_700_000_000_000 // 86_400_000 * 86_400_000
    trades = [Trade("BTC-USD", start + dt, p, q) for dt, p, q in sorted(rows)]
    builder = covered(BarBuilder(["BTC-USD"], INTERVALS, grace_ms=0), ["BTC-USD"], start)
    stored: dict = {}
    for t in trades:
        builder.add_trade(t.symbol, t.ts_ms, t.price, t.qty)
        for key, bars in builder.take_dirty(t.ts_ms).items():
            stored.setdefault(key, {}).update({int(b["ts"]): tuple(b)[1:] for b in bars})
    assert_rollups_match_minutes(stored, "BTC-USD")
    got = {ts: v[:5] for ts, v in stored[("BTC-USD", "1h")].items()}
    want = resampled(trades, "BTC-USD", "1h")
    assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], rel=1e-12) for k in want)


def test_late_trades_within_the_grace_update_the_closed_bar_later_ones_are_dropped():
    t0 = 1_700_000_040_000 // MINUTE * MINUTE
    builder = covered(BarBuilder(["BTC-USD"], ["1m", "1h"], grace_ms=5_000), ["BTC-USD"], t0 // HOUR * HOUR)
    builder.add_trade("BTC-USD", t0 + 10, 100.0, 1.0)
    first = builder.take_dirty(t0 + 20)
    assert first[("BTC-USD", "1m")]["flags"][0] & FLAG_PARTIAL  # open: partial, as REST marks it
    builder.add_trade("BTC-USD", t0 + MINUTE + 1_000, 101.0, 1.0)  # next minute: the first one is closed
    closed = builder.take_dirty(t0 + MINUTE + 1_000)[("BTC-USD", "1m")]
    assert list(closed["ts"]) == [t0, t0 + MINUTE] and closed["flags"][0] == 0
    assert builder.add_trade("BTC-USD", t0 + 59_000, 150.0, 2.0)  # stamped in the closed minute, 1 s late
    again = builder.take_dirty(t0 + MINUTE + 2_000)
    assert again[("BTC-USD", "1m")][0]["high"] == 150.0 and again[("BTC-USD", "1m")][0]["flags"] == 0
    assert again[("BTC-USD", "1h")][0]["high"] == 150.0 and again[("BTC-USD", "1h")][0]["volume"] == 4.0
    builder.add_trade("BTC-USD", t0 + MINUTE + 6_000, 101.0, 1.0)  # exchange clock: 6 s past the close
    assert not builder.add_trade("BTC-USD", t0 + 59_500, 200.0, 5.0)  # beyond the grace: dropped, counted
    assert builder.late_dropped == 1
    assert builder.take_dirty(t0 + MINUTE + 7_000)[("BTC-USD", "1m")]["high"].max() < 200


def test_open_bars_close_at_the_boundary_without_a_new_trade():
    t0 = 1_700_000_040_000 // MINUTE * MINUTE
    builder = covered(BarBuilder(["BTC-USD"], ["1m"]), ["BTC-USD"], t0)
    builder.add_trade("BTC-USD", t0 + 10, 100.0, 1.0)
    assert builder.take_dirty(t0 + 30_000)[("BTC-USD", "1m")]["flags"][0] & FLAG_PARTIAL
    assert builder.take_dirty(t0 + 59_000) == {}  # nothing changed
    closed = builder.take_dirty(t0 + MINUTE)[("BTC-USD", "1m")]
    assert closed["flags"][0] == 0 and closed["close"][0] == 100.0


def test_a_bar_not_seen_whole_is_never_written():
    t0 = 1_700_000_000_000 // HOUR * HOUR
    builder = BarBuilder(["BTC-USD"], ["1m", "1h"])
    builder.add_trade("BTC-USD", t0 + 5 * MINUTE, 100.0, 1.0)
    assert builder.take_dirty(t0 + 5 * MINUTE) == {}  # never covered: REST polling keeps the series
    builder.cover_from_next_minute("BTC-USD", t0 + 5 * MINUTE + 10)  # the seed failed at 00:05:00.010
    builder.add_trade("BTC-USD", t0 + 5 * MINUTE + 20, 101.0, 1.0)
    builder.add_trade("BTC-USD", t0 + 6 * MINUTE + 20, 102.0, 1.0)
    out = builder.take_dirty(t0 + 6 * MINUTE + 30)
    assert list(out[("BTC-USD", "1m")]["ts"]) == [t0 + 6 * MINUTE] and ("BTC-USD", "1h") not in out
    builder.uncover("BTC-USD")  # connection lost
    builder.add_trade("BTC-USD", t0 + 6 * MINUTE + 40, 103.0, 1.0)
    assert builder.take_dirty(t0 + 6 * MINUTE + 50) == {}


def test_a_rest_seed_covers_the_open_hour_and_the_stream_continues_it():
    t0 = 1_700_000_000_000 // HOUR * HOUR
    seed = np.zeros(3, dtype=empty_bars().dtype)
    seed["ts"] = [t0, t0 + MINUTE, t0 + 2 * MINUTE]
    seed["open"], seed["high"], seed["low"], seed["close"], seed["volume"] = 10, 12, 9, 11, 1
    seed["flags"][-1] = FLAG_PARTIAL  # REST's open minute, as of 00:02:30
    builder = BarBuilder(["BTC-USD"], ["1m", "1h"])
    builder.seed("BTC-USD", seed, t0, t0 + 2 * MINUTE + 30_000)
    assert not builder.add_trade("BTC-USD", t0 + 2 * MINUTE + 20_000, 50.0, 1.0)  # already in REST's minute
    assert builder.add_trade("BTC-USD", t0 + 2 * MINUTE + 40_000, 13.0, 2.0)
    hour = builder.take_dirty(t0 + 2 * MINUTE + 41_000)[("BTC-USD", "1h")][0]
    assert (hour["open"], hour["high"], hour["low"], hour["close"], hour["volume"]) == (10, 13, 9, 13, 5)


def test_many_frames_in_one_bar_are_one_write():
    t0 = 1_700_000_040_000 // MINUTE * MINUTE
    builder = covered(BarBuilder(["BTC-USD"], ["1m", "1h"]), ["BTC-USD"], t0 // HOUR * HOUR)
    for i in range(1000):
        builder.add_trade("BTC-USD", t0 + i, 100.0 + i % 7, 0.1)
    out = builder.take_dirty(t0 + 1000)
    assert {k: len(v) for k, v in out.items()} == {("BTC-USD", "1m"): 1, ("BTC-USD", "1h"): 1}
    assert out[("BTC-USD", "1m")]["volume"][0] == pytest.approx(100.0)
