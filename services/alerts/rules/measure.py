"""Measuring: a rule's value now (``measure``) and at every bar (``series_values``, for backtests).

Built-ins:

- ``price_drop``: the fall from the highest close in the window to the last close, as a positive
  fraction (0.112 = fell 11.2 %).
- ``volatility_spike``: standard deviation of the short window's returns over the baseline
  window's (a ratio, 2.7 = 2.7x).
- ``drawdown``: the last close against the highest close in the window (negative).
- ``threshold``: ``price`` (last close) or any GetStats metric over the window.
- ``forecast_volatility``: the GARCH(1,1)-t forecast of the next bar's volatility, annualised (0.8 =
  80 %), fitted on the window's returns. Refits fall on a calendar cadence (the first bar of each
  block of forecast.REFIT_EVERY bar times) and the variance is filtered forward in between, so a
  backtest costs one fit per 20 bars and the live value equals the backtest's at the same bar.

``measure`` takes the metric from the shared analytics (``compute_stats``, what Core serves).
``series_values`` computes the same numbers at every bar with rolling windows (pandas), and loops
only for the two metrics that have no rolling form (max_drawdown, cvar_95). Both expect a clean
series (``clean_series``: valid prices, ascending unique timestamps).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from services.alerts.rules.model import Rule, window_bars
from services.common import forecast
from services.common.analytics import _TINY, clean_series, compute_stats
from services.common.intervals import interval_ms

_DEADLINE_EVERY = 2048  # bars between deadline checks in the looping metrics


def rule_bars(rule: Rule) -> int:
    return window_bars(rule.window, rule.interval)


def _rolling_return_stats(r: pd.Series, k: int, p: float, metric: str) -> np.ndarray:
    """Return metrics over the last ``k`` returns (at least two), with compute_stats' guards."""
    roll = r.rolling(k, min_periods=2)
    mean = roll.mean()
    if metric == "var_95":
        return roll.quantile(0.05, interpolation="linear").to_numpy()
    if metric in ("downside_deviation", "sortino"):
        dd_sq = np.minimum(r, 0.0).pow(2).rolling(k, min_periods=2).mean()
        downside = np.sqrt(dd_sq.where(dd_sq > 0)) * math.sqrt(p)
        return (downside if metric == "downside_deviation" else mean * p / downside).to_numpy()
    var = roll.var(ddof=1)
    scale = np.maximum(np.maximum(mean.abs(), r.abs().rolling(k, min_periods=2).max()), 1e-300)
    std = np.sqrt(var.where(var > _TINY * scale * scale))
    if metric == "volatility":
        return std.to_numpy()
    if metric == "annualized_volatility":
        return (std * math.sqrt(p)).to_numpy()
    return (mean / std * math.sqrt(p)).to_numpy()  # sharpe (risk-free rate 0)


def _looped(close: np.ndarray, k: int, metric: str, deadline: float | None) -> np.ndarray:
    """max_drawdown or cvar_95 over the closes [i - k, i] at every bar i."""
    out = np.full(len(close), np.nan)
    if metric == "max_drawdown" and k >= len(close):  # the window always reaches the first bar
        out[1:] = np.minimum.accumulate(close / np.maximum.accumulate(close) - 1.0)[1:]
        return out
    r = close[1:] / close[:-1] - 1.0
    for i in range(1, len(close)):
        if deadline is not None and i % _DEADLINE_EVERY == 0 and time.monotonic() > deadline:
            raise TimeoutError("the backtest ran out of time; ask for a shorter range")
        lo = max(0, i - k)
        if metric == "max_drawdown":
            window = close[lo:i + 1]
            out[i] = float((window / np.maximum.accumulate(window)).min() - 1.0)
        elif i - lo >= 2:  # cvar_95 needs two returns
            rets = r[lo:i]
            n = int((len(rets) - 1) * 0.05) + 1
            out[i] = float(np.partition(rets, n - 1)[:n].mean()) if n < len(rets) else float(rets.mean())
    return out


def series_values(rule: Rule, ts: np.ndarray, close: np.ndarray, periods_per_year: float,
                  deadline: float | None = None) -> np.ndarray:
    """The rule's value at every bar, using only data up to that bar (NaN where undefined).

    ``deadline`` (time.monotonic()) stops the looping metrics with TimeoutError."""
    close = np.asarray(close, dtype=np.float64)
    s = pd.Series(close)
    k = rule_bars(rule)
    if rule.kind == "forecast_volatility":
        h = forecast.cadence_variances(ts, close, interval_ms(rule.interval), k, deadline=deadline)
        return np.sqrt(h) / 100.0 * math.sqrt(periods_per_year)
    if rule.kind in ("price_drop", "drawdown") or rule.metric == "current_drawdown":
        ratio = (close / s.rolling(k + 1, min_periods=2).max()).to_numpy()
        return 1.0 - ratio if rule.kind == "price_drop" else ratio - 1.0
    r = s.pct_change()
    if rule.kind == "volatility_spike":
        kb = window_bars(rule.baseline_window, rule.interval, "baseline_window")
        short = r.rolling(k, min_periods=max(2, k // 2)).std()
        long = r.rolling(kb, min_periods=max(3, kb // 2)).std()
        return (short / long.where(long > 0)).to_numpy()
    metric = rule.metric
    if metric == "price":
        return close.copy()
    if metric in ("mean", "min", "max"):
        return getattr(s.rolling(k + 1, min_periods=2), metric)().to_numpy()
    if metric == "change":
        first = s.shift(k).to_numpy(copy=True)
        first[:k] = close[0] if len(close) else np.nan
        out = close / first - 1.0
        out[:1] = np.nan
        return out
    if metric in ("max_drawdown", "cvar_95"):
        return _looped(close, k, metric, deadline)
    values = _rolling_return_stats(r.iloc[1:].reset_index(drop=True), k, periods_per_year, metric)
    return np.concatenate([[np.nan], values])


def measure(rule: Rule, ts: np.ndarray, close: np.ndarray, periods_per_year: float,
            stats_cache: dict | None = None) -> float | None:
    """The rule's value now (at the last bar), or None when undefined.

    ``stats_cache`` (one dict per series and cycle) lets rules over the same window share one
    metric-set computation."""
    k = rule_bars(rule)
    span = window_bars(rule.baseline_window, rule.interval, "baseline_window") + 2 \
        if rule.kind == "volatility_spike" else k + 1
    if rule.kind == "forecast_volatility":
        span = k + forecast.REFIT_EVERY + 1  # the window of the last refit, up to one block back
    ts, close = clean_series(ts[-span:], close[-span:])
    if len(close) == 0:
        return None
    if rule.kind == "forecast_volatility":
        h = forecast.cadence_variance_now(ts, close, interval_ms(rule.interval), k)
        return None if not math.isfinite(h) else math.sqrt(h) / 100.0 * math.sqrt(periods_per_year)
    if rule.kind == "threshold" and rule.metric != "price":
        cache = {} if stats_cache is None else stats_cache
        if rule.window not in cache:
            cache[rule.window] = compute_stats(ts, close, periods_per_year)
        value = cache[rule.window].get(rule.metric)
        return None if value is None or not math.isfinite(value) else float(value)
    value = series_values(rule, ts, close, periods_per_year)[-1]
    return None if not math.isfinite(value) else float(value)
