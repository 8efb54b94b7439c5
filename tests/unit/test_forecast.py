"""The forecast models, their rolling-origin evaluation and the no-look-ahead rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.common import forecast as fc
from services.common.csv_bars import load_csv
from services.common.intervals import DAY_MS

FILES = {"BTC": "BTCUSDT_1d_cdd-binance.csv", "ETH": "ETHUSDT_1d_cdd-binance.csv",
         "SOL": "SOLUSDT_1d_cdd-binance.csv"}


def _synthetic(n: int = 600, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Daily closes with volatility clustering (a GARCH(1,1)-t path), so fits converge."""
    rng = np.random.default_rng(seed)
    h, r = 4.0, np.empty(n - 1)
    for i in range(n - 1):
        r[i] = math.sqrt(h) * rng.standard_t(6) / math.sqrt(1.5)
        h = 0.2 + 0.1 * r[i] ** 2 + 0.85 * h
    ts = 1_600_000_000_000 + DAY_MS * np.arange(n, dtype=np.int64)
    return ts, 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(r / 100.0)]))


# --- no look-ahead --------------------------------------------------------------------------
@pytest.mark.parametrize("model", fc.MODELS)
def test_changing_every_bar_at_or_after_as_of_leaves_the_forecast_identical(model):
    ts, close = _synthetic()
    as_of = int(ts[450])
    before = fc.forecast(fc.closes_before(ts, close, as_of), model)
    changed = close.copy()
    changed[450:] *= np.random.default_rng(3).uniform(0.2, 5.0, len(close) - 450)  # bar at T included
    after = fc.forecast(fc.closes_before(ts, changed, as_of), model)
    assert (after.variance, after.mean, after.lower, after.upper, after.params) == \
        (before.variance, before.mean, before.lower, before.upper, before.params)
    # ...and the bar at T really is outside: changing the bar just before T does change it.
    moved = close.copy()
    moved[449] *= 1.3
    assert fc.forecast(fc.closes_before(ts, moved, as_of), model).variance != before.variance


def test_closes_before_excludes_the_bar_opening_at_as_of():
    ts, close = _synthetic(300)
    assert len(fc.closes_before(ts, close, int(ts[280]))) == 280
    assert len(fc.closes_before(ts, close, int(ts[280]) + 1)) == 281
    assert len(fc.closes_before(ts, close, None)) == 300


def test_a_replay_truncated_at_t_gives_the_same_forecasts_as_the_full_one():
    ts, close = _synthetic(700)
    full = fc.evaluate(close)
    cut = 560  # closes before T = ts[cut]
    truncated = fc.evaluate(fc.closes_before(ts, close, int(ts[cut])))
    n = len(truncated.realised)
    assert n == cut - 1 - fc.MIN_RETURNS
    for model in fc.MODELS:
        np.testing.assert_array_equal(truncated.variances[model], full.variances[model][:n])


@pytest.mark.parametrize("model", fc.MODELS)
def test_each_evaluated_forecast_is_the_live_forecast_of_its_origin(model):
    """The record scores exactly what ``forecast`` would have said then (at a GARCH refit origin)."""
    _, close = _synthetic(500)
    ev = fc.evaluate(close)
    k = 2 * fc.REFIT_EVERY
    i = int(ev.origins[k])  # the return being forecast; closes[:i+1] end just before it
    live = fc.forecast(close[: i + 1], model)
    assert live.variance == pytest.approx(ev.variances[model][k], rel=1e-12)


# --- errors -----------------------------------------------------------------------------------
def test_too_short_a_history_names_the_minimum():
    _, close = _synthetic(fc.MIN_HISTORY_BARS - 1)
    with pytest.raises(fc.ForecastError, match=f"MIN_HISTORY_BARS = {fc.MIN_HISTORY_BARS}"):
        fc.forecast(close)
    _, close = _synthetic(fc.MIN_HISTORY_BARS)
    assert fc.forecast(close).variance > 0


