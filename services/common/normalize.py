"""Normalisation of raw bars from any source into the one clean shape. Pure, vectorised.

The rules (docs/normalization.md explains each with the real files that need it):
- Timestamps: the unit is decided per value by magnitude (files mix units row by row):
  < 1e11 seconds (integer or float), < 1e14 milliseconds, < 1e17 microseconds, else nanoseconds;
  ISO-8601 strings are parsed as UTC (a naive one is UTC). Anything outside 1990-2200 is invalid.
- Every time is floored to its bar's open on the interval grid (CoinGecko's points drift).
- Invalid rows are dropped: a price that is NaN, infinite or <= 0, high < low, negative volume, and
  a bar that opens more than MAX_FUTURE_MS after the clock (a hostile or broken source must never
  anchor "the last 30 days" in the year 2200).
  Open and close outside [low, high] widen the range (sources round differently).
- Duplicates of one bar keep one copy: a complete copy beats a partial one, then the copy with
  more volume (a bar still being built has less), then the first in the source's order.
  Copies that disagree (a price off by more than 0.1 %, or volume by more than 1 %) are conflicts.
- A bar is suspect when its low, high or close is more than 3x away from the median close of the
  21 bars around it, or its open is more than 1.5x away from both the previous close and its own:
  kept (closes feed the analytics), flagged, the bad wick clamped to the body, a bad open replaced
  by the close.
- The newest bar is partial while it is still open (now < open + interval), or when told so.
- Gaps are reported, never filled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from services.common.bars import BAR_DTYPE, FLAG_PARTIAL, FLAG_SUSPECT, find_gaps
from services.common.limits import MAX_FUTURE_MS

MIN_MS = 631_152_000_000  # 1990-01-01
MAX_MS = 7_258_118_400_000  # 2200-01-01
SUSPECT_FACTOR = 3.0
SUSPECT_WINDOW = 21
OPEN_FACTOR = 1.5


def to_epoch_ms(values) -> np.ndarray:
    """Epoch milliseconds (int64) per value; -1 where the value is not a valid time."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iuf":
        return _bounded(_scale(arr.astype(np.float64)))
    text = pd.Series(arr, dtype=object).astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
    out = _scale(numbers)
    iso = np.isnan(numbers)
    if iso.any():
        parsed = pd.to_datetime(text[iso], utc=True, errors="coerce", format="ISO8601")
        ms = parsed.dt.tz_convert(None).to_numpy("datetime64[ms]").astype(np.int64)
        out[iso] = np.where(parsed.isna().to_numpy(), -1, ms)
    return _bounded(out)


def _scale(numbers: np.ndarray) -> np.ndarray:
    magnitude = np.abs(numbers)
    factor = np.select([magnitude < 1e11, magnitude < 1e14, magnitude < 1e17], [1e3, 1.0, 1e-3], 1e-6)
    with np.errstate(invalid="ignore"):
        ms = np.round(numbers * factor)
    return np.where(np.isfinite(ms) & (np.abs(ms) < MAX_MS), ms, -1).astype(np.int64)


def _bounded(ms: np.ndarray) -> np.ndarray:
    return np.where((ms >= MIN_MS) & (ms < MAX_MS), ms, -1)


@dataclass
class NormalizeResult:
    bars: np.ndarray
    dropped_invalid: int = 0  # including dropped_future
    dropped_future: int = 0
    duplicates: int = 0
    conflicts: int = 0
    suspect: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return bool(len(self.bars) and self.bars["flags"][-1] & FLAG_PARTIAL)


def _drop_invalid(raw: np.ndarray, latest_ms: int) -> np.ndarray:
    prices = np.column_stack([raw[c] for c in ("open", "high", "low", "close")])
    valid = (raw["ts"] >= MIN_MS) & (raw["ts"] <= latest_ms)
    valid &= np.isfinite(prices).all(axis=1) & (prices > 0).all(axis=1)
    valid &= raw["high"] >= raw["low"]
    valid &= ~(raw["volume"] < 0)
    out = raw[valid].copy()
    out["volume"] = np.nan_to_num(out["volume"], nan=0.0)
    out["high"] = np.maximum.reduce([out["high"], out["open"], out["close"]])
    out["low"] = np.minimum.reduce([out["low"], out["open"], out["close"]])
    return out


