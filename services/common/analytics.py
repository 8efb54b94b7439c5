"""Risk analytics: pure numpy, no I/O. Conventions are those of DESIGN §4 (empyrical's).

Prices in, numbers out. Returns are simple returns in time order; annualisation uses P periods
per 365-day year; a metric that is undefined (too few returns, zero variance, no downside) is
``None`` — never 0 and never a huge number.
"""

from __future__ import annotations

import math

import numpy as np

_TINY = 1e-14  # relative variance below this counts as zero (a constant series, up to rounding)


def clean_series(ts: np.ndarray, close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop invalid prices (NaN, inf, <= 0), sort by time, drop duplicate timestamps (keep the last)."""
    ts = np.asarray(ts, dtype=np.int64)
    close = np.asarray(close, dtype=np.float64)
    valid = np.isfinite(close) & (close > 0)
    if valid.all() and (len(ts) < 2 or bool(np.all(ts[1:] > ts[:-1]))):
        return ts, close  # the common case: already clean, no copies
    ts, close = ts[valid], close[valid]
    order = np.argsort(ts, kind="stable")
    ts, close = ts[order], close[order]
    keep = np.ones(len(ts), dtype=bool)
    keep[:-1] = ts[1:] != ts[:-1]
    return ts[keep], close[keep]


def simple_returns(close: np.ndarray) -> np.ndarray:
    close = np.asarray(close, dtype=np.float64)
    return close[1:] / close[:-1] - 1.0


def _std(r: np.ndarray, mean: float) -> float | None:
    """Sample standard deviation (ddof 1), None when undefined or zero."""
    n = len(r)
    if n < 2:
        return None
    dev = r - mean
    var = float(dev @ dev) / (n - 1)
    scale = max(abs(mean), float(np.abs(r).max()), 1e-300)
    if var <= _TINY * scale * scale:
        return None
    return math.sqrt(var)


def _tail_mean(r: np.ndarray, k: int) -> float:
    """Mean of the k smallest values without sorting everything."""
    if k >= len(r):
        return float(r.mean())
    return float(np.partition(r, k - 1)[:k].mean())


def var_cvar(r: np.ndarray, level: float = 0.05) -> tuple[float | None, float | None]:
    """Historical VaR (percentile, linear interpolation) and CVaR (mean of the int((n-1)*level)+1 worst)."""
    n = len(r)
    if n < 2:
        return None, None
    var = float(np.percentile(r, level * 100))
    cvar = _tail_mean(r, int((n - 1) * level) + 1)
    return var, cvar


def _drawdowns(close: np.ndarray) -> np.ndarray:
    return close / np.maximum.accumulate(close) - 1.0


def drawdown_series(close: np.ndarray) -> np.ndarray:
    """p_t / max_{s<=t} p_s - 1, in [-1, 0]."""
    close = np.asarray(close, dtype=np.float64)
    if len(close) == 0:
        return close.copy()
    return _drawdowns(close)


def _beta(ts: np.ndarray, r: np.ndarray, bench_ts, bench_close) -> float | None:
    """cov(r_a, r_b) / var(r_b) on the return timestamps the two series share."""
    if bench_ts is None or bench_close is None:
        return None
    bts, bclose = clean_series(bench_ts, bench_close)
    if len(bts) < 3:
        return None
    rb = simple_returns(bclose)
    common, ia, ib = np.intersect1d(ts[1:], bts[1:], assume_unique=True, return_indices=True)
    if len(common) < 2:
        return None
    a, b = r[ia], rb[ib]
    b_dev = b - b.mean()
    var_b = float(b_dev @ b_dev)
    if var_b <= _TINY * max(float(np.abs(b).max()), 1e-300) ** 2 * len(b):
        return None
    return float((a - a.mean()) @ b_dev) / var_b


def compute_stats(ts, close, periods_per_year: float, risk_free_annual: float = 0.0,
                  bench_ts=None, bench_close=None) -> dict:
    """The full metric set of DESIGN §4 for one price series."""
    ts, close = clean_series(ts, close)
    n = len(close)
    out: dict = dict.fromkeys(
        ("first", "last", "first_ts", "last_ts", "mean", "min", "max", "change", "volatility",
         "annualized_volatility", "max_drawdown", "max_drawdown_ts", "current_drawdown", "sharpe", "sortino",
         "downside_deviation", "var_95", "cvar_95", "beta", "worst_return", "worst_return_ts", "best_return"))
    out["count"] = n
    if n == 0:
        return out
    p = float(periods_per_year)
    out.update(first=float(close[0]), last=float(close[-1]), first_ts=int(ts[0]), last_ts=int(ts[-1]),
               mean=float(close.mean()), min=float(close.min()), max=float(close.max()),
               change=float(close[-1] / close[0] - 1.0))
    dd = _drawdowns(close)
    bottom = int(dd.argmin())
    out.update(max_drawdown=float(dd[bottom]), max_drawdown_ts=int(ts[bottom]), current_drawdown=float(dd[-1]))
    if n < 3:  # fewer than two returns: every return statistic is undefined
        if n == 2:
            r0 = float(close[1] / close[0] - 1.0)
            out.update(worst_return=r0, best_return=r0, worst_return_ts=int(ts[1]))
        return out

    r = simple_returns(close)
    worst = int(r.argmin())
    out.update(worst_return=float(r[worst]), worst_return_ts=int(ts[worst + 1]), best_return=float(r.max()))
    mean_r = float(r.mean())
    vol = _std(r, mean_r)
    if vol is not None:
        out["volatility"] = vol
        out["annualized_volatility"] = vol * math.sqrt(p)

    rf = (1.0 + risk_free_annual) ** (1.0 / p) - 1.0
    if rf == 0.0:
        excess_std = vol
        excess_mean = mean_r
    else:
        excess = r - rf
        excess_mean = float(excess.mean())
        excess_std = _std(excess, excess_mean)
    if excess_std is not None:
        out["sharpe"] = excess_mean / excess_std * math.sqrt(p)

    downside = np.minimum(r, 0.0)
    dd_sq = float(downside @ downside) / len(r)
    if dd_sq > 0:
        downside_dev = math.sqrt(dd_sq) * math.sqrt(p)
        out["downside_deviation"] = downside_dev
        out["sortino"] = mean_r * p / downside_dev

    out["var_95"], out["cvar_95"] = var_cvar(r)
    out["beta"] = _beta(ts, r, bench_ts, bench_close)
    return out


def rolling_annualized_volatility(close: np.ndarray, window: int, periods_per_year: float) -> np.ndarray:
    """Annualised std (ddof 1) of the ``window`` returns ending at each bar; NaN where undefined."""
    close = np.asarray(close, dtype=np.float64)
    out = np.full(len(close), np.nan)
    window = int(window)
    if window < 2 or len(close) <= window:
        return out
    r = simple_returns(close)
    # Sums over sliding windows from cumulative sums of demeaned returns (better conditioned).
    shift = r.mean()
    d = r - shift
    c1 = np.concatenate([[0.0], np.cumsum(d)])
    c2 = np.concatenate([[0.0], np.cumsum(d * d)])
    s1 = c1[window:] - c1[:-window]
    s2 = c2[window:] - c2[:-window]
    var = (s2 - s1 * s1 / window) / (window - 1)
    var = np.where(var > 0, var, np.nan)
    out[window:] = np.sqrt(var) * math.sqrt(periods_per_year)
    return out


def align_common(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Prices on the timestamps common to all series: (common_ts, matrix of shape (n, k))."""
    cleaned = [clean_series(ts, close) for ts, close in series]
    common = cleaned[0][0]
    for ts, _ in cleaned[1:]:
        common = np.intersect1d(common, ts, assume_unique=True)
    columns = [close[np.searchsorted(ts, common)] for ts, close in cleaned]
    return common, np.column_stack(columns) if columns else np.empty((len(common), 0))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks per column (ties share their mean rank), for Spearman."""
    out = np.empty_like(x, dtype=np.float64)
    for j in range(x.shape[1]):
        col = x[:, j]
        order = np.argsort(col, kind="mergesort")
        ranks = np.empty(len(col))
        ranks[order] = np.arange(1, len(col) + 1)
        sorted_col = col[order]
        starts = np.flatnonzero(np.concatenate([[True], sorted_col[1:] != sorted_col[:-1]]))
        ends = np.concatenate([starts[1:], [len(col)]])
        for s, e in zip(starts, ends):
            if e - s > 1:
                ranks[order[s:e]] = (s + e + 1) / 2.0
        out[:, j] = ranks
    return out


def correlation_matrix(series: list[tuple[np.ndarray, np.ndarray]], method: str = "pearson") -> tuple[np.ndarray, int]:
    """Correlation of simple returns over timestamps common to all series, and how many returns it used."""
    if method not in ("pearson", "spearman"):
        raise ValueError(f"unknown correlation method {method!r}")
    _, prices = align_common(series)
    if len(prices) < 4:
        raise ValueError(f"only {max(len(prices) - 1, 0)} common returns; need at least 3 on shared timestamps")
    r = prices[1:] / prices[:-1] - 1.0
    if method == "spearman":
        r = _ranks(r)
    dev = r - r.mean(axis=0)
    norms = np.sqrt((dev * dev).sum(axis=0))
    if np.any(norms <= 0):
        raise ValueError("a series has constant returns in the window; its correlation is undefined")
    matrix = (dev.T @ dev) / np.outer(norms, norms)
    matrix = np.clip((matrix + matrix.T) / 2, -1.0, 1.0)
    np.fill_diagonal(matrix, 1.0)
    return matrix, len(r)


def portfolio_risk(series: list[tuple[np.ndarray, np.ndarray]], weights, periods_per_year: float) -> dict:
    """Risk of a portfolio rebalanced to ``weights`` every period, with each asset's risk contribution."""
    w = np.asarray(weights, dtype=np.float64)
    _, prices = align_common(series)
    if len(prices) < 3:
        raise ValueError(f"only {max(len(prices) - 1, 0)} common returns; need at least 2 on shared timestamps")
    r = prices[1:] / prices[:-1] - 1.0
    rp = r @ w
    cov = np.atleast_2d(np.cov(r, rowvar=False, ddof=1))
    sigma = math.sqrt(max(float(w @ cov @ w), 0.0))
    p = float(periods_per_year)
    marginal = cov @ w / sigma if sigma > 0 else np.zeros_like(w)
    contribution = w * marginal
    pct = contribution / sigma if sigma > 0 else np.zeros_like(w)
    var, cvar = var_cvar(rp)
    value = np.concatenate([[1.0], np.cumprod(1.0 + rp)])
    return {
        "count": len(rp),
        "volatility": sigma if sigma > 0 else None,
        "annualized_volatility": sigma * math.sqrt(p) if sigma > 0 else None,
        "var_95": var, "cvar_95": cvar,
        "max_drawdown": float(_drawdowns(value).min()),
        "expected_return": float(rp.mean()) * p,
        "contributions": [{"weight": float(w[i]), "marginal": float(marginal[i]),
                           "contribution": float(contribution[i]), "contribution_pct": float(pct[i])}
                          for i in range(len(w))],
    }


def downsample(ts: np.ndarray, values: np.ndarray, max_points: int) -> np.ndarray:
    """Indices to plot at most ``max_points`` points: first, last, and each bucket's min and max."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    if max_points < 4:
        return np.array(sorted({0, int(np.argmin(values)), int(np.argmax(values)), n - 1}))[:max(max_points, 2)]
    buckets = (max_points - 2) // 2
    inner = np.asarray(values[1:-1], dtype=np.float64)
    edges = np.linspace(0, len(inner), buckets + 1).astype(np.int64)
    starts, ends = edges[:-1], edges[1:]
    nonempty = ends > starts
    starts, ends = starts[nonempty], ends[nonempty]
    # Per-bucket argmin/argmax via reduceat on values, then locate within each bucket.
    mins = np.minimum.reduceat(inner, starts)
    maxs = np.maximum.reduceat(inner, starts)
    bucket_of = np.repeat(np.arange(len(starts)), ends - starts)
    is_min = inner == mins[bucket_of]
    is_max = inner == maxs[bucket_of]
    first_min = np.full(len(starts), -1)
    first_max = np.full(len(starts), -1)
    idx = np.arange(len(inner))
    # The first occurrence in each bucket: reversed assignment leaves the smallest index.
    first_min[bucket_of[is_min][::-1]] = idx[is_min][::-1]
    first_max[bucket_of[is_max][::-1]] = idx[is_max][::-1]
    keep = np.unique(np.concatenate([[0, n - 1], first_min + 1, first_max + 1]))
    return keep
