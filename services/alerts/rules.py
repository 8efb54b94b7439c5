"""Alert rules: what they measure, how they are validated, loaded and explained.

A rule turns a price series into one number (``measure``), compares it with enter thresholds
(warning, alert) and an exit threshold (clear), in a direction given by its condition:
``above``/``crosses_above`` fire when the value rises past a threshold, ``below``/``crosses_below``
when it falls past one. Built-ins:

- ``price_drop``: the fall from the highest close in the window to the last close, as a positive
  fraction (0.112 = fell 11.2 %); fires above the thresholds.
- ``volatility_spike``: annualised volatility of the short window over that of the baseline window
  (a ratio, 2.7 = 2.7x); fires above.
- ``drawdown``: the last close against the highest close in the window (negative); fires below.
- ``threshold`` (user rules): ``price`` (last close) or any GetStats metric over the window.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from services.common.errors import InvalidArgument
from services.common.intervals import check_interval, check_symbol, interval_ms, parse_lookback

KINDS = ("price_drop", "volatility_spike", "drawdown", "threshold")
CONDITIONS = ("above", "below", "crosses_above", "crosses_below")
NOTIFY = ("on", "off", "silent")
STATS_METRICS = ("mean", "min", "max", "change", "volatility", "annualized_volatility", "max_drawdown",
                 "current_drawdown", "sharpe", "sortino", "downside_deviation", "var_95", "cvar_95")
METRICS = ("price", *STATS_METRICS)
GRADES = ("OK", "WARNING", "ALERT")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str = "threshold"
    name: str = ""
    symbol: str = "*"
    interval: str = "1h"
    window: str = "24h"
    baseline_window: str = ""
    metric: str = "price"
    condition: str = "above"
    warning: float | None = None
    alert: float | None = None
    clear: float | None = None
    pending_for_s: int = 0
    cooldown_s: int = 3600
    keep_firing_for_s: int = 0
    notify: str = "on"
    enabled: bool = True
    description: str = ""

    @property
    def direction(self) -> int:
        return 1 if self.condition in ("above", "crosses_above") else -1


def builtin_rules(interval: str = "1h") -> list[Rule]:
    """The three built-ins, with windows that make sense for the bar interval."""
    daily = interval_ms(interval) >= 86_400_000
    return [
        Rule(id="price_drop", kind="price_drop", name="Sudden price drop", interval=interval,
             window="1d" if daily else "1h", metric="drop", condition="above", warning=0.05, alert=0.10, clear=0.03,
             description="fall from the window's high to the last close"),
        Rule(id="volatility_spike", kind="volatility_spike", name="Volatility spike", interval=interval,
             window="7d" if daily else "24h", baseline_window="90d" if daily else "30d", metric="vol_ratio",
             condition="above", warning=1.5, alert=2.5, clear=1.2,
             description="short-window annualised volatility over the baseline's"),
        Rule(id="drawdown", kind="drawdown", name="Significant drawdown", interval=interval, window="365d",
             metric="drawdown", condition="below", warning=-0.20, alert=-0.40, clear=-0.15,
             description="last close against the window's highest close"),
    ]


# --- validation and (de)serialisation ---------------------------------------------------------
def validate_rule(rule: Rule) -> Rule:
    """The rule with defaults filled in, or InvalidArgument naming the field and the reason."""
    if not _ID_RE.match(rule.id or ""):
        raise InvalidArgument("id", f"{rule.id!r} must be a slug: lower-case letters, digits, '-', '_' or '.'")
    if rule.kind not in KINDS:
        raise InvalidArgument("kind", f"{rule.kind!r} is not one of {', '.join(KINDS)}")
    if rule.kind == "threshold" and rule.metric not in METRICS:
        raise InvalidArgument("metric", f"unknown metric {rule.metric!r}; use one of {', '.join(METRICS)}")
    if rule.condition not in CONDITIONS:
        raise InvalidArgument("condition", f"{rule.condition!r} is not one of {', '.join(CONDITIONS)}")
    if rule.notify not in NOTIFY:
        raise InvalidArgument("notify", f"{rule.notify!r} is not one of {', '.join(NOTIFY)}")
    symbol = rule.symbol if rule.symbol == "*" else check_symbol(rule.symbol)
    check_interval(rule.interval)
    window_ms = parse_lookback(rule.window, "window")
    if rule.kind == "volatility_spike":
        baseline = parse_lookback(rule.baseline_window or "", "baseline_window")
        if baseline <= window_ms:
            raise InvalidArgument("baseline_window", "must be longer than window")
    for name in ("pending_for_s", "cooldown_s", "keep_firing_for_s"):
        if getattr(rule, name) < 0:
            raise InvalidArgument(name, "must not be negative")
    for name in ("warning", "alert", "clear"):
        value = getattr(rule, name)
        if value is not None and not math.isfinite(value):
            raise InvalidArgument(name, "must be a finite number")
    if rule.warning is None and rule.alert is None:
        raise InvalidArgument("alert", "give an alert and/or a warning threshold")
    d = rule.direction
    word = "above" if d > 0 else "below"
    if rule.warning is not None and rule.alert is not None and d * (rule.alert - rule.warning) < 0:
        raise InvalidArgument("alert", f"for '{rule.condition}' the alert line ({rule.alert:g}) must be at or "
                                       f"{word} the warning line ({rule.warning:g})")
    first_enter = rule.warning if rule.warning is not None else rule.alert
    clear = first_enter if rule.clear is None else rule.clear
    if d * (first_enter - clear) < 0:
        raise InvalidArgument("clear", f"for '{rule.condition}' the clear line ({clear:g}) must be at or "
                                       f"{'below' if d > 0 else 'above'} the first enter line ({first_enter:g})")
    return replace(rule, symbol=symbol, clear=clear, name=rule.name or rule.id)


def rule_to_dict(rule: Rule) -> dict:
    return asdict(rule)


def rule_from_dict(data: dict, base: Rule | None = None) -> Rule:
    """A validated rule from a mapping; unknown keys are refused. ``base`` supplies defaults."""
    known = {f.name for f in fields(Rule)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidArgument(unknown[0], f"unknown field; rules have {', '.join(sorted(known))}")
    if "id" not in data and base is None:
        raise InvalidArgument("id", "missing")
    try:
        rule = replace(base, **data) if base else Rule(**data)
    except TypeError as exc:
        raise InvalidArgument("rule", str(exc)) from None
    for name in ("warning", "alert", "clear"):
        value = getattr(rule, name)
        if value is not None and not isinstance(value, (int, float)):
            raise InvalidArgument(name, f"{value!r} is not a number")
    return validate_rule(rule)


def load_rules_file(path: str | Path, interval: str = "1h") -> list[Rule]:
    """Rules from a YAML or JSON file (``rules:`` list). A rule whose id is a built-in's changes it."""
    import yaml

    text = Path(path).read_text()
    try:
        doc = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not valid YAML/JSON: {exc}") from None
    items = doc.get("rules", []) if isinstance(doc, dict) else doc
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ValueError(f"{path}: 'rules' must be a list")
    builtins = {r.id: r for r in builtin_rules(interval)}
    rules, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: rules[{i}] must be a mapping")
        try:
            rule = rule_from_dict(item, builtins.get(item.get("id")))
        except InvalidArgument as exc:
            raise ValueError(f"{path}: rules[{i}] ({item.get('id', '?')}): {exc.message}") from None
        if rule.id in seen:
            raise ValueError(f"{path}: rules[{i}]: duplicate id {rule.id!r}")
        seen.add(rule.id)
        rules.append(rule)
    return rules


