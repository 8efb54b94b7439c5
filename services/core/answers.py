"""Arrays in, response messages out: the CPU-heavy part of each RPC, run in Core's worker threads.

Pure functions (no I/O, no event loop), so the server can hand them to an executor and keep
answering health checks while a year of minute bars is being computed and encoded.
"""

from __future__ import annotations

import math

import numpy as np

from cryptolens.v1 import core_pb2
from services.common import analytics
from services.common.convert import gaps_to_pb, now_ms, to_timestamp
from services.common.errors import FailedPrecondition
from services.common.intervals import DAY_MS, interval_ms, periods_per_year

_STATS = ("first", "last", "mean", "min", "max", "change", "volatility", "annualized_volatility", "max_drawdown",
          "current_drawdown", "sharpe", "sortino", "downside_deviation", "var_95", "cvar_95", "beta", "worst_return",
          "best_return")
_RISK = ("volatility", "annualized_volatility", "var_95", "cvar_95", "max_drawdown", "expected_return")


def _set_finite(message, names, values: dict) -> None:
    for name in names:
        value = values.get(name)
        if value is not None and math.isfinite(value):
            setattr(message, name, float(value))


def stats_response(symbol: str, interval: str, benchmark: str, values: dict, start_ms: int, end_ms: int,
                   version: int, source: str) -> core_pb2.GetStatsResponse:
    """The response for a metric dict (``analytics.compute_stats``'s, plus the window's ``gaps``)."""
    step = interval_ms(interval)
    response = core_pb2.GetStatsResponse(
        symbol=symbol, interval=interval, periods_per_year=periods_per_year(interval), data_version=version,
        source=source, as_of=to_timestamp(now_ms()), benchmark=benchmark, start=to_timestamp(start_ms),
        end=to_timestamp(end_ms), count=int(values["count"]), gaps=gaps_to_pb(values["gaps"], step))
    _set_finite(response, _STATS, values)
    for name, field in (("max_drawdown_ts", "max_drawdown_time"), ("worst_return_ts", "worst_return_time")):
        if values.get(name) is not None:
            getattr(response, field).CopyFrom(to_timestamp(values[name]))
    return response


def timeseries(symbol: str, interval: str, ts: np.ndarray, close: np.ndarray, max_points: int,
               rolling_window: int, version: int, source: str) -> core_pb2.GetTimeseriesResponse:
    # Default rolling window: one day of bars (30 days on daily bars).
    window = rolling_window or (30 if interval == "1d" else DAY_MS // interval_ms(interval))
    drawdown = analytics.drawdown_series(close)
    rolling = analytics.rolling_annualized_volatility(close, window, periods_per_year(interval))
    keep = analytics.downsample(ts, close, max_points)
    points = [core_pb2.TimeseriesPoint(time=to_timestamp(t), close=c, drawdown=d,
                                       rolling_volatility=None if math.isnan(v) else v)
              for t, c, d, v in zip(ts[keep].tolist(), close[keep].tolist(), drawdown[keep].tolist(),
                                    rolling[keep].tolist())]
    return core_pb2.GetTimeseriesResponse(symbol=symbol, interval=interval, points=points, total_points=len(ts),
                                          data_version=version, source=source)


def correlation(symbols: list[str], series: list[tuple[np.ndarray, np.ndarray]],
                method: int) -> core_pb2.GetCorrelationResponse:
    try:
        matrix, count = analytics.correlation_matrix(
            series, "spearman" if method == core_pb2.CORRELATION_METHOD_SPEARMAN else "pearson")
    except ValueError as exc:
        raise FailedPrecondition(str(exc)) from None
    return core_pb2.GetCorrelationResponse(
        symbols=symbols, count=count, method=method,
        rows=[core_pb2.CorrelationRow(values=[float(v) for v in row]) for row in matrix])


def portfolio_risk(symbols: list[str], series: list[tuple[np.ndarray, np.ndarray]], weights: np.ndarray,
                   interval: str) -> core_pb2.GetPortfolioRiskResponse:
    ppy = periods_per_year(interval)
    try:
        risk = analytics.portfolio_risk(series, weights, ppy)
    except ValueError as exc:
        raise FailedPrecondition(str(exc)) from None
    response = core_pb2.GetPortfolioRiskResponse(count=int(risk.get("count", 0)), periods_per_year=ppy)
    _set_finite(response, _RISK, risk)
    for symbol, contribution in zip(symbols, risk["contributions"]):
        response.contributions.add(symbol=symbol, **{k: float(contribution[k]) for k in
                                                      ("weight", "marginal", "contribution", "contribution_pct")})
    return response
