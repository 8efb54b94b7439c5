"""Replay history through one rule, bar by bar, exactly as the live engine would have judged it."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np

from services.alerts.rules import Rule, series_values
from services.alerts.state import AlertState, Transition, step
from services.common.intervals import periods_per_year


def backtest(rule: Rule, symbol: str, ts: np.ndarray, close: np.ndarray, interval: str) -> list[Transition]:
    """Transitions the rule makes over the series. Each bar is judged once it has closed, with
    only the data up to it; a transition is stamped with that bar's open time (the day of the
    event on daily bars). The values come from one vectorised pass."""
    values = series_values(rule, ts, close, periods_per_year(interval))
    state = AlertState.initial(symbol, rule.id, int(ts[0]) if len(ts) else 0)
    out: list[Transition] = []
    for t, value in zip(ts.tolist(), values.tolist()):
        state, changes = step(state, rule, None if math.isnan(value) else value, t)
        out.extend(changes)
    return out


def transition_to_json(t: Transition) -> dict:
    return {
        "time": datetime.fromtimestamp(t.time_ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z"),
        "symbol": t.symbol, "rule": t.rule, "from": t.from_state, "to": t.to_state, "grade": t.grade,
        "value": t.value, "threshold": t.threshold, "message": t.message, "notified": t.notify,
    }
