"""GetStats kept up to date bar by bar: the metric set of one window, updated when the window
gains bars at its end or loses bars at its start, instead of recomputed over a year of bars.

The window is split into a *body* (every bar but the newest) and the newest bar, the one a live
stream keeps rewriting. The body changes only when bars join it (the newest bar is followed by
another) or leave it (the window slides); the newest bar is folded in for each answer.

Kept for the body: the sum of prices, sums of shifted returns (mean, variance) and of squared
losses (downside), monotonic queues for the min/max of prices and returns, the sorted returns
(VaR, CVaR), the deepest drawdown with its peak, and the gaps. An update costs O(changed bars)
plus a memmove of the sorted returns; only a drawdown whose peak leaves the window is recomputed
over the window. Values equal ``analytics.compute_stats`` to ~1e-12 (tests hold them to 1e-9);
sums are rebuilt from scratch every REBUILD_OPS updates so rounding cannot drift.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from prometheus_client import Counter

from services.common import analytics
from services.common.analytics import _TINY
from services.common.bars import find_gaps
from services.common.intervals import interval_ms, periods_per_year
from services.common.series import Series, Stamp
from services.core.pair_returns import PairReturns

KEPT_STATS = Counter("cryptolens_core_kept_stats_total",
                     "GetStats windows: the kept one updated, rebuilt, or fully computed (not keepable)",
                     ["result"])

REBUILD_OPS = 20_000  # bars added or dropped before the sums are recomputed exactly
MAX_STEP_BARS = 2048  # a bigger change than this is cheaper to rebuild


def _min_queue(x: np.ndarray, offset: int) -> deque:
    """Monotonic queue of (position, value) for a sliding minimum; the front is the first minimum."""
    after = np.append(np.minimum.accumulate(x[::-1])[::-1][1:], np.inf)
    idx = np.flatnonzero(x <= after)
    return deque(zip((idx + offset).tolist(), x[idx].tolist()))


def _max_queue(x: np.ndarray, offset: int) -> deque:
    after = np.append(np.maximum.accumulate(x[::-1])[::-1][1:], -np.inf)
    idx = np.flatnonzero(x >= after)
    return deque(zip((idx + offset).tolist(), x[idx].tolist()))


def _push_min(q: deque, pos: int, value: float) -> None:
    while q and q[-1][1] > value:
        q.pop()
    q.append((pos, value))


def _push_max(q: deque, pos: int, value: float) -> None:
    while q and q[-1][1] < value:
        q.pop()
    q.append((pos, value))


def _drop(q: deque, pos: int) -> None:
    if q and q[0][0] == pos:
        q.popleft()


def _at(series: Series, p: int) -> tuple[int, float]:
    """(open time, close) of the bar at position p."""
    h = len(series.head_ts)
    if p < h:
        return int(series.head_ts[p]), float(series.head_close[p])
    return int(series.tail_ts[p - h]), float(series.tail_close[p - h])


def _valid(close: float) -> bool:
    return math.isfinite(close) and close > 0


class WindowStats:
    """The metric set of bars [i, j) of a series, kept for the next version of that series."""

    def __init__(self, series: Series, i: int, j: int, ts: np.ndarray, close: np.ndarray, step_ms: int):
        """Everything from the window's arrays ``ts``/``close`` (the cost of a full computation, once)."""
        body_ts, body = ts[:-1], close[:-1]
        self.stamp: Stamp | None = series.stamp
        self.step_ms = step_ms
        self.i, self.j = i, j
        self.ops = 0
        r = body[1:] / body[:-1] - 1.0
        self.shift = float(r.mean())
        dev = r - self.shift
        self.sum_p = float(body.sum())
        self.s1, self.s2 = float(dev.sum()), float(dev @ dev)
        loss = np.minimum(r, 0.0)
        self.s_down, self.n_down = float(loss @ loss), int(np.count_nonzero(r < 0))
        self.pmin, self.pmax = _min_queue(body, i), _max_queue(body, i)
        self.rmin, self.rmax = _min_queue(r, i + 1), _max_queue(r, i + 1)
        self.sorted = np.empty(len(r) + max(1024, len(r) // 16))
        self.m = len(r)
        self.sorted[:self.m] = np.sort(r)
        self._deepest(body)
        self.gaps = deque((int(g) + 1 + i, (int(body_ts[g]) + step_ms, int(body_ts[g + 1]) - step_ms))
                          for g in np.flatnonzero(np.diff(body_ts) > step_ms))

    @classmethod
    def build(cls, series: Series, i: int, j: int, step_ms: int) -> WindowStats | None:
        """None when the window is too short or not clean (invalid prices, unsorted times): those
        take the full computation, which drops and sorts."""
        if j - i < 3:
            return None
        ts, close = series.span(i, j)
        if not (np.all(np.isfinite(close)) and np.all(close > 0) and np.all(ts[1:] > ts[:-1])):
            return None
        KEPT_STATS.labels("rebuilt").inc()
        return cls(series, i, j, ts, close, step_ms)

    @property
    def nbytes(self) -> int:
        queued = len(self.pmin) + len(self.pmax) + len(self.rmin) + len(self.rmax) + len(self.gaps)
        return self.sorted.nbytes + 100 * queued

    def _deepest(self, body: np.ndarray) -> None:
        """The body's deepest drawdown (first one on ties), from its prices."""
        peaks = np.maximum.accumulate(body)
        dd = body / peaks - 1.0
        k = int(dd.argmin())
        self.dd, self.dd_pos, self.dd_peak = float(dd[k]), self.i + k, float(peaks[k])

    # --- updates ---------------------------------------------------------------------------
    def advance(self, series: Series, i: int, j: int) -> bool:
        """Move to bars [i, j) of ``series``; False when that cannot be done cheaply and exactly
        (the body's bars changed, the window shrank or jumped, a bar is invalid): this object
        is then not to be used again."""
        i0, j0 = self.i, self.j
        if self.stamp is None or series.stamp is None:
            return False
        if series.stamp == self.stamp and (i, j) == (i0, j0):
            return True
        added, dropped = j - j0, i - i0
        if (added < 0 or dropped < 0 or added + dropped > MAX_STEP_BARS or self.ops + added + dropped > REBUILD_OPS
                or i > j0 - 3 or j - i < 3 or series.unchanged_since(self.stamp) < j0 - 1):
            return False
        bars = [_at(series, p) for p in range(j0 - 2, j)]  # from the body's last bar to the newest
        if not all(_valid(c) for _, c in bars) or not all(b[0] > a[0] for a, b in zip(bars, bars[1:])):
            return False
        try:
            self._drop_front(series, i0, i)
        except LookupError:
            return False  # half updated: the caller drops this object and rebuilds
        prev_ts, prev = bars[0]
        for p, (t, c) in zip(range(j0 - 1, j - 1), bars[1:-1]):
            self._add(p, t, c, prev_ts, prev)
            prev_ts, prev = t, c
        self.j = j
        self.stamp = series.stamp
        self.ops += added + dropped
        return True

    def _drop_front(self, series: Series, i0: int, i1: int) -> None:
        if i1 == i0:
            return
        peak_left = False
        _, prev = _at(series, i0)
        for q in range(i0, i1):
            _, nxt = _at(series, q + 1)
            self.sum_p -= prev
            _drop(self.pmin, q)
            _drop(self.pmax, q)
            peak_left |= prev >= self.dd_peak
            self._remove_return(q + 1, nxt / prev - 1.0)
            prev = nxt
        self.i = i1
        while self.gaps and self.gaps[0][0] <= i1:
            self.gaps.popleft()
        if self.dd == 0.0:  # no fall anywhere: still none, and the first bar is the first zero
            self.dd_pos, self.dd_peak = i1, _at(series, i1)[1]
        elif peak_left or self.dd_pos < i1:
            self._deepest(series.span(i1, self.j - 1)[1])

    def _remove_return(self, pos: int, r: float) -> None:
        d = r - self.shift
        self.s1 -= d
        self.s2 -= d * d
        if r < 0:
            self.s_down -= r * r
            self.n_down -= 1
        _drop(self.rmin, pos)
        _drop(self.rmax, pos)
        k = int(np.searchsorted(self.sorted[:self.m], r))
        if k == self.m or self.sorted[k] != r:  # cannot happen: the same division gives the same float
            raise LookupError(f"return {r!r} is not among the kept ones")
        self.sorted[k:self.m - 1] = self.sorted[k + 1:self.m]
        self.m -= 1

    def _add(self, p: int, t: int, c: float, prev_ts: int, prev: float) -> None:
        """Bar p (open time t, close c) joins the body after the bar (prev_ts, prev)."""
        r = c / prev - 1.0
        d = r - self.shift
        self.s1 += d
        self.s2 += d * d
        if r < 0:
            self.s_down += r * r
            self.n_down += 1
        _push_min(self.rmin, p, r)
        _push_max(self.rmax, p, r)
        if self.m == len(self.sorted):
            self.sorted = np.concatenate([self.sorted, np.empty(max(1024, self.m // 8))])
        k = int(np.searchsorted(self.sorted[:self.m], r))
        self.sorted[k + 1:self.m + 1] = self.sorted[k:self.m]
        self.sorted[k] = r
        self.m += 1
        self.sum_p += c
        _push_min(self.pmin, p, c)
        _push_max(self.pmax, p, c)
        peak = self.pmax[0][1]
        dd = c / peak - 1.0
        if dd < self.dd:
            self.dd, self.dd_pos, self.dd_peak = dd, p, peak
        if t - prev_ts > self.step_ms:
            self.gaps.append((p, (prev_ts + self.step_ms, t - self.step_ms)))

    # --- the answer ------------------------------------------------------------------------
    def _sorted_with(self, r: float):
        """The k-th smallest of the body's returns and r, for k in [0, m]."""
        at = int(np.searchsorted(self.sorted[:self.m], r))
        return at, (lambda k: float(self.sorted[k]) if k < at else r if k == at else float(self.sorted[k - 1]))

    def values(self, series: Series, periods_per_year: float, risk_free_annual: float) -> dict:
        """The dict of ``analytics.compute_stats`` (without beta), plus the window's gaps."""
        i, last = self.i, self.j - 1
        first_ts, first = _at(series, i)
        prev_ts, prev = _at(series, last - 1)
        t, c = _at(series, last)
        n = last - i + 1
        p = float(periods_per_year)
        out = dict(count=n, first=first, last=c, first_ts=first_ts, last_ts=t, mean=(self.sum_p + c) / n,
                   min=min(self.pmin[0][1], c), max=max(self.pmax[0][1], c), change=c / first - 1.0, beta=None)
        peak = max(self.pmax[0][1], c)
        current = c / peak - 1.0
        if current < self.dd:
            out.update(max_drawdown=current, max_drawdown_ts=t)
        else:
            out.update(max_drawdown=self.dd, max_drawdown_ts=_at(series, self.dd_pos)[0])
        out["current_drawdown"] = current

        r = c / prev - 1.0
        m = self.m + 1
        worst_pos, worst = self.rmin[0]
        if r < worst:
            worst, worst_ts = r, t
        else:
            worst_ts = _at(series, worst_pos)[0]
        best = max(self.rmax[0][1], r)
        out.update(worst_return=worst, worst_return_ts=worst_ts, best_return=best)
        s1 = self.s1 + (r - self.shift)
        s2 = self.s2 + (r - self.shift) ** 2
        mean_r = self.shift + s1 / m
        var = max(0.0, (s2 - s1 * s1 / m) / (m - 1))
        vol = _std(var, mean_r, max(abs(worst), abs(best)))
        out.update(volatility=vol, annualized_volatility=None if vol is None else vol * math.sqrt(p))
        rf = (1.0 + risk_free_annual) ** (1.0 / p) - 1.0
        if rf == 0.0:
            excess_mean, excess_std = mean_r, vol
        else:
            excess_mean = mean_r - rf
            excess_std = _std(var, excess_mean, max(abs(worst - rf), abs(best - rf)))
        out["sharpe"] = None if excess_std is None else excess_mean / excess_std * math.sqrt(p)
        out["downside_deviation"] = out["sortino"] = None
        if self.n_down or r < 0:
            dd_sq = (self.s_down + min(r, 0.0) ** 2) / m
            downside = math.sqrt(dd_sq) * math.sqrt(p)
            out.update(downside_deviation=downside, sortino=mean_r * p / downside)
        out["var_95"], out["cvar_95"] = self._var_cvar(r, m, mean_r)
        gaps = [g for _, g in self.gaps]
        if t - prev_ts > self.step_ms:
            gaps.append((prev_ts + self.step_ms, t - self.step_ms))
        out["gaps"] = gaps
        return out

    def _var_cvar(self, r: float, m: int, mean_r: float) -> tuple[float, float]:
        """As ``analytics.var_cvar`` (numpy's linear percentile) over the body's returns and r."""
        at, kth = self._sorted_with(r)
        virtual = (5 / 100) * (m - 1)
        lo = int(math.floor(virtual))
        gamma = virtual - lo
        a = kth(lo)
        b = kth(min(lo + 1, m - 1))
        diff = b - a
        var = b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma
        k = int((m - 1) * 0.05) + 1
        if k >= m:
            return var, mean_r
        tail = float(self.sorted[:k - 1].sum()) + r if at < k else float(self.sorted[:k].sum())
        return var, tail / k


def _std(var: float, mean: float, max_abs: float) -> float | None:
    """As ``analytics._std``: None when the variance is zero up to rounding."""
    scale = max(abs(mean), max_abs, 1e-300)
    if var <= _TINY * scale * scale:
        return None
    return math.sqrt(var)


def stats_values(kept: WindowStats | None, pair: PairReturns | None, series: Series, bench: Series | None,
                 i: int, j: int, interval: str, rf: float) -> tuple[dict, WindowStats | None, PairReturns | None]:
    """GetStats' metric dict for bars [i, j), with beta against ``bench`` when given, and what is
    kept for next time: ``kept`` and ``pair`` brought forward when they can be, else rebuilt. A
    window that cannot be kept (too short, not clean) gets the full computation."""
    step, ppy = interval_ms(interval), periods_per_year(interval)
    if kept is not None and kept.advance(series, i, j):
        KEPT_STATS.labels("updated").inc()
    else:
        kept = WindowStats.build(series, i, j, step)
    if bench is not None and not (pair is not None and pair.advance(series, bench)):
        pair = PairReturns.build(series, bench)
    if kept is not None and (bench is None or pair is not None):
        values = kept.values(series, ppy, rf)
        if pair is not None:
            values["beta"] = pair.beta(series, bench, i, j)
        return values, kept, pair
    KEPT_STATS.labels("full").inc()
    ts, close = series.span(i, j)
    bench_ts = bench_close = None
    if bench is not None:
        bench_ts, bench_close = bench.window(int(ts[0]), int(ts[-1]) + 1)
    values = analytics.compute_stats(ts, close, ppy, rf, bench_ts, bench_close)
    values["gaps"] = find_gaps(ts, step)
    return values, kept, pair
