"""Kraken spot OHLC: ``GET /0/public/OHLC?pair=&interval=<minutes>&since=<seconds>``.

Symbols: ``BTC-USD`` → pair ``XBTUSD`` (Kraken calls bitcoin XBT and dogecoin XDG). The
answer is keyed by Kraken's own pair name, which is not the requested one (``XBTUSD`` comes
back as ``XXBTZUSD``), so the single key other than ``last`` is taken and only checked to
be a spelling of the requested pair; an answer for another pair is a ``BadResponse``.

Rows are ``[time, "o", "h", "l", "c", "vwap", "volume", count]`` with ``time`` in epoch
seconds. At most 720 rows per call; ``last`` (an int, sometimes a string) is the newest
committed bar and the next ``since``. Rows newer than ``last`` are the still-open bar
(FLAG_PARTIAL). Kraken serves only its most recent 720 bars per interval: an older start
yields what exists, and the missing head shows up as a gap, never invented.

Errors come inside a normal 200 body (``{"error": ["EAPI:Rate limit exceeded"]}``).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from services.common.bars import BAR_DTYPE, FLAG_PARTIAL
from services.common.intervals import INTERVAL_MS
from services.fetch.providers.base import BadResponse, RateLimited, TemporaryError, Unsupported
from services.fetch.providers.http import HttpProvider, _finish, as_float, clip

DEFAULT_URL = "https://api.kraken.com"
MAX_ROWS = 720
ASSET_CODES = {"BTC": "XBT", "DOGE": "XDG"}
INTERVAL_MINUTES = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "4h": 240, "1d": 1440}

_RATE_LIMIT_ERRORS = ("EAPI:Rate limit exceeded", "EGeneral:Too many requests")
_UNSUPPORTED_ERRORS = ("EQuery:Unknown asset pair", "EGeneral:Invalid arguments")
_TEMPORARY_ERRORS = ("EService:Unavailable", "EService:Busy", "EGeneral:Internal error")


def pair_for(symbol: str) -> tuple[str, str]:
    """(base, quote) in Kraken's asset codes, e.g. ``BTC-USD`` → (``XBT``, ``USD``)."""
    base, _, quote = symbol.partition("-")
    return ASSET_CODES.get(base, base), ASSET_CODES.get(quote, quote)


def key_matches(base: str, quote: str, key: str) -> bool:
    """Is ``key`` Kraken's spelling of base+quote? Legacy assets get an X (crypto) or Z (fiat)
    prefix: XBT+USD → XXBTZUSD, ETH+XBT → XETHXXBT, XBT+USDT → XBTUSDT."""
    return re.fullmatch(rf"X?{re.escape(base)}[XZ]?{re.escape(quote)}", key) is not None


def _raise_errors(errors: list) -> None:
    text = "; ".join(str(e) for e in errors)
    if any(str(e).startswith(_RATE_LIMIT_ERRORS) for e in errors):
        raise RateLimited("kraken", f"ohlc: {text}")
    if any(str(e).startswith(_UNSUPPORTED_ERRORS) for e in errors):
        raise Unsupported("kraken", f"ohlc: {text}")
    if any(str(e).startswith(_TEMPORARY_ERRORS) for e in errors):
        raise TemporaryError("kraken", f"ohlc: {text}")
    raise BadResponse("kraken", f"ohlc: {text}")


def parse_ohlc(payload: Any, base: str, quote: str) -> tuple[np.ndarray, int, int]:
    """One OHLC page: (bars in input order, ``last`` in seconds, raw row count)."""
    if not isinstance(payload, dict) or ("result" not in payload and "error" not in payload):
        raise ValueError("OHLC body is not an {error, result} object")
    errors = payload.get("error") or []
    if not isinstance(errors, list):
        raise ValueError("OHLC 'error' is not a list")
    if errors:
        _raise_errors(errors)
    result = payload.get("result")
    if not isinstance(result, dict):
        raise ValueError("OHLC 'result' is not an object")
    keys = [k for k in result if k != "last"]
    if len(keys) != 1:
        raise ValueError(f"OHLC result has {len(keys)} pair keys ({', '.join(keys) or 'none'}), expected one")
    if not key_matches(base, quote, keys[0]):
        raise BadResponse("kraken", f"ohlc: answer is for pair {keys[0]}, not {base}{quote}")
    if "last" not in result:
        raise ValueError("OHLC result has no 'last'")
    last_s = int(result["last"])  # an int or a numeric string
    rows = result[keys[0]]
    if not isinstance(rows, list):
        raise ValueError("OHLC rows are not a list")
    bars = np.zeros(len(rows), dtype=BAR_DTYPE)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) < 7 or not isinstance(row[0], int):
            raise ValueError(f"OHLC row {i} is not [time, o, h, l, c, vwap, volume, count]: {str(row)[:80]}")
        bars[i] = (
            row[0] * 1000, as_float(row[1]), as_float(row[2]), as_float(row[3]), as_float(row[4]), as_float(row[6]),
            FLAG_PARTIAL if row[0] > last_s else 0,
        )
    return bars, last_s, len(rows)


class KrakenProvider(HttpProvider):
    name = "kraken"
    intervals = INTERVAL_MINUTES

    def __init__(self, base_url: str = DEFAULT_URL, **http_kwargs):
        super().__init__(base_url, **http_kwargs)  # the public endpoint unless told otherwise

    async def fetch_bars(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> np.ndarray:
        if not self.supports(symbol, interval):
            raise Unsupported(self.name, f"{symbol} {interval} is not served")
        base, quote = pair_for(symbol)
        step_ms = INTERVAL_MS[interval]
        pages: list[np.ndarray] = []
        # One second early, so the bar opening exactly at start is included whether Kraken's
        # ``since`` is inclusive or exclusive; extra rows are clipped below.
        since = start_ms // 1000 - 1
        while True:
            params = {"pair": base + quote, "interval": INTERVAL_MINUTES[interval], "since": since}
            bars, last_s, count = await self.request("ohlc", "/0/public/OHLC", params,
                                                     lambda body: parse_ohlc(body, base, quote))
            pages.append(bars)
            if count < MAX_ROWS or last_s <= since or last_s * 1000 + step_ms >= end_ms:
                break  # reached the present, no progress, or the range is covered
            since = last_s
        return clip(_finish(np.concatenate(pages)), start_ms, end_ms)
