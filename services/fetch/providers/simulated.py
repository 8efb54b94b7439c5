"""The offline provider: seeded, crypto-like prices for any window, the same on every call.

How a path is made, so any window is cheap and every call agrees with every other:
- A daily log-price random walk per symbol over a fixed calendar (2010 → 2040), built once and
  memoised: a shared market factor (so symbols are correlated, ~0.6-0.85) plus idiosyncratic
  noise, scaled by volatility regimes (calm / stressed stretches of weeks) and with rare jumps.
- Within a day, 1-minute bars are a Brownian bridge between two consecutive daily levels, drawn
  from a generator keyed by (seed, symbol, day). Every other interval is rolled up from those
  minutes (open = first open, high = max, low = min, close = last close, volume = sum): one
  price per instant whatever the interval, so a 1h close is the close of its last minute and a
  1d bar is the aggregate of its 1440 minutes, as with a real exchange.
- The bar still open is rolled up from the minutes opened so far (the last one partial) and
  flagged partial. Every bar says ``source: simulated``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from functools import lru_cache

import numpy as np

from services.common.bars import BAR_DTYPE, FLAG_PARTIAL, empty_bars
from services.common.intervals import DAY_MS, INTERVAL_MS, MINUTE_MS
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


MINUTES_PER_DAY = DAY_MS // MINUTE_MS
DAYS_PER_BLOCK = 32  # days generated at once: vectorised, and bounded memory for long windows


def _minute_paths(seed: int, symbol: str, days: np.ndarray, levels: np.ndarray) -> dict[str, np.ndarray]:
    """Open, high, low, close and volume of every minute of ``days``, as (days, 1440) arrays.

    Each day is a bridge between two daily levels, its noise drawn from generators keyed by
    (seed, symbol, day), so a day's minutes are the same whatever window asked for them."""
    n = MINUTES_PER_DAY
    _, regime = _market(seed)
    beta = ASSETS.get(symbol.partition("-")[0], (0, 1.0))[1]
    market = np.empty((len(days), n))
    idio = np.empty((len(days), n))
    wick = np.empty((len(days), 2, n))
    lognormal = np.empty((len(days), n))
    for row, day in enumerate(days):
        market[row] = np.random.default_rng(_key(seed, "market", "1m", day)).standard_normal(n)
        rng = np.random.default_rng(_key(seed, symbol, "1m", day))
        idio[row] = rng.standard_normal(n)
        wick[row] = np.abs(rng.normal(0, 1, (2, n)))
        lognormal[row] = rng.lognormal(0, 0.5, n)
    scale = (regime[days] / math.sqrt(n))[:, None]
    steps = scale * (beta * MARKET_DAILY_VOL * market + IDIO_DAILY_VOL * idio)
    walk = np.concatenate([np.zeros((len(days), 1)), np.cumsum(steps, axis=1)], axis=1)
    start, end = levels[days][:, None], levels[days + 1][:, None]
    bridge = start + walk - np.linspace(0, 1, n + 1)[None, :] * (walk[:, -1:] - (end - start))
    opens, closes = np.exp(bridge[:, :-1]), np.exp(bridge[:, 1:])
    sigma = scale * 0.03 * 0.6
    return {"open": opens, "close": closes,
            "high": np.maximum(opens, closes) * np.exp(sigma * wick[:, 0]),
            "low": np.minimum(opens, closes) * np.exp(-sigma * wick[:, 1]),
            "volume": lognormal * (1 + 40 * np.abs(closes / opens - 1)) * 100 / n * regime[days][:, None]}


def _rolled(paths: dict[str, np.ndarray], days: np.ndarray, step: int, minutes_open: int) -> np.ndarray:
    """Bars of ``step`` ms from (days, 1440) minute paths; only the first ``minutes_open`` minutes
    of the last day exist yet (the rest open after now)."""
    k = step // MINUTE_MS
    per_day = MINUTES_PER_DAY // k
    shaped = {c: v.reshape(len(days), per_day, k) for c, v in paths.items()}
    out = np.zeros((len(days), per_day), dtype=BAR_DTYPE)
    out["ts"] = CALENDAR_START_MS + days[:, None] * DAY_MS + np.arange(per_day)[None, :] * step
    out["open"], out["close"] = shaped["open"][..., 0], shaped["close"][..., -1]
    out["high"], out["low"] = shaped["high"].max(-1), shaped["low"].min(-1)
    out["volume"] = shaped["volume"].sum(-1)
    out = out.reshape(-1)
    if minutes_open < MINUTES_PER_DAY:  # the day of now: its open bar is rolled up from the minutes so far
        last = len(out) - per_day + (minutes_open - 1) // k
        first_minute = (minutes_open - 1) // k * k
        sl = {c: v[-1, first_minute:minutes_open] for c, v in paths.items()}
        out[last] = (out["ts"][last], sl["open"][0], sl["high"].max(), sl["low"].min(), sl["close"][-1],
                     sl["volume"].sum(), 0)
        out = out[:last + 1]
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
        now_day = (now - CALENDAR_START_MS) // DAY_MS
        blocks = []
        for first in range(first_day, last_day + 1, DAYS_PER_BLOCK):
            days = np.arange(first, min(first + DAYS_PER_BLOCK, last_day + 1))
            minutes_open = ((now - CALENDAR_START_MS) % DAY_MS) // MINUTE_MS + 1 if days[-1] == now_day else \
                MINUTES_PER_DAY
            blocks.append(_rolled(_minute_paths(self.seed, symbol, days, levels), days, step, minutes_open))
        bars = np.concatenate(blocks)
        bars = bars[(bars["ts"] >= start_ms) & (bars["ts"] < end_ms)]
        if len(bars) and bars["ts"][-1] + step > now:
            bars["flags"][-1] |= FLAG_PARTIAL
        return bars