def _dedupe(bars: np.ndarray) -> tuple[np.ndarray, int, int]:
    """One bar per open time (rule in the module docstring); returns (bars, duplicates, conflicts)."""
    partial = (bars["flags"] & FLAG_PARTIAL) > 0
    order = np.lexsort((np.arange(len(bars)), -bars["volume"], partial, bars["ts"]))
    ordered = bars[order]
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = ordered["ts"][1:] != ordered["ts"][:-1]
    duplicates = int((~first).sum())
    conflicts = 0
    if duplicates:
        winner_of = np.cumsum(first) - 1  # index (among winners) of each row's group
        winners = ordered[first]
        losers, their_winner = ordered[~first], winners[winner_of[~first]]
        price_off = np.zeros(len(losers), dtype=bool)
        for c in ("open", "high", "low", "close"):
            price_off |= np.abs(losers[c] / their_winner[c] - 1) > 1e-3
        volume_off = np.abs(losers["volume"] - their_winner["volume"]) > 0.01 * np.maximum(
            their_winner["volume"], 1e-12)
        conflicts = len(np.unique(losers["ts"][price_off | volume_off]))
        return winners, duplicates, conflicts
    return ordered, 0, 0


def _flag_suspect(bars: np.ndarray) -> int:
    if len(bars) < 3:
        return 0
    ref = pd.Series(bars["close"]).rolling(SUSPECT_WINDOW, center=True, min_periods=1).median().to_numpy()
    # An open far from both the previous close and its own close is a bad print, not a move: a real
    # jump opens near the previous close. (Real 2x wicks exist, so the wick alone cannot tell.)
    prev_close = np.concatenate([[ref[0]], bars["close"][:-1]])
    far = lambda a, b: (a > b * OPEN_FACTOR) | (a * OPEN_FACTOR < b)  # noqa: E731
    open_bad = far(bars["open"], prev_close) & far(bars["open"], bars["close"])
    bad_open = bars["open"].copy()
    bars["open"] = np.where(open_bad, bars["close"], bars["open"])
    # A high or low that was set by the bad open goes with it.
    bars["high"] = np.where(open_bad & (bars["high"] == bad_open), bars["close"], bars["high"])
    bars["low"] = np.where(open_bad & (bars["low"] == bad_open), bars["close"], bars["low"])

    low_bad = bars["low"] * SUSPECT_FACTOR < ref
    high_bad = bars["high"] > ref * SUSPECT_FACTOR
    close_bad = (bars["close"] * SUSPECT_FACTOR < ref) | (bars["close"] > ref * SUSPECT_FACTOR)
    # Clamp a bad wick to the bar's body when the body itself is plausible.
    body_lo = np.minimum(bars["open"], bars["close"])
    body_hi = np.maximum(bars["open"], bars["close"])
    body_ok = (body_lo * SUSPECT_FACTOR >= ref) & (body_hi <= ref * SUSPECT_FACTOR)
    bars["low"] = np.where(low_bad & body_ok, body_lo, bars["low"])
    bars["high"] = np.where(high_bad & body_ok, body_hi, bars["high"])
    suspect = open_bad | low_bad | high_bad | close_bad
    bars["flags"][suspect] |= FLAG_SUSPECT
    return int(suspect.sum())


def normalize_bars(raw: np.ndarray, interval_ms: int, now_ms: int | None = None,
                   partial_hint: bool = False) -> NormalizeResult:
    """Clean bars: on the grid, sorted, unique, valid, suspect prints flagged, open bar marked.

    ``now_ms`` is the clock: bars opening after ``now_ms + MAX_FUTURE_MS`` are dropped (without a
    clock only the fixed 1990-2200 bounds apply).
    """
    raw = np.asarray(raw, dtype=BAR_DTYPE)
    latest = MAX_MS if now_ms is None else now_ms + MAX_FUTURE_MS
    future = int((raw["ts"] > latest).sum())
    bars = _drop_invalid(raw, latest)
    dropped = len(raw) - len(bars)
    bars["ts"] -= bars["ts"] % interval_ms
    bars, duplicates, conflicts = _dedupe(bars)
    suspect = _flag_suspect(bars)
    if len(bars) and (partial_hint or (now_ms is not None and now_ms < bars["ts"][-1] + interval_ms)):
        bars["flags"][-1] |= FLAG_PARTIAL
    return NormalizeResult(bars, dropped, future, duplicates, conflicts, suspect, find_gaps(bars["ts"], interval_ms))
