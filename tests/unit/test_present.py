"""The dashboard's pure presentation helpers (ui/present.py)."""

from __future__ import annotations

import pandas as pd

from ui.present import (AMBER, PALETTE, colours, correlation_cells, delta_label, gap_after_ms, local_time,
                        portfolio_rows, price_lines, segments, slug, store_lost_sentence, symbol_badges,
                        threshold_rule, updated_line)


def test_updated_line_says_how_old_the_numbers_are_and_turns_amber_when_stale():
    fresh = {"age_seconds": 0, "stale": False}
    assert "updated 4 s ago" in updated_line(4.2, fresh, 20) and AMBER not in updated_line(4.2, fresh, 20)
    closed = updated_line(1, {"age_seconds": 90, "stale": False}, 20)
    assert "newest bar closed 90 s ago" in closed and AMBER not in closed
    assert "closed 12 min ago" in updated_line(1, {"age_seconds": 720, "stale": True}, 20)
    assert AMBER in updated_line(1, {"age_seconds": 720, "stale": True}, 20)
    # The service stopped answering: the kept numbers age past the bound and say so.
    old = updated_line(45, fresh, 20)
    assert "updated 45 s ago" in old and AMBER in old and "stale" in old


def test_local_time_is_in_the_readers_zone_with_its_name():
    assert local_time("2026-12-01T10:42:05Z", "Europe/Berlin") == "1 Dec 11:42:05 CET"
    assert local_time("2026-07-01T10:42:05.250Z", "America/New_York") == "1 Jul 06:42:05 EDT"
    assert local_time("2026-12-01T10:42:05Z", "Not/AZone") == "1 Dec 10:42:05 UTC"
    assert local_time("", "UTC") == ""


def test_delta_names_its_period():
    assert delta_label(0.0213, "30d") == "+2.13 % over 30d"
    partial = {"fraction": 0.1, "first_bar": "2026-11-28T11:00:00Z", "last_bar": "2026-12-01T11:00:00Z"}
    assert delta_label(0.0213, "30d", partial) == "+2.13 % over 3 days (of 30d)"
    assert delta_label(0.0213, "30d", {**partial, "fraction": 0.99}) == "+2.13 % over 30d"
    assert delta_label(-0.5, "24h") == "−50.00 % over 24h"
    assert delta_label(None, "7d") is None


def test_colours_are_stable_per_symbol_whatever_is_chosen():
    known = ["BTC-USD", "ETH-USD", "SOL-USD"]
    before = colours(known)
    after = colours(known + ["ADA-USD"])  # a symbol added on the page
    assert {s: after[s] for s in known} == before
    assert len(set(after.values())) == 4 and after["BTC-USD"] == PALETTE[0]


def test_segments_break_at_gaps_only():
    minutes = pd.DatetimeIndex(pd.to_datetime([0, 60, 120, 180, 600, 660, 720], unit="s", utc=True))
    gap = gap_after_ms("1m", total_bars=7, points=7)
    assert gap == 90_000
    assert segments(minutes, gap).tolist() == [0, 0, 0, 0, 1, 1, 1]
    # Downsampled 10:1, neighbours may lie up to two buckets apart without anything missing.
    sampled = pd.DatetimeIndex(pd.to_datetime([m * 60 for m in (0, 5, 25, 31, 50, 90, 95)], unit="s", utc=True))
    gap = gap_after_ms("1m", total_bars=70, points=7)
    assert gap == 21 * 60_000
    assert segments(sampled, gap).tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert segments(minutes[:1], 90_000).tolist() == [0] and segments(minutes[:0], 90_000).tolist() == []


def test_price_lines_index_and_convert_to_wall_clock():
    idx = pd.date_range("2026-12-01 10:00", periods=4, freq="1h", tz="UTC")
    hourly = gap_after_ms("1h", 4, 4)
    data = price_lines({"BTC-USD": pd.Series([100.0, 110, None, 121], idx),
                        "ETH-USD": pd.Series([50.0, 25, 50, 75], idx)},
                       {"BTC-USD": hourly, "ETH-USD": hourly}, "Europe/Berlin", indexed=True)
    btc = data[data.symbol == "BTC-USD"]
    assert btc["value"].round(6).tolist() == [100.0, 110.0, 121.0]  # the missing price is dropped ...
    assert btc["segment"].tolist() == [0, 0, 1]  # ... and the line breaks there instead of bridging it
    assert data[data.symbol == "ETH-USD"]["value"].tolist() == [100.0, 50.0, 100.0, 150.0]
    assert set(data[data.symbol == "ETH-USD"]["segment"]) == {0}
    assert str(data["time"].iloc[0]) == "2026-12-01 11:00:00"  # Berlin wall clock, labelled by the chart
    raw = price_lines({"BTC-USD": pd.Series([100.0, 110], idx[:2])}, {"BTC-USD": hourly})
    assert raw["value"].tolist() == [100.0, 110.0]


