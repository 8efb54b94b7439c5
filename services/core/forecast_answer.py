"""GetForecast's CPU-heavy part: closes in, response out, run in Core's worker threads (pure, no I/O).

Every model forecasts the same next period so the live record can store all of them when issued;
the rolling-origin evaluation gives each model's track record (services/common/forecast.py).
"""

from __future__ import annotations

import math

import numpy as np

from cryptolens.v1 import core_pb2
from services.common import forecast as fc
from services.common.convert import to_timestamp
from services.common.errors import FailedPrecondition
from services.common.intervals import interval_ms, periods_per_year

HISTORY_POINTS = 250   # scored origins sent for the chart


def model_pb(f: fc.Forecast, ppy: float) -> core_pb2.ModelForecast:
    return core_pb2.ModelForecast(model=f.model, volatility=f.volatility,
                                  annualized_volatility=f.volatility * math.sqrt(ppy), band_lower=f.lower,
                                  band_upper=f.upper, params=f.params, fit_seconds=f.fit_seconds)


def record_pb(record: fc.Record) -> core_pb2.ForecastRecord:
    message = core_pb2.ForecastRecord(model=record.model, count=record.count)
    for name in ("qlike", "mse", "coverage", "kupiec_p"):
        value = getattr(record, name)
        if math.isfinite(value):
            setattr(message, name, value)
    return message


def forecast(symbol: str, interval: str, model: str, ts: np.ndarray, close: np.ndarray, version: int,
             source: str) -> core_pb2.GetForecastResponse:
    """The forecast after the last of ``ts``/``close`` (the bars before as_of) with its track record."""
    ppy = periods_per_year(interval)
    try:
        forecasts = {m: fc.forecast(close, m) for m in fc.MODELS}
        evaluation = fc.evaluate(close) if len(close) > fc.MIN_HISTORY_BARS else None
    except fc.ForecastError as exc:
        raise FailedPrecondition(f"{symbol} {interval}: {exc}") from None
    response = core_pb2.GetForecastResponse(
        symbol=symbol, interval=interval, model=model, target=to_timestamp(int(ts[-1]) + interval_ms(interval)),
        last_bar=to_timestamp(int(ts[-1])), forecast=model_pb(forecasts[model], ppy),
        baselines=[model_pb(f, ppy) for m, f in forecasts.items() if m != model],
        last_abs_return=abs(math.log(close[-1] / close[-2])), bars=len(close), periods_per_year=ppy,
        data_version=version, source=source)
    if evaluation is not None:
        response.track_record.extend(record_pb(r) for r in evaluation.records.values())
        if math.isfinite(evaluation.dm_stat):
            response.dm_stat, response.dm_p = evaluation.dm_stat, evaluation.dm_p
        origins = evaluation.origins[-HISTORY_POINTS:]
        variances = evaluation.variances[model][-HISTORY_POINTS:]
        realised = evaluation.realised[-HISTORY_POINTS:]
        response.history.extend(
            core_pb2.ForecastPoint(time=to_timestamp(int(ts[i + 1])), forecast=math.sqrt(h) / 100,
                                   realised=abs(r) / 100)
            for i, h, r in zip(origins.tolist(), variances.tolist(), realised.tolist()))
        response.evaluation_seconds = evaluation.seconds
    return response
