"""The live forecast record: each live forecast is stored in Redis when first issued and scored once
the bar it forecast has closed, so the live record is never recomputed with hindsight.

One HASH per series and model, in the series' hash slot::

    cl:v1:s:{BTC-USD:1d}:forecast:garch_t   field = target bar open ms, value = JSON
        {"issued": ms, "base_close": c, "volatility": v, "lower": l, "upper": u[, "realised": r | null]}

HSETNX keeps the first forecast issued for a target; the return is scored as ln(close of the target
bar / base_close) once a later bar exists (the target bar can no longer change). A target bar that
never came (a gap) is scored as void (``realised`` null) and left out. Only the newest LIVE_KEEP
forecasts per model are kept.
"""

from __future__ import annotations

import json
import math

import numpy as np
import redis.asyncio as aioredis

from cryptolens.v1 import core_pb2
from services.common.store import series_key

LIVE_KEEP = 2000


def live_key(symbol: str, interval: str, model: str) -> str:
    return series_key(symbol, interval, f"forecast:{model}")


def _realised(entry: dict, target: int, ts: np.ndarray, close: np.ndarray) -> float | None | str:
    """The realised log return of a stored forecast; None while pending, "void" if its bar never came."""
    i = int(np.searchsorted(ts, target, "left"))
    if i == len(ts) or target < ts[0]:
        return None  # not there yet (or older than the bars read)
    if ts[i] != target:
        return "void"  # a later bar exists but not this one
    if i == len(ts) - 1:
        return None  # the newest bar: it may still change
    return math.log(float(close[i]) / entry["base_close"])


def _record(model: str, scored: list[dict]) -> core_pb2.ForecastRecord:
    record = core_pb2.ForecastRecord(model=model, count=len(scored))
    if scored:
        h = np.array([(100 * e["volatility"]) ** 2 for e in scored])
        r = np.array([e["realised"] for e in scored])
        inside = np.array([e["lower"] <= e["realised"] <= e["upper"] for e in scored])
        record.qlike = float(np.mean(np.log(h) + (100 * r) ** 2 / h))
        record.mse = float(np.mean(((100 * r) ** 2 - h) ** 2))
        record.coverage = float(inside.mean())
    return record


async def update(redis: aioredis.Redis, symbol: str, interval: str, ts: np.ndarray, close: np.ndarray,
                 forecasts: list[core_pb2.ModelForecast], base_ms: int, target_ms: int, now_ms: int
                 ) -> list[core_pb2.ForecastRecord]:
    """Issue ``forecasts`` (made from the bars up to ``base_ms``) for ``target_ms`` unless one was issued
    for it before, score what has become scorable, and return each model's live record. Nothing is
    issued when ``base_ms`` is no longer the newest bar: that forecast is already history."""
    records = []
    if len(ts) and ts[-1] == base_ms:
        for f in forecasts:
            entry = {"issued": now_ms, "base_close": float(close[-1]), "volatility": f.volatility,
                     "lower": f.band_lower, "upper": f.band_upper}
            await redis.hsetnx(live_key(symbol, interval, f.model), str(target_ms), json.dumps(entry))
    for model in (f.model for f in forecasts):
        key = live_key(symbol, interval, model)
        stored = {int(k): json.loads(v) for k, v in (await redis.hgetall(key)).items()}
        scored, updates = [], {}
        for target, entry in stored.items():
            if "realised" not in entry:
                value = _realised(entry, target, ts, close)
                if value is None:
                    continue
                entry["realised"] = None if value == "void" else value
                updates[str(target)] = json.dumps(entry)
            if entry["realised"] is not None:
                scored.append(entry)
        if updates:
            await redis.hset(key, mapping=updates)  # the same value whichever replica scores first
        if len(stored) > LIVE_KEEP:
            await redis.hdel(key, *(str(t) for t in sorted(stored)[: len(stored) - LIVE_KEEP]))
        records.append(_record(model, scored))
    return records