# --- measuring --------------------------------------------------------------------------------
def _bars(window: str, interval: str) -> int:
    """Bars a window spans (at least one step back)."""
    return max(1, parse_lookback(window) // interval_ms(interval))


def series_values(rule: Rule, ts: np.ndarray, close: np.ndarray, periods_per_year: float) -> np.ndarray:
    """The rule's value at every bar, using only data up to that bar (NaN where undefined)."""
    close = np.asarray(close, dtype=np.float64)
    s = pd.Series(close)
    k = _bars(rule.window, rule.interval)
    if rule.kind == "price_drop":
        return (1.0 - close / s.rolling(k + 1, min_periods=2).max()).to_numpy()
    if rule.kind == "drawdown":
        return (close / s.rolling(k + 1, min_periods=2).max() - 1.0).to_numpy()
    if rule.kind == "volatility_spike":
        r = s.pct_change()
        kb = _bars(rule.baseline_window, rule.interval)
        short = r.rolling(k, min_periods=max(2, k // 2)).std()
        long = r.rolling(kb, min_periods=max(3, kb // 2)).std()
        ratio = (short / long.where(long > 0)).to_numpy()
        return ratio
    if rule.metric == "price":
        return close.copy()
    from services.common.analytics import compute_stats

    out = np.full(len(close), np.nan)
    for i in range(1, len(close)):
        lo = max(0, i - k)
        value = compute_stats(ts[lo:i + 1], close[lo:i + 1], periods_per_year).get(rule.metric)
        out[i] = np.nan if value is None else value
    return out


def measure(rule: Rule, ts: np.ndarray, close: np.ndarray, periods_per_year: float,
            stats_cache: dict | None = None) -> float | None:
    """The rule's value now (at the last bar), or None when undefined.

    ``stats_cache`` (one dict per series and cycle) lets rules over the same window share one
    metric-set computation."""
    if len(close) == 0:
        return None
    k = _bars(rule.window, rule.interval)
    if rule.kind == "threshold" and rule.metric != "price":
        from services.common.analytics import compute_stats

        cache = {} if stats_cache is None else stats_cache
        if rule.window not in cache:
            cache[rule.window] = compute_stats(ts[-k - 1:], close[-k - 1:], periods_per_year)
        value = cache[rule.window].get(rule.metric)
        return None if value is None or not math.isfinite(value) else float(value)
    if rule.kind == "volatility_spike":
        k = _bars(rule.baseline_window, rule.interval)
    tail = slice(max(0, len(close) - k - 2), None)  # only what the last bar's value needs
    value = series_values(rule, ts[tail], close[tail], periods_per_year)[-1]
    return None if not math.isfinite(value) else float(value)


# --- grading and words --------------------------------------------------------------------------
def _beyond(rule: Rule, value: float, line: float | None) -> bool:
    return line is not None and rule.direction * (value - line) >= 0


def grade(rule: Rule, value: float, current: str = "OK", previous_value: float | None = None) -> str:
    """OK / WARNING / ALERT with hysteresis: a raised grade holds until the value passes ``clear``.

    ``crosses_*`` rules enter only on a crossing: the previous value must not already be beyond.
    """
    raw = "ALERT" if _beyond(rule, value, rule.alert) else "WARNING" if _beyond(rule, value, rule.warning) else "OK"
    if raw != "OK" and current == "OK" and rule.condition.startswith("crosses") and previous_value is not None:
        line = rule.warning if rule.warning is not None else rule.alert
        if _beyond(rule, previous_value, line):
            return "OK"  # already beyond before: not a crossing
    if raw == "OK" and current != "OK" and rule.direction * (value - rule.clear) > 0:
        return current  # between clear and enter: hold
    return raw


def threshold_for(rule: Rule, grade_: str) -> float | None:
    return {"ALERT": rule.alert, "WARNING": rule.warning}.get(grade_, rule.clear)


def _fmt(rule: Rule, value: float) -> str:
    if rule.kind == "volatility_spike":
        return f"{value:.2f}x"
    if rule.kind in ("price_drop", "drawdown") or rule.metric in (
            "change", "volatility", "annualized_volatility", "max_drawdown", "current_drawdown",
            "downside_deviation", "var_95", "cvar_95"):
        return f"{abs(value) * 100:.1f} %" if rule.kind == "price_drop" else f"{value * 100:.1f} %"
    return f"{value:,.6g}"


def explain(rule: Rule, symbol: str, value: float | None, grade_: str) -> str:
    """A sentence a person understands, e.g. 'BTC-USD fell 11.2 % in 1h, beyond the 10.0 % ALERT line'."""
    if value is None:
        return f"{symbol}: {rule.name or rule.id} is undefined for now (not enough data)"
    line = threshold_for(rule, grade_)
    where = "OK" if grade_ == "OK" else f"{'above' if rule.direction > 0 else 'below'} the " \
                                        f"{_fmt(rule, line)} {grade_} line"
    if grade_ == "OK" and line is not None:
        where = f"back inside the {_fmt(rule, line)} clear line"
    if rule.kind == "price_drop":
        return f"{symbol} fell {_fmt(rule, value)} in {rule.window}, {where}"
    if rule.kind == "volatility_spike":
        return f"{symbol} volatility is {_fmt(rule, value)} its {rule.baseline_window} baseline, {where}"
    if rule.kind == "drawdown":
        return f"{symbol} is {_fmt(rule, value)} from its {rule.window} high, {where}"
    return f"{symbol} {rule.metric} over {rule.window} is {_fmt(rule, value)}, {where}"
