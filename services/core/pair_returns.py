"""Beta kept across versions: the returns of a series and of its benchmark on the timestamps both
have, as prefix sums, so the beta of any window is a few subtractions.

A write to either series changes only returns after the last bar it left unchanged (``Series.
lineage``); those are cut off and recomputed from the bars after it. Beta over a window uses the
returns whose both bars lie in it, as ``analytics._beta`` does on the window's arrays; a window
whose benchmark variance is near zero takes that exact function instead.
"""

from __future__ import annotations

import numpy as np

from services.common import analytics
from services.common.series import Series, Stamp

MAX_RECOMPUTE_BARS = 8192  # more changed bars than this: rebuilt instead
_NEAR_ZERO = 1e-6  # relative benchmark variance below which the exact function decides


class _Column:
    """A growable 1-D array: ``view`` is its first ``n`` values."""

    def __init__(self, values: np.ndarray):
        self.data = np.empty(len(values) + max(1024, len(values) // 16), dtype=values.dtype)
        self.data[:len(values)] = values
        self.n = len(values)

    @property
    def view(self) -> np.ndarray:
        return self.data[:self.n]

    def cut_extend(self, keep: int, values: np.ndarray) -> None:
        end = keep + len(values)
        if end > len(self.data):
            grown = np.empty(end + max(1024, end // 8), dtype=self.data.dtype)
            grown[:keep] = self.data[:keep]
            self.data = grown
        self.data[keep:end] = values
        self.n = end


def _returns(ts: np.ndarray, close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ts[1:], close[1:] / close[:-1] - 1.0


def _clean(ts: np.ndarray, close: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(close)) and np.all(close > 0) and np.all(ts[1:] > ts[:-1]))


class PairReturns:
    def __init__(self, a: Series, b: Series, common: np.ndarray, ra: np.ndarray, rb: np.ndarray):
        self.stamps: tuple[Stamp | None, Stamp | None] = (a.stamp, b.stamp)
        self.ts = _Column(common)
        # Prefix sums: sums[k] is the sum over the first k common returns.
        self.sums = [_Column(np.concatenate([[0.0], np.cumsum(x)])) for x in (ra, rb, ra * rb, rb * rb)]

    @classmethod
    def build(cls, a: Series, b: Series) -> PairReturns | None:
        """None when either series is not clean (the full computation drops and sorts)."""
        (ts_a, close_a), (ts_b, close_b) = a.span(0, len(a)), b.span(0, len(b))
        if not (_clean(ts_a, close_a) and _clean(ts_b, close_b)):
            return None
        return cls(a, b, *_common(ts_a, close_a, ts_b, close_b))

    @property
    def nbytes(self) -> int:
        return self.ts.data.nbytes + sum(s.data.nbytes for s in self.sums)

    def advance(self, a: Series, b: Series) -> bool:
        """Bring to the new versions of both series; False when they are not derived from ours or
        changed too much (nothing changed then)."""
        if (a.stamp, b.stamp) == self.stamps:
            return True
        if None in self.stamps:
            return False
        ua, ub = a.unchanged_since(self.stamps[0]), b.unchanged_since(self.stamps[1])
        if ua == 0 or ub == 0:
            return False
        # Returns up to the last unchanged bar of each series are unchanged.
        cut = min(int(a.span(ua - 1, ua)[0][0]), int(b.span(ub - 1, ub)[0][0]))
        parts = []
        for s in (a, b):
            start = max(0, s.index(cut + 1) - 1)  # the last bar at or before the cut, then all after
            if len(s) - start > MAX_RECOMPUTE_BARS:
                return False
            ts, close = s.span(start, len(s))
            if not _clean(ts, close):
                return False
            parts.append((ts, close))
        common, ra, rb = _common(*parts[0], *parts[1])
        keep = int(np.searchsorted(self.ts.view, cut, "right"))
        self.ts.cut_extend(keep, common)
        for column, x in zip(self.sums, (ra, rb, ra * rb, rb * rb)):
            column.cut_extend(keep + 1, column.data[keep] + np.cumsum(x))
        self.stamps = (a.stamp, b.stamp)
        return True

    def beta(self, a: Series, b: Series, i: int, j: int) -> float | None:
        """Beta of bars [i, j) of ``a`` against the benchmark's bars in the same time range."""
        first_ms, last_ms = int(a.span(i, i + 1)[0][0]), int(a.span(j - 1, j)[0][0])
        bi, bj = b.bounds(first_ms, last_ms + 1)
        if bj - bi < 3:
            return None
        b_first = int(b.span(bi, bi + 1)[0][0])
        ts = self.ts.view
        lo = int(np.searchsorted(ts, max(first_ms, b_first), "right"))  # both bars of a return inside
        hi = int(np.searchsorted(ts, last_ms, "right"))
        n = hi - lo
        if n < 2:
            return None
        sa, sb, sab, sbb = (float(s.data[hi] - s.data[lo]) for s in self.sums)
        var_b = sbb - sb * sb / n
        if var_b <= _NEAR_ZERO * sbb:
            ts_a, close_a = a.span(i, j)
            ts_b, close_b = b.span(bi, bj)
            return analytics._beta(ts_a, close_a[1:] / close_a[:-1] - 1.0, ts_b, close_b)
        return (sab - sa * sb / n) / var_b


def _common(ts_a, close_a, ts_b, close_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Timestamps where both series have a return, and the two returns there."""
    ta, ra = _returns(ts_a, close_a)
    tb, rb = _returns(ts_b, close_b)
    common, ia, ib = np.intersect1d(ta, tb, assume_unique=True, return_indices=True)
    return common, ra[ia], rb[ib]
