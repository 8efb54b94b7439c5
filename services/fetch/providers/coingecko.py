"""CoinGecko: bars built from ``/coins/{id}/market_chart/range`` price points, and spot prices.

The base URL includes ``/api/v3`` (public ``https://api.coingecko.com/api/v3``, paid
``https://pro-api.coingecko.com/api/v3``). An API key goes in ``x-cg-pro-api-key`` for the pro
host (or ``pro=True``) and in ``x-cg-demo-api-key`` otherwise.

CoinGecko has no candles; it returns ``[ms, value]`` points whose spacing it picks from the
span of the request (range <= 1 day: 5-minutely, up to 90 days: hourly, more: daily at 00:00
UTC). So a range is asked for in chunks small enough for the interval wanted (5m/15m: 1 day,
1h/4h: 90 days, 1d: 365 days, the documented maximum per call), and bars are built from the
points: each point is floored to its bar, open = first point, close = last point, high/low =
max/min of the points in the bar. These are bars *from samples*, coarser than exchange
candles (a 1d bar from one 00:00 point is flat). If CoinGecko answers more coarsely than the
interval needs (the keyless API gives hourly points for past single days) the request is
``Unsupported`` so a chain moves on, rather than returning a series of holes.

``total_volumes`` is a rolling 24 h volume in the quote currency, not a per-bar volume; the
bar volume is an estimate: that 24 h volume in base units (÷ close) scaled to the bar length.
Missing ``total_volumes`` or ``market_caps`` (as in a truncated body) leave the volume at 0.
1m bars are not offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from services.common.bars import BAR_DTYPE
from services.common.errors import InvalidArgument
from services.common.intervals import DAY_MS, INTERVAL_MS, check_symbol
from services.fetch.providers.base import BadResponse, RateLimited, Unsupported
from services.fetch.providers.http import HttpProvider, _finish, as_float, ceil_to, clip, flag_open, wall_clock_ms

DEFAULT_URL = "https://api.coingecko.com/api/v3"
PRO_URL = "https://pro-api.coingecko.com/api/v3"

COIN_IDS = {
    "BTC": "bitcoin", "ETH": "ethereum", "SOL": "solana", "XRP": "ripple", "BNB": "binancecoin",
    "ADA": "cardano", "DOGE": "dogecoin", "TRX": "tron", "BCH": "bitcoin-cash", "LTC": "litecoin",
    "DOT": "polkadot", "AVAX": "avalanche-2", "LINK": "chainlink", "MATIC": "matic-network",
    "ATOM": "cosmos", "XLM": "stellar", "UNI": "uniswap", "ETC": "ethereum-classic",
}
VS_CURRENCIES = {"USD": "usd", "EUR": "eur", "GBP": "gbp", "JPY": "jpy", "BTC": "btc", "ETH": "eth"}

# Longest request span per interval so CoinGecko's automatic granularity is fine enough.
CHUNK_DAYS = {"5m": 1, "15m": 1, "1h": 90, "4h": 90, "1d": 365}


@dataclass(frozen=True)
class SpotPrice:
    symbol: str
    price: float
    ts_ms: int | None  # CoinGecko's last_updated_at (seconds on the wire), if it sent one


def parse_points(payload: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(price ts, prices, volume ts, volumes) of one market_chart body; volume arrays may be empty."""
    if not isinstance(payload, dict):
        raise ValueError(f"market_chart body is not an object: {str(payload)[:80]}")
    status = payload.get("status")
    if isinstance(status, dict) and status.get("error_code"):  # an error object sent with 200
        if status.get("error_code") == 429:
            raise RateLimited("coingecko", f"market_chart: {status.get('error_message', '')}")
        raise BadResponse("coingecko", f"market_chart: error {status.get('error_code')}: {status.get('error_message')}")
    if "prices" not in payload:
        raise ValueError(f"market_chart body has no 'prices' (keys: {', '.join(payload) or 'none'})")
    ts, prices = _pairs(payload["prices"], "prices")
    vts, volumes = _pairs(payload.get("total_volumes", []), "total_volumes")
    return ts, prices, vts, volumes