def test_a_failed_fit_is_an_error_naming_the_reason():
    with pytest.raises(fc.ForecastError, match="GARCH fit"):
        fc.forecast(np.full(400, 100.0))
    _, close = _synthetic(400)
    close[100] = 0.0
    with pytest.raises(fc.ForecastError, match="non-positive or missing close"):
        fc.forecast(close, "ewma")


def test_unknown_model():
    _, close = _synthetic(300)
    with pytest.raises(fc.ForecastError, match="unknown model"):
        fc.forecast(close, "arima")


# --- the statistics -------------------------------------------------------------------------
def test_kupiec_is_zero_at_the_nominal_rate_and_rejects_far_from_it():
    lr, p = fc.kupiec(1000, 50)
    assert lr == pytest.approx(0.0, abs=1e-9) and p == pytest.approx(1.0)
    lr, p = fc.kupiec(1000, 100)
    assert lr > 30 and p < 1e-6
    lr0, p0 = fc.kupiec(100, 0)  # no misses at all is also unlikely at 5 %
    assert lr0 == pytest.approx(-2 * 100 * math.log(0.95)) and p0 < 0.01


def test_diebold_mariano_sign_and_significance():
    rng = np.random.default_rng(0)
    base = rng.normal(size=2000)
    stat, p = fc.diebold_mariano(base - 0.3, base + rng.normal(0, 0.1, 2000))
    assert stat < -10 and p < 1e-6
    stat, p = fc.diebold_mariano(base, base + rng.normal(0, 1.0, 2000))
    assert abs(stat) < 4 and p > 1e-4


def test_band_of_ewma_is_a_normal_95_interval():
    _, close = _synthetic(400)
    f = fc.forecast(close, "ewma")
    assert f.upper == pytest.approx(1.959964 * math.sqrt(f.variance) / 100, rel=1e-5)
    assert f.lower == pytest.approx(-f.upper)


# --- the track record on real daily files ---------------------------------------------------
@pytest.fixture(scope="module")
def evaluations(shared_data):
    out = {}
    for name, file in FILES.items():
        close = load_csv(shared_data / "prices" / file, "1d").bars["close"].astype(float)
        out[name] = (len(close), fc.evaluate(close))
    return out


@pytest.mark.parametrize("name", FILES)
def test_track_record_on_daily_files_is_sane(evaluations, name):
    bars, ev = evaluations[name]
    for model, record in ev.records.items():
        assert record.count == bars - 1 - fc.MIN_RETURNS
        # docs/forecasts.md: QLIKE of daily percent returns between 2.5 and 5 for these coins
        assert 2.5 < record.qlike < 5.0, (model, record)
        assert 0.90 <= record.coverage <= 0.99, (model, record)
        assert record.mse > 0 and 0 <= record.kupiec_p <= 1
    # GARCH-t is at least no worse than the baseline of one rolling window on these files.
    assert ev.records["garch_t"].qlike < ev.records["historical"].qlike
    assert math.isfinite(ev.dm_stat) and 0 <= ev.dm_p <= 1


@pytest.mark.parametrize("name", FILES)
def test_live_forecast_on_daily_files(shared_data, name):
    close = load_csv(shared_data / "prices" / FILES[name], "1d").bars["close"].astype(float)
    f = fc.forecast(close)
    assert 0.005 < f.volatility < 0.15
    assert f.lower < 0 < f.upper
    assert 2 < f.params["nu"] < 30 and 0 <= f.params["alpha"] + f.params["beta"] <= 1


def test_track_record_on_the_last_5000_hourly_bars_is_sane(shared_data):
    close = load_csv(shared_data / "prices" / "BTCUSDT_1h_cdd-binance.csv", "1h").bars["close"].astype(float)
    ev = fc.evaluate(close[-fc.MAX_HISTORY_BARS:])
    for model, record in ev.records.items():
        assert record.count == fc.MAX_HISTORY_BARS - 1 - fc.MIN_RETURNS
        # docs/forecasts.md: hourly percent returns score QLIKE between 0.5 and 2
        assert 0.5 < record.qlike < 2.0 and 0.90 <= record.coverage <= 0.99, (model, record)
    assert ev.records["garch_t"].qlike < ev.records["historical"].qlike
