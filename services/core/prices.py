"""WatchPrices: the last price, 24 h change and age of a symbol, as one stream message.

Read through the series cache, so after a one-bar write only the changed bars come from Redis.
"""

from __future__ import annotations

import numpy as np

from cryptolens.v1 import core_pb2
from services.common.convert import now_ms, to_timestamp
from services.common.freshness import freshness_pb
from services.common.series import SeriesSource

DAY_MS = 86_400_000


def price_message(symbol: str, interval: str, version: int, source: str, ts: np.ndarray, close: np.ndarray,
                  stale_after_bars: int, resume_token: str, snapshot: bool) -> core_pb2.WatchPricesResponse:
    """``ts``/``close``: the series' bars from two days before its newest one (empty: no bars)."""
    out = core_pb2.WatchPricesResponse(symbol=symbol, interval=interval, data_version=version, source=source,
                                       snapshot=snapshot, resume_token=resume_token)
    newest = int(ts[-1]) if len(ts) else None
    out.freshness.CopyFrom(freshness_pb(newest, interval, stale_after_bars, now_ms()))
    if newest is None:
        return out
    out.last = float(close[-1])
    at = int(np.searchsorted(ts, newest - DAY_MS, "right")) - 1  # newest bar at or before a day back
    if at >= 0:
        out.change_24h = float(close[-1] / close[at] - 1.0)
        out.change_24h_from.CopyFrom(to_timestamp(int(ts[at])))
    return out


async def read_price(series: SeriesSource, symbol: str, interval: str, stale_after_bars: int, resume_token: str,
                     snapshot: bool) -> core_pb2.WatchPricesResponse:
    """The message for a symbol as the store holds it now (fetched through for a series it lacks)."""
    state = await series.ensure(symbol, interval)
    last = state.info.last_ms
    if last is None:
        return price_message(symbol, interval, state.info.version, state.info.source, np.zeros(0, np.int64),
                             np.zeros(0), stale_after_bars, resume_token, snapshot)
    start = last - 2 * DAY_MS
    data = await series.get(symbol, interval, start, state=state)
    ts, close = data.window(start, None)
    return price_message(symbol, interval, data.version, data.source, ts, close, stale_after_bars, resume_token,
                         snapshot)


def unavailable_message(symbol: str, interval: str, stale_after_bars: int,
                        resume_token: str) -> core_pb2.WatchPricesResponse:
    """A snapshot entry for a series that cannot be had now (Fetch down, nothing stored): no price, stale."""
    return price_message(symbol, interval, 0, "", np.zeros(0, np.int64), np.zeros(0), stale_after_bars,
                         resume_token, True)
