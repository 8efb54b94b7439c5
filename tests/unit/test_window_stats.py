"""WindowStats (GetStats kept bar by bar) against the full computation, over random histories of
appends, rewrites of the open bar, slides, gaps, ties and rewrites of older bars."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.common import analytics
from services.common.bars import find_gaps
from services.common.series import Series
from services.core.window_stats import WindowStats, stats_values

STEP = 60_000
PPY = 525_600.0


def _series(ts, close, version, parent: Series | None = None, unchanged: int = 0) -> Series:
    lineage = ((parent.stamp, unchanged),) if parent is not None else ()
    return Series("BTC-USD", "1m", np.asarray(ts, np.int64), np.asarray(close, float), version, "test",
                  ("e", version, version), lineage=lineage)


def _full(series: Series, i: int, j: int, rf: float) -> dict:
    ts, close = series.span(i, j)
    values = analytics.compute_stats(ts, close, PPY, rf)
    values["gaps"] = find_gaps(ts, STEP)
    return values


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() >= want.keys() - {"beta"}
    for name, value in want.items():
        if name == "beta":
            continue
        if value is None or isinstance(value, (list, int)):
            assert got[name] == value, name
        else:
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def _walk(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    ts = np.cumsum(np.where(rng.random(n) < 0.01, 3, 1)).astype(np.int64) * STEP  # some gaps
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    close[rng.random(n) < 0.05] = 100.0  # ties in prices and returns
    return ts, close


@pytest.mark.parametrize("lookback", [None, 1500])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_updates_equal_the_full_computation(seed, lookback):
    rng = np.random.default_rng(seed)
    ts, close = _walk(rng, 3000)
    series = _series(ts, close, 1)
    kept, rebuilt = None, 0
    for version in range(2, 400):
        op = rng.random()
        ts, close = series.ts.copy(), series.close.copy()
        if op < 0.45:  # the open bar's close changes
            close[-1] *= 1 + rng.normal(0, 0.003)
            unchanged = len(ts) - 1
        elif op < 0.9:  # one (sometimes a few) new bars
            k = 1 if rng.random() < 0.8 else int(rng.integers(2, 6))
            new_ts = ts[-1] + STEP * np.arange(1, k + 1) * (3 if rng.random() < 0.05 else 1)
            ts = np.concatenate([ts, new_ts])
            close = np.concatenate([close, close[-1] * np.exp(np.cumsum(rng.normal(0, 0.003, k)))])
            unchanged = len(series)
        elif op < 0.95:  # a rewrite of an older bar: nothing kept may be reused
            at = int(rng.integers(0, len(ts) - 2))
            close[at] *= 1.01
            unchanged = at
        else:  # a crash far below every earlier peak, then more bars
            close[-1] *= 0.7
            unchanged = len(ts) - 1
        series = _series(ts, close, version, series, unchanged)
        j = len(ts)
        i = 0 if lookback is None else j - lookback
        rf = 0.0 if version % 2 else 0.04
        before = kept
        values, kept, _ = stats_values(kept, None, series, None, i, j, "1m", rf)
        rebuilt += kept is not before
        _assert_same(values, _full(series, i, j, rf))
    assert rebuilt < 60  # mostly updated in place, not rebuilt


def test_a_rewrite_behind_the_open_bar_is_never_applied_in_place():
    rng = np.random.default_rng(7)
    ts, close = _walk(rng, 500)
    first = _series(ts, close, 1)
    kept = WindowStats.build(first, 0, len(ts), STEP)
    changed = close.copy()
    changed[-2] *= 1.05
    second = _series(ts, changed, 2, first, len(ts) - 2)
    assert not kept.advance(second, 0, len(ts))
    values, rebuilt, _ = stats_values(kept, None, second, None, 0, len(ts), "1m", 0.0)
    assert rebuilt is not kept
    _assert_same(values, _full(second, 0, len(ts), 0.0))


def test_unclean_or_tiny_windows_take_the_full_computation():
    ts = np.arange(10, dtype=np.int64) * STEP
    close = np.linspace(100, 110, 10)
    close[4] = math.nan
    series = _series(ts, close, 1)
    values, kept, _ = stats_values(None, None, series, None, 0, 10, "1m", 0.0)
    assert kept is None and values["count"] == 9
    _assert_same(values, _full(series, 0, 10, 0.0))
    assert WindowStats.build(series, 0, 2, STEP) is None


def test_a_monotone_rise_keeps_no_drawdown_while_sliding():
    ts = np.arange(200, dtype=np.int64) * STEP
    close = np.linspace(100, 300, 200)
    series = _series(ts[:100], close[:100], 1)
    kept = WindowStats.build(series, 0, 100, STEP)
    for n in range(101, 200):
        nxt = _series(ts[:n], close[:n], n, series, n - 1)
        assert kept.advance(nxt, n - 100, n)
        _assert_same(kept.values(nxt, PPY, 0.0), _full(nxt, n - 100, n, 0.0))
        series = nxt


def _step(rng, series: Series, version: int) -> Series:
    """One random write: the open bar rewritten, one or a few bars appended, or an older bar fixed."""
    ts, close = series.ts.copy(), series.close.copy()
    op = rng.random()
    if op < 0.4:
        close[-1] *= 1 + rng.normal(0, 0.003)
        unchanged = len(ts) - 1
    elif op < 0.9:
        k = 1 if rng.random() < 0.8 else int(rng.integers(2, 5))
        ts = np.concatenate([ts, ts[-1] + STEP * np.arange(1, k + 1)])
        close = np.concatenate([close, close[-1] * np.exp(np.cumsum(rng.normal(0, 0.003, k)))])
        unchanged = len(series)
    else:
        at = int(rng.integers(1, len(ts) - 1))
        close[at] *= 1.01
        unchanged = at
    return _series(ts, close, version, series, unchanged)


@pytest.mark.parametrize("lookback", [None, 1200])
def test_beta_kept_across_writes_to_both_series_equals_the_full_computation(lookback):
    rng = np.random.default_rng(5)
    a = _series(*_walk(rng, 2500), 1)
    bts, bclose = _walk(rng, 2600)
    b = _series(bts - 50 * STEP, bclose, 1)  # starts earlier, other gaps
    kept = pair = None
    rebuilt = 0
    for version in range(2, 300):
        if rng.random() < 0.7:
            a = _step(rng, a, version)
        if rng.random() < 0.7:
            b = _step(rng, b, version)
        j = len(a)
        i = 0 if lookback is None else j - lookback
        before = pair
        values, kept, pair = stats_values(kept, pair, a, b, i, j, "1m", 0.0)
        rebuilt += pair is not before
        ts, close = a.span(i, j)
        bench_ts, bench_close = b.window(int(ts[0]), int(ts[-1]) + 1)
        want = analytics.compute_stats(ts, close, PPY, 0.0, bench_ts, bench_close)
        assert values["beta"] == pytest.approx(want["beta"], rel=1e-9, abs=1e-12)
        _assert_same(values, {**want, "gaps": find_gaps(ts, STEP)})
    assert rebuilt < 60  # mostly brought forward, not rebuilt


def test_beta_of_a_constant_benchmark_is_unset():
    ts = np.arange(100, dtype=np.int64) * STEP
    a = _series(ts, 100 + np.sin(np.arange(100)), 1)
    b = _series(ts, np.full(100, 5.0), 1)
    values, _, pair = stats_values(None, None, a, b, 0, 100, "1m", 0.0)
    assert pair is not None and values["beta"] is None
