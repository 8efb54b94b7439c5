"""The offline provider: seeded, crypto-like prices for any window, the same on every call.

How a path is made, so any window is cheap and every call agrees with every other:
- A daily log-price random walk per symbol over a fixed calendar (2010 → 2040), built once and
  memoised: a shared market factor (so symbols are correlated, ~0.6-0.85) plus idiosyncratic
  noise, scaled by volatility regimes (calm / stressed stretches of weeks) and with rare jumps.
- Intraday bars are a Brownian bridge between two consecutive daily levels, drawn from a
  generator keyed by (seed, symbol, interval, day): the daily closes agree across intervals.
Every bar says ``source: simulated``; the bar that is still open is flagged partial.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from functools import lru_cache

import numpy as np

from services.common.bars import BAR_DTYPE, FLAG_PARTIAL, empty_bars
from services.common.intervals import DAY_MS, INTERVAL_MS
from services.fetch.providers.base import Provider

CALENDAR_START_MS = 1_262_304_000_000  # 2010-01-01
CALENDAR_DAYS = 30 * 366
REFERENCE_DAY = (1_767_225_600_000 - CALENDAR_START_MS) // DAY_MS  # 2026-01-01: where levels are pinned

# Typical price level and market beta per base asset; others get a level from their name.
ASSETS = {
    "BTC": (60_000, 1.0), "ETH": (3_000, 1.2), "SOL": (150, 1.5), "XRP": (0.6, 1.1), "BNB": (550, 0.9),
    "ADA": (0.45, 1.3), "DOGE": (0.12, 1.4), "TRX": (0.12, 0.7), "BCH": (350, 1.1), "LTC": (80, 1.0),
    "DOT": (6, 1.3), "AVAX": (30, 1.5), "LINK": (15, 1.3), "MATIC": (0.6, 1.4), "ATOM": (8, 1.2),
    "XLM": (0.1, 1.0), "UNI": (8, 1.3), "ETC": (25, 1.1),
}
QUOTE_FACTOR = {"USD": 1.0, "USDT": 1.0005, "USDC": 0.9995, "EUR": 0.92}
MARKET_DAILY_VOL = 0.025
IDIO_DAILY_VOL = 0.015


def _key(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


@lru_cache(maxsize=8)
def _market(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Daily market factor shocks and the volatility regime, shared by every symbol."""
    rng = np.random.default_rng(_key(seed, "market"))
    shocks = rng.standard_normal(CALENDAR_DAYS)
    # Regimes: a slow random switch between calm (x0.7) and stressed (x2.0) stretches.
    regime = np.ones(CALENDAR_DAYS)
    day = 0
    while day < CALENDAR_DAYS:
        length = int(rng.integers(20, 120))
        regime[day:day + length] = 2.0 if rng.random() < 0.25 else 0.7 + 0.3 * rng.random()
        day += length
    return shocks, regime


@lru_cache(maxsize=64)
def _daily_levels(seed: int, symbol: str) -> np.ndarray:
    """Log price at each day's open, for the whole calendar (length CALENDAR_DAYS + 1)."""
    base, _, quote = symbol.partition("-")
    level, beta = ASSETS.get(base, (1 + _key("level", base) % 100, 1.0))
    shocks, regime = _market(seed)
    rng = np.random.default_rng(_key(seed, "idio", base))
    idio = rng.standard_normal(CALENDAR_DAYS)
    jumps = np.where(rng.random(CALENDAR_DAYS) < 1 / 90, rng.normal(-0.03, 0.09, CALENDAR_DAYS), 0.0)
    daily = regime * (beta * MARKET_DAILY_VOL * shocks + IDIO_DAILY_VOL * idio) + jumps
    daily -= 0.5 * daily.var()  # no drift in the price itself
    path = np.concatenate([[0.0], np.cumsum(daily)])
    return path - path[REFERENCE_DAY] + math.log(level * QUOTE_FACTOR.get(quote, 1.0))


