"""Coinbase Exchange candles: ``GET /products/{id}/candles?granularity=&start=&end=``.

Symbols are Coinbase product ids as they are (``BTC-USD``). Granularity is one of 60, 300,
900, 3600, 21600 and 86400 seconds: there is no 4h, and this adapter reports 4h as
unsupported (``supports`` is False) rather than building it from 1h candles, so a chain takes
4h from a provider that has it natively. At most 300 candles per call, so a range is asked
for in windows of 300 buckets; ``start``/``end`` are sent as ISO 8601.

Rows are ``[time, low, high, open, close, volume]`` (low and high come *before* open), numbers,
``time`` the bucket start in epoch seconds, newest first. Buckets without trades are absent:
gaps are expected and reported, never filled.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np

from services.common.bars import BAR_DTYPE
from services.fetch.providers.base import Unsupported
from services.fetch.providers.http import HttpProvider, _finish, as_float, ceil_to, clip, flag_open

DEFAULT_URL = "https://api.exchange.coinbase.com"
MAX_CANDLES = 300
GRANULARITY_S = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}  # 21600 (6h) is no interval of ours


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_candles(payload: Any) -> np.ndarray:
    """One candles page as bars, in the input (newest-first) order."""
    if not isinstance(payload, list):
        raise ValueError(f"candles must be a JSON array, got {type(payload).__name__}: {str(payload)[:80]}")
    bars = np.zeros(len(payload), dtype=BAR_DTYPE)
    for i, row in enumerate(payload):
        if not isinstance(row, list) or len(row) < 6 or not isinstance(row[0], int):
            raise ValueError(f"candle {i} is not [time, low, high, open, close, volume]: {str(row)[:80]}")
        time_s, low, high, open_, close, volume = row[:6]
        bars[i] = (time_s * 1000, as_float(open_), as_float(high), as_float(low), as_float(close),
                   as_float(volume), 0)
    return bars


class CoinbaseProvider(HttpProvider):
    name = "coinbase"
    intervals = GRANULARITY_S

    def __init__(self, base_url: str = DEFAULT_URL, **http_kwargs):
        super().__init__(base_url, **http_kwargs)  # the public endpoint unless told otherwise

    async def fetch_bars(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> np.ndarray:
        if not self.supports(symbol, interval):
            raise Unsupported(self.name, f"{symbol} {interval} is not served (Coinbase has no 4h candles)")
        granularity = GRANULARITY_S[interval]
        step_ms = granularity * 1000
        window_ms = MAX_CANDLES * step_ms
        pages: list[np.ndarray] = []
        cursor = ceil_to(start_ms, step_ms)  # buckets are aligned to the granularity
        while cursor < end_ms:
            window_end = min(cursor + window_ms, ceil_to(end_ms, step_ms))
            # ``end`` one second before the next window: exactly <= 300 bucket starts whether
            # Coinbase treats ``end`` as inclusive or exclusive.
            params = {"granularity": granularity, "start": iso(cursor), "end": iso(window_end - 1000)}
            pages.append(await self.request("candles", f"/products/{symbol}/candles", params, parse_candles))
            cursor = window_end
        bars = np.concatenate(pages) if pages else np.zeros(0, dtype=BAR_DTYPE)
        bars = clip(_finish(bars), start_ms, end_ms)
        return flag_open(bars, step_ms, self.now_ms())
