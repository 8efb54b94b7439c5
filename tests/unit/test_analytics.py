"""Core analytics against empyrical on real series, real events, and properties (hypothesis)."""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common import analytics
from services.common.csv_bars import load_csv

SERIES = [("BTCUSDT_1d_cdd-binance.csv", "1d", 365), ("ETHUSDT_1d_cdd-binance.csv", "1d", 365),
          ("SOLUSDT_1d_cdd-binance.csv", "1d", 365), ("BTCUSDT_1h_cdd-binance.csv", "1h", 8760),
          ("BTCUSDT_1m_binanceus.csv", "1m", 525_600)]
REL = 1e-9


def series(shared_data, name: str, interval: str) -> tuple[np.ndarray, np.ndarray]:
    bars = load_csv(shared_data / "prices" / name, interval).bars
    return bars["ts"], bars["close"]


def close_to(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=REL, abs_tol=1e-15)


@pytest.mark.parametrize("name, interval, periods", SERIES, ids=[s[0] for s in SERIES])
@pytest.mark.parametrize("rf_annual", [0.0, 0.04])
def test_every_metric_matches_the_reference(shared_data, name, interval, periods, rf_annual):
    ts, close = series(shared_data, name, interval)
    stats = analytics.compute_stats(ts, close, periods, rf_annual)
    r = pd.Series(close[1:] / close[:-1] - 1)
    rf = (1 + rf_annual) ** (1 / periods) - 1
    reference = {
        "volatility": float(r.std(ddof=1)),
        "annualized_volatility": empyrical.annual_volatility(r, annualization=periods),
        "sharpe": empyrical.sharpe_ratio(r, risk_free=rf, annualization=periods),
        "sortino": empyrical.sortino_ratio(r, required_return=0, annualization=periods),
        "downside_deviation": empyrical.downside_risk(r, required_return=0, annualization=periods),
        "max_drawdown": empyrical.max_drawdown(r),
        "var_95": empyrical.value_at_risk(r, 0.05),
        "cvar_95": empyrical.conditional_value_at_risk(r, 0.05),
        "mean": float(np.mean(close)), "min": float(np.min(close)), "max": float(np.max(close)),
        "change": close[-1] / close[0] - 1, "first": close[0], "last": close[-1],
        "current_drawdown": close[-1] / close.max() - 1,
    }
    for key, expected in reference.items():
        assert close_to(stats[key], float(expected)), (key, stats[key], expected)
    assert stats["count"] == len(close)


@pytest.mark.parametrize("name", ["ETHUSDT_1d_cdd-binance.csv", "SOLUSDT_1d_cdd-binance.csv"])
def test_beta_matches_empyrical_on_common_days(shared_data, name):
    ts, close = series(shared_data, name, "1d")
    bts, bclose = series(shared_data, "BTCUSDT_1d_cdd-binance.csv", "1d")
    stats = analytics.compute_stats(ts, close, 365, bench_ts=bts, bench_close=bclose)
    a = pd.Series(close[1:] / close[:-1] - 1, index=ts[1:])
    b = pd.Series(bclose[1:] / bclose[:-1] - 1, index=bts[1:])
    common = a.index.intersection(b.index)
    expected = empyrical.beta(a[common], b[common])
    assert close_to(stats["beta"], expected)


def test_real_events(shared_data):
    ts, close = series(shared_data, "BTCUSDT_1d_cdd-binance.csv", "1d")
    stats = analytics.compute_stats(ts, close, 365)
    day = lambda ms: pd.Timestamp(ms, unit="ms").strftime("%Y-%m-%d")  # noqa: E731
    assert day(stats["worst_return_ts"]) == "2020-03-12" and stats["worst_return"] == pytest.approx(-0.395, abs=5e-4)
    assert day(stats["max_drawdown_ts"]) == "2018-12-15" and stats["max_drawdown"] == pytest.approx(-0.832, abs=5e-4)
    ts, close = series(shared_data, "SOLUSDT_1d_cdd-binance.csv", "1d")
    stats = analytics.compute_stats(ts, close, 365)
    assert day(stats["worst_return_ts"]) == "2022-11-09" and stats["worst_return"] == pytest.approx(-0.422, abs=5e-4)
    assert stats["max_drawdown"] == pytest.approx(-0.963, abs=5e-4)
    ts, close = series(shared_data, "ETHUSDT_1d_cdd-binance.csv", "1d")
    assert analytics.compute_stats(ts, close, 365)["max_drawdown"] == pytest.approx(-0.940, abs=5e-4)


def test_correlation_spearman_and_pearson_match_pandas(shared_data):
    data = [series(shared_data, f"{s}USDT_1d_cdd-binance.csv", "1d") for s in ("BTC", "ETH", "SOL")]
    frame = pd.DataFrame({i: pd.Series(c, index=t) for i, (t, c) in enumerate(data)}).dropna()
    returns = frame.pct_change().dropna()
    for method in ("pearson", "spearman"):
        matrix, count = analytics.correlation_matrix(data, method)
        assert count == len(returns)
        np.testing.assert_allclose(matrix, returns.corr(method=method).to_numpy(), rtol=1e-9)


def test_portfolio_of_one_asset_is_that_asset(shared_data):
    ts, close = series(shared_data, "BTCUSDT_1d_cdd-binance.csv", "1d")
    risk = analytics.portfolio_risk([(ts, close)], [1.0], 365)
    stats = analytics.compute_stats(ts, close, 365)
    for key in ("volatility", "annualized_volatility", "var_95", "cvar_95", "max_drawdown"):
        assert close_to(risk[key], stats[key]), key
    assert risk["contributions"][0]["contribution_pct"] == pytest.approx(1.0)


