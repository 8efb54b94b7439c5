"""The full metric set on 525,600 one-minute closes: ours beside a hand-written numpy pass,
empyrical and quantstats, all in the same process and run."""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import pandas as pd

from benchmarks.support import median, time_interleaved, year_of_minutes
from services.common.analytics import compute_stats

P = 525_600


def numpy_baseline(close: np.ndarray) -> dict:
    """The least a full metric set costs: one straightforward numpy pass, no guards."""
    r = close[1:] / close[:-1] - 1
    std = r.std(ddof=1)
    downside = np.minimum(r, 0)
    dd = close / np.maximum.accumulate(close) - 1
    var = np.percentile(r, 5)
    k = int((len(r) - 1) * 0.05) + 1
    return {"vol": std * math.sqrt(P), "sharpe": r.mean() / std * math.sqrt(P),
            "dd": math.sqrt((downside ** 2).mean()) * math.sqrt(P), "mdd": dd.min(), "var": var,
            "cvar": np.sort(r)[:k].mean(), "mean": close.mean(), "min": close.min(), "max": close.max()}


def empyrical_set(returns: pd.Series, close: np.ndarray) -> dict:
    import empyrical as ep

    return {"vol": ep.annual_volatility(returns, annualization=P),
            "sharpe": ep.sharpe_ratio(returns, annualization=P),
            "sortino": ep.sortino_ratio(returns, annualization=P),
            "dd": ep.downside_risk(returns, annualization=P), "mdd": ep.max_drawdown(returns),
            "var": ep.value_at_risk(returns), "cvar": ep.conditional_value_at_risk(returns),
            "mean": close.mean(), "min": close.min(), "max": close.max()}


def quantstats_set(returns: pd.Series) -> dict:
    import quantstats as qs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"vol": qs.stats.volatility(returns, periods=P), "sharpe": qs.stats.sharpe(returns, periods=P),
                "sortino": qs.stats.sortino(returns, periods=P), "mdd": qs.stats.max_drawdown(returns),
                "var": qs.stats.value_at_risk(returns), "cvar": qs.stats.cvar(returns)}


def run(quick: bool = False) -> dict:
    bars = year_of_minutes()
    ts, close = bars["ts"], bars["close"]
    index = pd.to_datetime(ts[1:], unit="ms")
    repeats = 7 if quick else 25

    def ours():
        return compute_stats(ts, close, P)

    def empyrical_fn():  # it takes returns: building them is part of its cost
        return empyrical_set(pd.Series(close[1:] / close[:-1] - 1, index=index), close)

    samples = time_interleaved({"ours": ours, "numpy": lambda: numpy_baseline(close), "empyrical": empyrical_fn},
                               repeats)
    rows_src = [("compute_stats (full metric set)", "ours", "≤ 25 ms target"),
                ("hand-written numpy pass (no guards)", "numpy", "the floor"),
                ("empyrical-reloaded, same metrics", "empyrical", "")]
    if importlib.util.find_spec("quantstats"):
        qs_samples = time_interleaved(
            {"qs": lambda: quantstats_set(pd.Series(close[1:] / close[:-1] - 1, index=index))}, 3 if quick else 5)
        samples["quantstats"] = qs_samples["qs"]
        rows_src.append(("quantstats, same metrics", "quantstats", "fewer repeats"))
    base = median(samples["ours"])
    rows = [{"name": name, "median_ms": median(samples[key]), "ratio": median(samples[key]) / base, "note": note}
            for name, key, note in rows_src]
    return {"title": "Analytics in-process: 525,600 one-minute bars", "rows": rows,
            "notes": "Ratios are against compute_stats (above 1: slower than ours). Interleaved rounds; "
                     "OPENBLAS settings of the machine left as they are."}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
