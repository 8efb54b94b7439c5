"""Symbols, bar intervals and time windows: parsing and validation shared by every service."""

from __future__ import annotations

import re
from typing import NamedTuple

from services.common.errors import InvalidArgument, short

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
YEAR_DAYS = 365  # crypto trades 24/7: annualise on a 365-day year
MAX_LOOKBACK_MS = 100 * YEAR_DAYS * DAY_MS  # longer is no window but a typo (and overflows int64 ms)

INTERVAL_MS = {
    "1m": MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "1h": HOUR_MS,
    "4h": 4 * HOUR_MS,
    "1d": DAY_MS,
}

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,12}-[A-Z0-9]{2,8}$")
_LOOKBACK_RE = re.compile(r"^(\d+)(m|h|d|w|y)$")
_LOOKBACK_UNIT_MS = {"m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS, "y": YEAR_DAYS * DAY_MS}


def check_symbol(symbol: str, field: str = "symbol") -> str:
    """Canonical BASE-QUOTE symbol, upper case (``btc-usd`` is accepted as ``BTC-USD``)."""
    canonical = (symbol or "").strip().upper()
    if not _SYMBOL_RE.match(canonical):
        raise InvalidArgument(field, f"{short(symbol)} is not a BASE-QUOTE symbol such as 'BTC-USD'")
    return canonical


def check_interval(interval: str, field: str = "interval") -> str:
    if interval not in INTERVAL_MS:
        raise InvalidArgument(field, f"{short(interval)} is not one of {' '.join(INTERVAL_MS)}")
    return interval


def interval_ms(interval: str) -> int:
    return INTERVAL_MS[check_interval(interval)]


def periods_per_year(interval: str) -> float:
    """Bars per 365-day year: 1d → 365, 1h → 8760, 1m → 525600."""
    return YEAR_DAYS * DAY_MS / interval_ms(interval)


def parse_lookback(text: str, field: str = "lookback") -> int:
    """'24h', '30d', '1y', '90m', '2w' → milliseconds."""
    match = _LOOKBACK_RE.match((text or "").strip())
    if not match or int(match.group(1)) <= 0:
        raise InvalidArgument(field, f"{short(text)} is not a lookback such as '24h', '30d' or '1y'")
    span = int(match.group(1)) * _LOOKBACK_UNIT_MS[match.group(2)]
    if span > MAX_LOOKBACK_MS:
        raise InvalidArgument(field, f"{short(text)} is longer than {MAX_LOOKBACK_MS // (YEAR_DAYS * DAY_MS)} years")
    return span


class Window(NamedTuple):
    """A half-open time range [start_ms, end_ms) of bar open times; None means unbounded.
    (A tuple: it is part of every cache key, and a tuple hashes and compares in C.)"""

    start_ms: int | None
    end_ms: int | None


def resolve_window(
    lookback: str, start_ms: int | None, end_ms: int | None, now_ms: int, latest_ms: int | None = None
) -> Window:
    """Turn a request's lookback or start/end into a concrete window.

    A lookback counts back from ``end`` if given, else from the newest stored bar
    (``latest_ms``, so a replayed historical file still has a meaningful "last 30d"), else now.
    """
    if lookback and start_ms is not None:
        raise InvalidArgument("lookback", "give either lookback or start, not both")
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise InvalidArgument("end", "end must be after start (the window is empty or inverted)")
    if lookback:
        span = parse_lookback(lookback)
        anchor = end_ms if end_ms is not None else (latest_ms + 1 if latest_ms is not None else now_ms)
        return Window(anchor - span, anchor)
    return Window(start_ms, end_ms)