def test_portfolio_contributions_add_up(shared_data):
    data = [series(shared_data, f"{s}USDT_1d_cdd-binance.csv", "1d") for s in ("BTC", "ETH", "SOL")]
    risk = analytics.portfolio_risk(data, [0.5, 0.3, 0.2], 365)
    assert sum(c["contribution"] for c in risk["contributions"]) == pytest.approx(risk["volatility"], rel=1e-12)
    assert sum(c["contribution_pct"] for c in risk["contributions"]) == pytest.approx(1.0, rel=1e-12)


def test_rolling_volatility_matches_pandas(shared_data):
    _, close = series(shared_data, "BTCUSDT_1h_cdd-binance.csv", "1h")
    ours = analytics.rolling_annualized_volatility(close, 24, 8760)
    expected = pd.Series(close).pct_change().rolling(24).std().to_numpy() * math.sqrt(8760)
    defined = ~np.isnan(ours)
    np.testing.assert_allclose(ours[defined], expected[defined], rtol=1e-7)
    assert np.isnan(ours[:24]).all()
    flat = ~defined[24:]  # windows of unchanged prices: zero variance is left undefined
    assert np.all(expected[24:][flat] < 1e-6)


def test_downsample_keeps_extremes_and_ends(shared_data):
    ts, close = series(shared_data, "BTCUSDT_1m_binanceus.csv", "1m")
    keep = analytics.downsample(ts, close, 500)
    assert len(keep) <= 500 and np.all(np.diff(keep) > 0)
    assert keep[0] == 0 and keep[-1] == len(close) - 1
    assert close[keep].max() == close.max() and close[keep].min() == close.min()


def test_undefined_metrics_are_none():
    flat = analytics.compute_stats(np.arange(10) * 60_000, np.full(10, 5.0), 525_600,
                                   bench_ts=np.arange(10) * 60_000, bench_close=np.full(10, 7.0))
    for key in ("volatility", "annualized_volatility", "sharpe", "sortino", "downside_deviation", "beta"):
        assert flat[key] is None, key
    assert flat["max_drawdown"] == 0 and flat["change"] == 0
    two = analytics.compute_stats(np.array([0, 1]), np.array([1.0, 2.0]), 365)
    assert two["volatility"] is None and two["sharpe"] is None and two["var_95"] is None
    rising = analytics.compute_stats(np.arange(5), np.array([1.0, 2, 3, 4, 5]), 365)
    assert rising["sortino"] is None and rising["downside_deviation"] is None  # no downside
    empty = analytics.compute_stats(np.array([], dtype=np.int64), np.array([]), 365)
    assert empty["count"] == 0 and empty["mean"] is None


def test_invalid_prices_are_dropped_before_returns():
    ts = np.array([4, 1, 2, 3, 3, 5])
    close = np.array([4.0, 1.0, np.nan, 3.0, 3.5, -1.0])
    clean_ts, clean_close = analytics.clean_series(ts, close)
    assert clean_ts.tolist() == [1, 3, 4] and clean_close.tolist() == [1.0, 3.5, 4.0]


prices = st.lists(st.floats(min_value=0.01, max_value=1e6, allow_nan=False), min_size=3, max_size=200)


@settings(max_examples=60, deadline=None)
@given(prices, st.floats(min_value=1e-3, max_value=1e3))
def test_scaling_prices_leaves_return_metrics_unchanged(values, factor):
    close = np.array(values)
    ts = np.arange(len(close))
    a = analytics.compute_stats(ts, close, 365)
    b = analytics.compute_stats(ts, close * factor, 365)
    for key in ("change", "volatility", "sharpe", "sortino", "max_drawdown", "var_95", "cvar_95"):
        assert (a[key] is None) == (b[key] is None), key
        if a[key] is None:
            continue
        assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key


@settings(max_examples=60, deadline=None)
@given(prices)
def test_drawdowns_lie_in_minus_one_zero(values):
    close = np.array(values)
    dd = analytics.drawdown_series(close)
    assert np.all(dd <= 0) and np.all(dd >= -1)
    stats = analytics.compute_stats(np.arange(len(close)), close, 365)
    assert -1 <= stats["max_drawdown"] <= stats["current_drawdown"] <= 0


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=2, max_value=5), st.integers(min_value=0, max_value=10_000))
def test_correlation_matrices_are_symmetric_with_unit_diagonal(k, seed):
    rng = np.random.default_rng(seed)
    ts = np.arange(50)
    data = [(ts, 100 * np.cumprod(1 + rng.normal(0, 0.02, 50))) for _ in range(k)]
    for method in ("pearson", "spearman"):
        matrix, _ = analytics.correlation_matrix(data, method)
        np.testing.assert_allclose(matrix, matrix.T)
        np.testing.assert_allclose(np.diag(matrix), 1.0)
        assert np.all(np.abs(matrix) <= 1.0)


@settings(max_examples=30, deadline=None)
@given(st.floats(min_value=0.01, max_value=1e6), st.integers(min_value=3, max_value=100))
def test_constant_series_gives_unset_ratios_never_huge_numbers(level, n):
    stats = analytics.compute_stats(np.arange(n), np.full(n, level), 8760)
    assert stats["sharpe"] is None and stats["sortino"] is None and stats["volatility"] is None
