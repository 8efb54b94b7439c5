"""The live forecast record on a real Redis: stored when first issued, scored once the bar closed,
never re-issued or rescored with hindsight."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cryptolens.v1 import core_pb2
from services.common.intervals import DAY_MS
from services.core import forecast_live
from services.core.forecast_live import live_key

T0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS


def _forecast(model: str, vol: float) -> core_pb2.ModelForecast:
    return core_pb2.ModelForecast(model=model, volatility=vol, band_lower=-1.96 * vol, band_upper=1.96 * vol)


def _bars(n: int, closes=None):
    ts = T0 + DAY_MS * np.arange(n, dtype=np.int64)
    return ts, np.asarray(closes if closes is not None else 100.0 + np.arange(n), dtype=float)


async def test_issued_once_then_scored_once_the_bar_closed(redis_client):
    ts, close = _bars(10)
    target = int(ts[-1]) + DAY_MS
    records = await forecast_live.update(redis_client, "BTC-USD", "1d", ts, close, [_forecast("ewma", 0.02)],
                                         int(ts[-1]), target, now_ms=1)
    assert [(r.model, r.count) for r in records] == [("ewma", 0)]
    # A second, different forecast for the same target (say after a refit) does not replace the first.
    await forecast_live.update(redis_client, "BTC-USD", "1d", ts, close, [_forecast("ewma", 0.5)],
                               int(ts[-1]), target, now_ms=2)
    entry = json.loads(await redis_client.hget(live_key("BTC-USD", "1d", "ewma"), str(target)))
    assert entry["volatility"] == 0.02 and entry["issued"] == 1

    # The target bar arrives: it is the newest bar, so it may still change: not scored yet.
    ts11, close11 = _bars(11, list(close) + [112.0])
    records = await forecast_live.update(redis_client, "BTC-USD", "1d", ts11, close11, [_forecast("ewma", 0.03)],
                                         int(ts11[-1]), int(ts11[-1]) + DAY_MS, now_ms=3)
    assert records[0].count == 0
    # A later bar exists: the target is scored on ln(112 / 109) against the forecast as issued.
    ts12, close12 = _bars(12, list(close11) + [90.0])
    records = await forecast_live.update(redis_client, "BTC-USD", "1d", ts12, close12, [_forecast("ewma", 0.03)],
                                         int(ts12[-1]), int(ts12[-1]) + DAY_MS, now_ms=4)
    r = 100 * math.log(112 / 109)
    assert records[0].count == 1
    assert records[0].qlike == pytest.approx(math.log(4.0) + r * r / 4.0)
    assert records[0].coverage == 1.0  # |2.7 %| is inside +-3.92 %
    # The bar is later revised: the score stays what it was when it was made.
    revised = close12.copy()
    revised[10] = 200.0
    records = await forecast_live.update(redis_client, "BTC-USD", "1d", ts12, revised, [_forecast("ewma", 0.03)],
                                         int(ts12[-1]), int(ts12[-1]) + DAY_MS, now_ms=5)
    assert records[0].qlike == pytest.approx(math.log(4.0) + r * r / 4.0)


async def test_a_forecast_from_bars_no_longer_newest_is_not_issued(redis_client):
    ts, close = _bars(10)
    await forecast_live.update(redis_client, "ETH-USD", "1d", ts, close, [_forecast("garch_t", 0.02)],
                               int(ts[-2]), int(ts[-1]), now_ms=1)
    assert await redis_client.hlen(live_key("ETH-USD", "1d", "garch_t")) == 0


async def test_a_target_bar_that_never_came_is_void_not_scored(redis_client):
    ts, close = _bars(5)
    target = int(ts[-1]) + DAY_MS
    await forecast_live.update(redis_client, "SOL-USD", "1d", ts, close, [_forecast("ewma", 0.02)],
                               int(ts[-1]), target, now_ms=1)
    later_ts = np.concatenate([ts, [target + DAY_MS, target + 2 * DAY_MS]])  # the target day is a gap
    later_close = np.concatenate([close, [105.0, 106.0]])
    records = await forecast_live.update(redis_client, "SOL-USD", "1d", later_ts, later_close,
                                         [_forecast("ewma", 0.02)], int(later_ts[-1]), int(later_ts[-1]) + DAY_MS, 2)
    assert records[0].count == 0
    entry = json.loads(await redis_client.hget(live_key("SOL-USD", "1d", "ewma"), str(target)))
    assert entry["realised"] is None


async def test_only_the_newest_forecasts_are_kept(redis_client, monkeypatch):
    monkeypatch.setattr(forecast_live, "LIVE_KEEP", 3)
    key = live_key("BTC-USD", "1d", "ewma")
    ts, close = _bars(10)
    for i in range(5):
        await redis_client.hset(key, str(int(ts[i])), json.dumps({"base_close": 1.0, "volatility": 0.01,
                                                                  "lower": -1, "upper": 1}))
    await forecast_live.update(redis_client, "BTC-USD", "1d", ts, close, [_forecast("ewma", 0.02)],
                               int(ts[-1]), int(ts[-1]) + DAY_MS, now_ms=1)
    assert sorted(int(k) for k in await redis_client.hkeys(key))[0] > int(ts[2])
    assert await redis_client.hlen(key) == 3