def _pairs(rows: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(rows, list):
        raise ValueError(f"'{what}' is not a list")
    ts = np.zeros(len(rows), dtype=np.int64)
    values = np.full(len(rows), np.nan)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 2:
            raise ValueError(f"{what}[{i}] is not a [ms, value] pair")
        ts[i] = int(as_float(row[0]))
        if row[1] is not None:  # CoinGecko sends null for a missing value
            values[i] = as_float(row[1])
    return ts, values


def _last_per_bucket(ts: np.ndarray, values: np.ndarray, step_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Buckets (sorted) and the last value in each, for time-sorted input."""
    buckets = ts - ts % step_ms
    unique, first_of_reversed = np.unique(buckets[::-1], return_index=True)
    return unique, values[::-1][first_of_reversed]


def bars_from_points(ts: np.ndarray, prices: np.ndarray, vts: np.ndarray, volumes: np.ndarray,
                     step_ms: int) -> np.ndarray:
    """Bars from price samples: each point floored to its bar; O/C first/last, H/L max/min."""
    good = np.isfinite(prices) & (prices > 0)
    ts, prices = ts[good], prices[good]
    if len(ts) == 0:
        return np.zeros(0, dtype=BAR_DTYPE)
    order = np.argsort(ts, kind="stable")
    ts, prices = ts[order], prices[order]
    buckets = ts - ts % step_ms
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(ts)] - 1
    bars = np.zeros(len(starts), dtype=BAR_DTYPE)
    bars["ts"] = buckets[starts]
    bars["open"] = prices[starts]
    bars["close"] = prices[ends]
    bars["high"] = np.maximum.reduceat(prices, starts)
    bars["low"] = np.minimum.reduceat(prices, starts)
    vgood = np.isfinite(volumes) & (volumes >= 0)
    if vgood.any():
        vts, volumes = vts[vgood], volumes[vgood]
        vorder = np.argsort(vts, kind="stable")
        vbuckets, vlast = _last_per_bucket(vts[vorder], volumes[vorder], step_ms)
        where = np.searchsorted(vbuckets, bars["ts"])
        found = (where < len(vbuckets)) & (vbuckets[np.minimum(where, len(vbuckets) - 1)] == bars["ts"])
        quote_24h = np.where(found, vlast[np.minimum(where, len(vbuckets) - 1)], 0.0)
        bars["volume"] = quote_24h / bars["close"] * (step_ms / DAY_MS)
    return bars


def median_spacing_ms(ts: np.ndarray) -> float:
    return float(np.median(np.diff(np.sort(ts)))) if len(ts) >= 3 else 0.0


class CoinGeckoProvider(HttpProvider):
    name = "coingecko"

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        pro: bool = False,
        coin_ids: Mapping[str, str] | None = None,
        now_ms: Callable[[], int] = wall_clock_ms,
        **http_kwargs,
    ):
        base_url = base_url or (PRO_URL if pro else DEFAULT_URL)
        pro = pro or "pro-api." in base_url
        headers = {}
        if api_key:
            headers["x-cg-pro-api-key" if pro else "x-cg-demo-api-key"] = api_key
        super().__init__(base_url, headers=headers, now_ms=now_ms, **http_kwargs)
        # Which default request budget applies (resilience.DEFAULT_LIMITS).
        self.rate_key = "coingecko-pro" if pro and api_key else "coingecko-demo" if api_key else "coingecko"
        self.coin_ids = {**COIN_IDS, **(coin_ids or {})}

    def _ids(self, symbol: str) -> tuple[str, str] | None:
        base, _, quote = symbol.partition("-")
        coin, vs = self.coin_ids.get(base), VS_CURRENCIES.get(quote)
        return (coin, vs) if coin and vs else None

    def supports(self, symbol: str, interval: str) -> bool:
        try:
            check_symbol(symbol)
        except InvalidArgument:
            return False
        return interval in CHUNK_DAYS and self._ids(symbol) is not None

    async def fetch_bars(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> np.ndarray:
        if not self.supports(symbol, interval):
            raise Unsupported(self.name, f"{symbol} {interval} is not served")
        coin, vs = self._ids(symbol)
        step_ms = INTERVAL_MS[interval]
        chunk_ms = CHUNK_DAYS[interval] * DAY_MS
        # Whole bars only: from the first bar opening at/after start to the end of the bar holding end-1.
        first, stop = ceil_to(start_ms, step_ms), ceil_to(end_ms, step_ms)
        parts: list[tuple[np.ndarray, ...]] = []
        cursor = first
        while cursor < stop:
            chunk_end = min(cursor + chunk_ms, stop)
            params = {"vs_currency": vs, "from": cursor // 1000, "to": (chunk_end - 1) // 1000}
            points = await self.request("market_chart_range", f"/coins/{coin}/market_chart/range", params,
                                        parse_points)
            spacing = median_spacing_ms(points[0])
            if spacing > 1.5 * step_ms:
                raise Unsupported(self.name, f"{coin} points are {spacing / 60000:.0f} min apart for "
                                             f"{interval} bars in this range (finer data is a paid feature)")
            parts.append(points)
            cursor = chunk_end
        if not parts:
            return np.zeros(0, dtype=BAR_DTYPE)
        ts, prices, vts, volumes = (np.concatenate([p[i] for p in parts]) for i in range(4))
        bars = clip(_finish(bars_from_points(ts, prices, vts, volumes, step_ms)), start_ms, end_ms)
        return flag_open(bars, step_ms, self.now_ms())

    async def spot_price(self, symbol: str) -> SpotPrice:
        """Latest price from ``/simple/price`` (CoinGecko refreshes it about once a minute)."""
        ids = self._ids(symbol)
        if ids is None:
            raise Unsupported(self.name, f"{symbol} has no CoinGecko id or currency")
        coin, vs = ids

        def parse(payload: Any) -> SpotPrice:
            if not isinstance(payload, dict):
                raise ValueError("simple/price body is not an object")
            if coin not in payload:
                raise BadResponse(self.name, f"simple_price: answer is for {', '.join(payload) or 'nothing'}, "
                                             f"not {coin}")
            entry = payload[coin]
            if not isinstance(entry, dict) or vs not in entry:
                raise ValueError(f"simple/price has no {vs} price for {coin}")
            price = as_float(entry[vs])
            if not np.isfinite(price) or price <= 0:
                raise ValueError(f"simple/price {coin}/{vs} is not a positive price: {price}")
            updated = entry.get("last_updated_at")
            return SpotPrice(symbol, price, int(as_float(updated)) * 1000 if updated is not None else None)

        params = {"ids": coin, "vs_currencies": vs, "include_last_updated_at": "true"}
        return await self.request("simple_price", "/simple/price", params, parse)
