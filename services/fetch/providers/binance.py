"""Binance spot klines: ``GET /api/v3/klines`` (weight 2, at most 1000 rows per call).

Symbols: ``BTC-USD`` → ``BTCUSDT``. Binance.com lists no USD markets, so a USD quote is served
from the USDT market (USDT tracks USD within a fraction of a percent in normal times; the
bar source is recorded as ``binance`` so a reader can tell). Other quotes map as written
(``ETH-BTC`` → ``ETHBTC``, ``BTC-EUR`` → ``BTCEUR``). Whether a market exists is only known by
asking: an unknown one answers HTTP 400 (code -1121), which becomes ``Unsupported``.

Rows are ``[openTime, "open", "high", "low", "close", "volume", closeTime, ...]``, times in
epoch ms, prices as strings, oldest first. Paging: next ``startTime`` = last open + interval.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from services.common.bars import BAR_DTYPE, FLAG_PARTIAL
from services.common.intervals import INTERVAL_MS
from services.fetch.providers.base import BadResponse, Unsupported
from services.fetch.providers.http import HttpAnswer, HttpProvider, _finish, clip, wall_clock_ms

DEFAULT_URL = "https://api.binance.com"
MAX_LIMIT = 1000
QUOTE_ALIASES = {"USD": "USDT"}  # no USD spot markets on binance.com
_BAN_RE = re.compile(r"banned until (\d{12,14})")


def market(symbol: str) -> str:
    base, _, quote = symbol.partition("-")
    return base + QUOTE_ALIASES.get(quote, quote)


def parse_klines(payload: Any, now_ms: int) -> np.ndarray:
    """One klines page as bars (input order); a kline whose close time is not yet past is partial.

    Column-wise (a year of minute klines is 526 pages: per-row Python would dominate the ingest).
    Raises ValueError/TypeError on a body of the wrong shape.
    """
    if not isinstance(payload, list):
        raise ValueError(f"klines must be a JSON array, got {type(payload).__name__}")
    if not payload:
        return np.zeros(0, dtype=BAR_DTYPE)
    if not all(isinstance(row, list) and len(row) >= 7 for row in payload):
        bad = next(i for i, row in enumerate(payload) if not isinstance(row, list) or len(row) < 7)
        raise ValueError(f"kline row {bad} is not a 7+ element array: {str(payload[bad])[:80]}")
    columns = list(zip(*payload))
    open_time, close_time = np.array(columns[0]), np.array(columns[6])
    if open_time.dtype.kind not in "iu" or close_time.dtype.kind not in "iu":
        raise ValueError("klines have non-integer times")
    bars = np.zeros(len(payload), dtype=BAR_DTYPE)
    bars["ts"] = open_time
    for i, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
        bars[name] = np.array(columns[i], dtype=np.float64)  # prices come as strings
    bars["flags"] = np.where(close_time >= now_ms, FLAG_PARTIAL, 0)
    return bars


class BinanceProvider(HttpProvider):
    name = "binance"
    intervals = INTERVAL_MS
    request_weight = {"klines": 2}

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        page_limit: int = MAX_LIMIT,
        now_ms: Callable[[], int] = wall_clock_ms,
        **http_kwargs,
    ):
        super().__init__(base_url, now_ms=now_ms, **http_kwargs)
        if not 1 <= page_limit <= MAX_LIMIT:
            raise ValueError(f"page_limit must be 1..{MAX_LIMIT}")
        self.page_limit = page_limit

    def rate_limit_hint(self, answer: HttpAnswer) -> float | None:
        # A 418 ban says until when in the message (epoch ms) when no Retry-After came with it.
        match = _BAN_RE.search(answer.text)
        if match is None:
            return None
        return max(0.0, (int(match.group(1)) - self.now_ms()) / 1000)

    async def fetch_bars(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> np.ndarray:
        if not self.supports(symbol, interval):
            raise Unsupported(self.name, f"{symbol} {interval} is not served")
        step = INTERVAL_MS[interval]
        pages: list[np.ndarray] = []
        cursor = start_ms
        while cursor < end_ms:
            params = {"symbol": market(symbol), "interval": interval, "startTime": cursor,
                      "endTime": end_ms - 1, "limit": self.page_limit}
            page = await self.request("klines", "/api/v3/klines", params,
                                      lambda body: parse_klines(body, self.now_ms()))
            pages.append(page)
            if len(page) < self.page_limit:
                break  # Binance answered everything up to endTime (or up to now)
            following = int(page["ts"].max()) + step
            if following <= cursor:
                raise BadResponse(self.name, f"klines paging did not advance past {cursor}")
            cursor = following
        bars = np.concatenate(pages) if pages else np.zeros(0, dtype=BAR_DTYPE)
        return clip(_finish(bars), start_ms, end_ms)
