"""Replay history through one rule, bar by bar, exactly as the live engine would have judged it.

CPU-bound and pure: the server runs it in a worker thread (asyncio.to_thread), so the event loop
keeps answering, and stops it at the client's deadline."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone

import numpy as np

from services.alerts.rules import Rule, series_values
from services.alerts.state import AlertState, Transition, step
from services.common.analytics import clean_series
from services.common.intervals import periods_per_year

_BLOCK = 4096  # bars replayed between deadline checks


def backtest(rule: Rule, symbol: str, ts: np.ndarray, close: np.ndarray, interval: str,
             deadline: float | None = None) -> list[Transition]:
    """Transitions the rule makes over the series. Each bar is judged once it has closed, with
    only the data up to it; a transition is stamped with that bar's open time (the day of the
    event on daily bars). The values come from one vectorised pass. ``deadline`` is a
    time.monotonic() value; past it, TimeoutError."""
    ts, close = clean_series(ts, close)
    values = series_values(rule, ts, close, periods_per_year(interval), deadline)
    state = AlertState.initial(symbol, rule.id, int(ts[0]) if len(ts) else 0)
    out: list[Transition] = []
    # Block by block: a year of minutes as two Python lists at once made every garbage collection
    # that met them walk a million items (gen2 passes of 110-160 ms that held up the event loop).
    for lo in range(0, len(ts), _BLOCK):
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("the backtest ran out of time; ask for a shorter range")
        for t, value in zip(ts[lo:lo + _BLOCK].tolist(), values[lo:lo + _BLOCK].tolist()):
            state, changes = step(state, rule, None if math.isnan(value) else value, t)
            out.extend(changes)
    return out


def transition_to_json(t: Transition) -> dict:
    return {
        "time": datetime.fromtimestamp(t.time_ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z"),
        "symbol": t.symbol, "rule": t.rule, "from": t.from_state, "to": t.to_state, "grade": t.grade,
        "value": t.value, "threshold": t.threshold, "message": t.message, "notified": t.notify,
    }
