"""The ``forecast_volatility`` alert rule: validated on its minimum history, measured without
look-ahead, the live value equal to the backtest's, and the backtest's cost bounded by its cadence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.alerts.backtest import backtest
from services.alerts.rules import measure, rule_from_dict, series_values
from services.common import forecast as fc
from services.common.csv_bars import load_csv
from services.common.errors import InvalidArgument

RULE = {"id": "fv", "kind": "forecast_volatility", "interval": "1d", "window": "1000d", "condition": "above",
        "warning": 0.6, "alert": 0.9, "clear": 0.5}


@pytest.fixture(scope="module")
def btc(shared_data):
    bars = load_csv(shared_data / "prices" / "BTCUSDT_1d_cdd-binance.csv", "1d").bars
    return bars["ts"].copy(), bars["close"].astype(float)


@pytest.fixture(scope="module")
def btc_values(btc):
    return series_values(rule_from_dict(RULE), *btc, 365)


@pytest.mark.parametrize("window, interval, message", [
    ("250d", "1d", "MIN_HISTORY_BARS = 251"),
    ("10d", "1h", "MIN_HISTORY_BARS = 251"),
    ("30d", "1m", "cap of 5,000 bars"),
    ("20y", "1d", "cap of 5,000 bars"),
])
def test_window_outside_the_forecast_history_is_refused_naming_it(window, interval, message):
    with pytest.raises(InvalidArgument) as exc:
        rule_from_dict({**RULE, "window": window, "interval": interval})
    assert exc.value.field == "window" and message in exc.value.message


def test_the_live_value_is_the_backtest_value_at_the_same_bar(btc, btc_values):
    rule = rule_from_dict(RULE)
    ts, close = btc
    for n in (1400, 2017, 2018, 2500, len(ts)):  # on and off refit bars
        assert measure(rule, ts[:n], close[:n], 365) == pytest.approx(btc_values[n - 1], rel=1e-12)


def test_no_look_ahead_and_truncation_invariance(btc, btc_values):
    """Values up to bar i are unchanged when every later bar changes, and a slice that starts later
    gives the same values once its first refit block is past."""
    rule = rule_from_dict(RULE)
    ts, close = btc
    changed = close.copy()
    changed[2200:] *= np.random.default_rng(5).uniform(0.5, 2.0, len(close) - 2200)
    values = series_values(rule, ts, changed, 365)
    np.testing.assert_array_equal(values[:2200], btc_values[:2200])
    assert not np.allclose(values[2200:], btc_values[2200:], equal_nan=True)
    part = series_values(rule, ts[300:], close[300:], 365)
    settled = 1000 + fc.REFIT_EVERY  # one window plus at most one block
    np.testing.assert_array_equal(part[settled:], btc_values[300 + settled:])


def test_values_are_annualised_forecast_volatility(btc_values, btc):
    defined = btc_values[np.isfinite(btc_values)]
    assert len(defined) > 2500
    assert 0.2 < np.median(defined) < 1.2  # BTC's daily history: 20-120 % a year
    assert np.isnan(btc_values[: fc.MIN_RETURNS]).all()  # not before the minimum history


def test_backtest_cost_is_one_fit_per_cadence_block(btc, monkeypatch):
    calls = []
    real = fc.fit_garch
    monkeypatch.setattr(fc, "fit_garch", lambda *a, **k: calls.append(1) or real(*a, **k))
    rule = rule_from_dict(RULE)
    ts, close = btc
    series_values(rule, ts[:2500], close[:2500], 365)
    assert len(calls) <= math.ceil(2500 / fc.REFIT_EVERY) + 1
    calls.clear()
    measure(rule, ts, close, 365)
    assert len(calls) == 1


def test_a_backtest_grades_and_explains_unchanged(btc):
    rule = rule_from_dict(RULE)
    transitions = backtest(rule, "BTC-USD", *btc, "1d")
    assert transitions and {t.grade for t in transitions} <= {"OK", "WARNING", "ALERT"}
    firing = next(t for t in transitions if t.grade == "WARNING")
    assert firing.message.startswith("BTC-USD forecast volatility of the next 1d bar is ")
    assert "annualised, above the 60.0 % WARNING line" in firing.message


def test_a_deadline_stops_a_long_backtest(btc):
    with pytest.raises(TimeoutError):
        series_values(rule_from_dict(RULE), *btc, 365, deadline=0.0)


def test_too_little_data_is_undefined_not_an_error(btc):
    ts, close = btc
    assert measure(rule_from_dict(RULE), ts[:200], close[:200], 365) is None
