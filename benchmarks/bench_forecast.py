"""Forecast cost on the real BTC, ETH and SOL daily files (and the last 5,000 BTC hours, what Core
evaluates at most): one GARCH(1,1)-t fit beside the EWMA forecast of the same closes, and the whole
rolling-origin evaluation beside one fit."""

from __future__ import annotations

import time

from benchmarks.support import SHARED, median, time_interleaved
from services.common import forecast as fc
from services.common.csv_bars import load_csv

FILES = {"BTC 1d": ("BTCUSDT_1d_cdd-binance.csv", "1d"), "ETH 1d": ("ETHUSDT_1d_cdd-binance.csv", "1d"),
         "SOL 1d": ("SOLUSDT_1d_cdd-binance.csv", "1d"), "BTC 1h": ("BTCUSDT_1h_cdd-binance.csv", "1h")}


def run(quick: bool = False) -> dict:
    rows, records = [], []
    total = 0.0
    for name, (file, interval) in FILES.items():
        close = load_csv(SHARED / "prices" / file, interval).bars["close"].astype(float)[-fc.MAX_HISTORY_BARS:]
        samples = time_interleaved({"garch": lambda: fc.forecast(close, "garch_t"),
                                    "ewma": lambda: fc.forecast(close, "ewma")}, 5 if quick else 15)
        fit = median(samples["garch"])
        evals = []
        for _ in range(1 if quick else 3):
            started = time.perf_counter()
            ev = fc.evaluate(close)
            evals.append((time.perf_counter() - started) * 1000)
        total += median(evals)
        origins = len(ev.realised)
        fits = -(-origins // fc.REFIT_EVERY)
        rows += [
            {"name": f"{name}: GARCH-t fit + forecast (last {min(fc.FIT_WINDOW, len(close) - 1):,} returns)",
             "median_ms": fit, "ratio": fit / median(samples["ewma"]),
             "note": f"ratio against the EWMA forecast of all {len(close):,} closes"},
            {"name": f"{name}: rolling-origin evaluation ({origins:,} origins, {fits} fits, 3 models)",
             "median_ms": median(evals), "ratio": median(evals) / fit, "note": "ratio against one fit"},
        ]
        g, e, h = (ev.records[m] for m in ("garch_t", "ewma", "historical"))
        records.append(f"{name}: QLIKE GARCH-t {g.qlike:.3f}, EWMA {e.qlike:.3f}, historical {h.qlike:.3f}; "
                       f"coverage {g.coverage:.1%} / {e.coverage:.1%} / {h.coverage:.1%}; "
                       f"Kupiec p {g.kupiec_p:.3f} / {e.kupiec_p:.3f} / {h.kupiec_p:.3f}; "
                       f"DM (GARCH-t vs EWMA, QLIKE) {ev.dm_stat:+.2f}, p {ev.dm_p:.2f}")
    rows.append({"name": f"whole evaluation, the {len(FILES)} series", "median_ms": total, "ratio": None,
                 "note": "sum of the medians above"})
    return {"title": "Forecasts: GARCH-t fits and the rolling-origin evaluation (real files)", "rows": rows,
            "notes": f"Refit every {fc.REFIT_EVERY} origins on the last {fc.FIT_WINDOW:,} returns, variance filtered "
                     "forward in between (docs/forecasts.md). Track records measured in the same run:\n\n"
                     + "\n".join(f"- {line}" for line in records)}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