def test_correlation_cells_have_equal_decimals():
    corr = pd.DataFrame([[1.0, 0.8], [0.8, 1.0]], index=["A", "B"], columns=["A", "B"])
    corr.loc["A", "B"] = -0.05
    cells = correlation_cells(corr)
    assert len(cells) == 4
    assert dict(zip(zip(cells.row, cells.column), cells.label)) == {
        ("A", "A"): "1.00", ("A", "B"): "-0.05", ("B", "A"): "0.80", ("B", "B"): "1.00"}


def test_badges_name_the_rule_and_carry_the_sentence():
    active = [{"symbol": "BTC-USD", "rule": "price_drop", "state": "WARNING", "message": "BTC-USD fell 6 % in 24h"},
              {"symbol": "BTC-USD", "rule": "btc-low", "state": "ALERT", "message": "price 90 below 100"},
              {"symbol": "ETH-USD", "rule": "drawdown", "state": "NO_DATA", "reason": "stale: no bar since 10:00"}]
    html = symbol_badges("BTC-USD", active, {"btc-low": "BTC <b>low</b>"})
    assert html.index("ALERT · BTC &lt;b&gt;low&lt;/b&gt;") < html.index("WARNING · price_drop")  # worst first
    assert "price 90 below 100" in html and "BTC-USD fell 6 % in 24h" in html
    assert "stale: no bar since 10:00" in symbol_badges("ETH-USD", active, {})
    assert ">OK<" in symbol_badges("SOL-USD", active, {})


def test_threshold_rule_from_the_form():
    rule = threshold_rule("BTC below 50k!", "BTC-USD", "1m", "price", "below", "1h", 55_000.0, 50_000.0, None, 0)
    assert rule == {"id": "btc-below-50k", "name": "BTC below 50k!", "kind": "threshold", "symbol": "BTC-USD",
                    "interval": "1m", "metric": "price", "condition": "below", "window": "1h", "pending_for_s": 0,
                    "warning": 55_000.0, "alert": 50_000.0}
    assert threshold_rule("x", "*", "1h", "sharpe", "below", "30d", None, -1.0, 0.5, 60, rule_id="keep")["id"] == "keep"
    assert slug("  Été -- 2x  ") == "t-2x"


def test_portfolio_rows_format_weights_and_shares():
    rows = portfolio_rows({"contributions": [
        {"symbol": "BTC-USD", "weight": 0.6, "marginal": 0.00123, "contribution_pct": 0.55},
        {"symbol": "ETH-USD", "weight": 0.4, "marginal": 0.0015, "contribution_pct": 0.45}]})
    assert rows.to_dict("records") == [
        {"symbol": "BTC-USD", "weight": "60.0 %", "share of risk": "55.0 %", "marginal (per bar)": "0.123 %"},
        {"symbol": "ETH-USD", "weight": "40.0 %", "share of risk": "45.0 %", "marginal (per bar)": "0.150 %"}]


def test_a_store_that_restarted_empty_is_said_for_a_day_and_only_then():
    from datetime import datetime, timezone
    now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    sentence = store_lost_sentence({"began": "2026-12-01T10:42:05Z", "lost": True}, "Europe/Berlin", now)
    assert sentence.startswith("The shared store (Redis) restarted empty at 1 Dec 11:42:05 CET.")
    assert store_lost_sentence({"began": "2026-11-30T11:59:00Z", "lost": True}, "UTC", now) is None  # a day ago
    assert store_lost_sentence({"began": "2026-12-01T10:42:05Z"}, "UTC", now) is None  # a first start
    assert store_lost_sentence({}, "UTC", now) is None  # Fetch has not looked yet
