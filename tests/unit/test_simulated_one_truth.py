"""The simulated provider has one price per instant: every interval is the aggregate of its minutes."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.bars import FLAG_PARTIAL
from services.common.intervals import DAY_MS, HOUR_MS, INTERVAL_MS, MINUTE_MS
from services.fetch.providers.simulated import SimulatedProvider

T0 = 1_767_225_600_000  # 2026-01-01
NOW = T0 + 3 * DAY_MS + 5 * HOUR_MS + 17 * MINUTE_MS + 20_000  # mid-minute, mid-hour


def aggregate(minutes: np.ndarray, start: int, step: int) -> tuple:
    inside = minutes[(minutes["ts"] >= start) & (minutes["ts"] < start + step)]
    return (inside["open"][0], inside["high"].max(), inside["low"].min(), inside["close"][-1], inside["volume"].sum())


@pytest.mark.parametrize("interval", ["5m", "15m", "1h", "4h", "1d"])
def test_every_interval_is_the_aggregate_of_its_minutes_up_to_now(interval):
    provider = SimulatedProvider(seed=7, now_ms=lambda: NOW)
    minutes = provider.bars("BTC-USD", "1m", T0, NOW + DAY_MS)
    coarse = provider.bars("BTC-USD", interval, T0, NOW + DAY_MS)
    step = INTERVAL_MS[interval]
    assert len(coarse) == (NOW - T0) // step + 1  # every bar opened by now, the last one open
    for bar in coarse:
        o, h, lo, c, v = aggregate(minutes, int(bar["ts"]), step)
        assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (o, h, lo, c)
        assert bar["volume"] == pytest.approx(v, rel=1e-12)
    assert coarse["flags"][-1] & FLAG_PARTIAL and not (coarse["flags"][:-1] & FLAG_PARTIAL).any()
    assert coarse["close"][-1] == minutes["close"][-1]  # the open bar's price is the current minute's


def test_the_1h_close_is_the_close_of_its_last_minute_for_any_window():
    provider = SimulatedProvider(seed=3, now_ms=lambda: NOW)
    hours = provider.bars("ETH-USD", "1h", T0 + 7 * HOUR_MS, T0 + 9 * HOUR_MS)
    last_minutes = provider.bars("ETH-USD", "1m", T0 + 8 * HOUR_MS - MINUTE_MS, T0 + 9 * HOUR_MS)
    assert hours["close"][0] == last_minutes["close"][0] and hours["close"][1] == last_minutes["close"][-1]
    assert hours["open"][1] == last_minutes["open"][1]


def test_bars_are_the_same_on_every_call_and_the_day_ends_on_its_level():
    provider = SimulatedProvider(seed=7, now_ms=lambda: NOW)
    a = provider.bars("SOL-USD", "1d", T0 - 30 * DAY_MS, T0)
    b = provider.bars("SOL-USD", "1d", T0 - 10 * DAY_MS, T0)
    assert np.array_equal(a[-10:], b)
    assert np.allclose(a["open"][1:], a["close"][:-1])  # one path: a day opens where the last one closed