def _day_bars(seed: int, symbol: str, interval: str, day: int, levels: np.ndarray) -> np.ndarray:
    """All bars of one calendar day at an intraday interval: a bridge between two daily levels."""
    step = INTERVAL_MS[interval]
    n = DAY_MS // step
    start_level, end_level = levels[day], levels[day + 1]
    _, regime = _market(seed)
    beta = ASSETS.get(symbol.partition("-")[0], (0, 1.0))[1]
    market = np.random.default_rng(_key(seed, "market", interval, day)).standard_normal(n)
    rng = np.random.default_rng(_key(seed, symbol, interval, day))
    scale = regime[day] / math.sqrt(n)
    steps = scale * (beta * MARKET_DAILY_VOL * market + IDIO_DAILY_VOL * rng.standard_normal(n))
    sigma = scale * 0.03
    walk = np.concatenate([[0.0], np.cumsum(steps)])
    bridge = start_level + walk - np.linspace(0, 1, n + 1) * (walk[-1] - (end_level - start_level))
    opens, closes = np.exp(bridge[:-1]), np.exp(bridge[1:])
    wick = np.abs(rng.normal(0, sigma * 0.6, (2, n)))
    out = np.zeros(n, dtype=BAR_DTYPE)
    out["ts"] = CALENDAR_START_MS + day * DAY_MS + np.arange(n, dtype=np.int64) * step
    out["open"], out["close"] = opens, closes
    out["high"] = np.maximum(opens, closes) * np.exp(wick[0])
    out["low"] = np.minimum(opens, closes) * np.exp(-wick[1])
    out["volume"] = rng.lognormal(0, 0.5, n) * (1 + 40 * np.abs(closes / opens - 1)) * 100 / n * regime[day]
    return out


def _daily_bars(seed: int, symbol: str, first_day: int, last_day: int, levels: np.ndarray) -> np.ndarray:
    days = np.arange(first_day, last_day + 1)
    _, regime = _market(seed)
    rng = np.random.default_rng(_key(seed, symbol, "1d", first_day, last_day))
    opens, closes = np.exp(levels[days]), np.exp(levels[days + 1])
    wick = np.abs(rng.normal(0, 0.012, (2, len(days)))) * regime[days]
    out = np.zeros(len(days), dtype=BAR_DTYPE)
    out["ts"] = CALENDAR_START_MS + days * DAY_MS
    out["open"], out["close"] = opens, closes
    out["high"] = np.maximum(opens, closes) * np.exp(wick[0])
    out["low"] = np.minimum(opens, closes) * np.exp(-wick[1])
    out["volume"] = rng.lognormal(0, 0.4, len(days)) * 100 * regime[days]
    return out


class SimulatedProvider(Provider):
    name = "simulated"
    origin = "simulated"

    def __init__(self, seed: int = 7, now_ms=None):
        self.seed = seed
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))

    def supports(self, symbol: str, interval: str) -> bool:
        return interval in INTERVAL_MS and "-" in symbol

    async def fetch_bars(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> np.ndarray:
        return await asyncio.to_thread(self.bars, symbol, interval, start_ms, end_ms)  # CPU: off the event loop

    def bars(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> np.ndarray:
        """Bars with open time in [start_ms, end_ms), only up to now (the current one partial)."""
        step = INTERVAL_MS[interval]
        now = self._now_ms()
        end_ms = min(end_ms, (now // step + 1) * step)
        start_ms = max(start_ms, CALENDAR_START_MS)
        if start_ms >= end_ms:
            return empty_bars()
        first_day = (start_ms - CALENDAR_START_MS) // DAY_MS
        last_day = min((end_ms - 1 - CALENDAR_START_MS) // DAY_MS, CALENDAR_DAYS - 1)
        levels = _daily_levels(self.seed, symbol)
        if interval == "1d":
            bars = _daily_bars(self.seed, symbol, first_day, last_day, levels)
        else:
            bars = np.concatenate([_day_bars(self.seed, symbol, interval, d, levels)
                                   for d in range(first_day, last_day + 1)])
        bars = bars[(bars["ts"] >= start_ms) & (bars["ts"] < end_ms)]
        if len(bars) and bars["ts"][-1] + step > now:
            bars["flags"][-1] |= FLAG_PARTIAL
        return bars
