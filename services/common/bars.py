"""The one in-memory shape of a price series: a numpy structured array of bars.

Every part of the system (providers, normalisation, the Redis store, analytics) passes
bars around as ``np.ndarray`` with ``BAR_DTYPE``: timestamps are int64 epoch milliseconds
UTC of the bar's *open* time, sorted strictly increasing once normalised.
"""

from __future__ import annotations

import numpy as np

BAR_DTYPE = np.dtype(
    [
        ("ts", "<i8"),  # bar open time, epoch ms UTC
        ("open", "<f8"),
        ("high", "<f8"),
        ("low", "<f8"),
        ("close", "<f8"),
        ("volume", "<f8"),  # base-asset volume
        ("flags", "u1"),  # FLAG_* bits below
    ]
)

FLAG_PARTIAL = 1  # the bar is still open (the provider's current, uncommitted bar)
FLAG_SUSPECT = 2  # an implausible print was flagged (kept, but marked)

PRICE_COLUMNS = ("open", "high", "low", "close")
COLUMNS = tuple(BAR_DTYPE.names)


def empty_bars() -> np.ndarray:
    return np.zeros(0, dtype=BAR_DTYPE)


def make_bars(ts, open_, high, low, close, volume=None, flags=None) -> np.ndarray:
    """Build a bar array from column sequences (no validation, no sorting)."""
    ts = np.asarray(ts, dtype=np.int64)
    out = np.zeros(len(ts), dtype=BAR_DTYPE)
    out["ts"] = ts
    out["open"] = open_
    out["high"] = high
    out["low"] = low
    out["close"] = close
    out["volume"] = 0.0 if volume is None else volume
    out["flags"] = 0 if flags is None else flags
    return out


def find_gaps(ts: np.ndarray, interval_ms: int) -> list[tuple[int, int]]:
    """Missing bars in a sorted timestamp array, as (first_missing_ms, last_missing_ms) pairs.

    Gaps are reported, never filled.
    """
    if len(ts) < 2:
        return []
    steps = np.diff(ts)
    where = np.nonzero(steps > interval_ms)[0]
    return [(int(ts[i]) + interval_ms, int(ts[i + 1]) - interval_ms) for i in where]
