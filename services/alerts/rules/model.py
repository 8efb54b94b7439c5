"""The rule model and its validation: a rule is accepted only if it can be evaluated.

A rule turns a price series into one number, compares it with enter thresholds (warning, alert)
and an exit threshold (clear), in a direction given by its condition: ``above``/``crosses_above``
fire when the value rises past a threshold, ``below``/``crosses_below`` when it falls past one.

Windows are checked in bar steps of the rule's interval: a window of k steps covers k + 1 closes and k
returns. Price levels need one step (two bars), anything built on returns two steps (two returns, the
least a standard deviation needs); at most MAX_WINDOW_BARS (the shared cap). A ``forecast_volatility``
window is the GARCH estimation window: MIN_HISTORY_BARS to MAX_HISTORY_BARS bars (services/common/forecast.py).
The same check runs for gRPC, the rules file and built-in overrides, and again whenever a rule is
moved to another interval.
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import asdict, dataclass, fields, replace

from services.common import forecast
from services.common.errors import InvalidArgument, short
from services.common.intervals import INTERVAL_MS, check_interval, check_symbol, interval_ms, parse_lookback
from services.common.limits import MAX_WINDOW_BARS

KINDS = ("price_drop", "volatility_spike", "drawdown", "threshold", "forecast_volatility")
CONDITIONS = ("above", "below", "crosses_above", "crosses_below")
NOTIFY = ("on", "off", "silent")
STATS_METRICS = ("mean", "min", "max", "change", "volatility", "annualized_volatility", "max_drawdown",
                 "current_drawdown", "sharpe", "sortino", "downside_deviation", "var_95", "cvar_95")
METRICS = ("price", *STATS_METRICS)
RETURN_METRICS = ("volatility", "annualized_volatility", "sharpe", "sortino", "downside_deviation", "var_95",
                  "cvar_95")
BUILTIN_IDS = ("price_drop", "volatility_spike", "drawdown")
MAX_DURATION_S = 10 * 365 * 86_400  # pending, cooldown, keep-firing: ten years is "forever" enough
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_LOOKBACK_TEXT = re.compile(r"^\d{1,9}[mhdwy]$")  # bounded digits: a lookback can never overflow
_TEXT_LIMITS = {"name": 200, "description": 2000}


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


def builtin_rule_id(base: str, interval: str, primary: str) -> str:
    """Built-ins keep their plain id at the service's interval; at other intervals they get a suffix."""
    return base if interval == primary else f"{base}.{interval}"


def builtin_rules(interval: str = "1h", primary: str | None = None) -> list[Rule]:
    """The three built-ins, with windows that make sense for the bar interval."""
    step = interval_ms(interval)
    daily, coarse = step >= 86_400_000, step >= 4 * 3_600_000
    primary = interval if primary is None else primary
    rid = lambda base: builtin_rule_id(base, interval, primary)  # noqa: E731
    return [
        Rule(id=rid("price_drop"), kind="price_drop", name="Sudden price drop", interval=interval,
             window=interval if step >= 3_600_000 else "1h", metric="drop", condition="above",
             warning=0.05, alert=0.10, clear=0.03, description="fall from the window's high to the last close"),
        Rule(id=rid("volatility_spike"), kind="volatility_spike", name="Volatility spike", interval=interval,
             window="7d" if daily else "2d" if coarse else "24h", baseline_window="90d" if daily else "30d",
             metric="vol_ratio", condition="above", warning=1.5, alert=2.5, clear=1.2,
             description="short-window annualised volatility over the baseline's"),
        Rule(id=rid("drawdown"), kind="drawdown", name="Significant drawdown", interval=interval, window="365d",
             metric="drawdown", condition="below", warning=-0.20, alert=-0.40, clear=-0.15,
             description="last close against the window's highest close"),
    ]


def checked_symbol(value: str, field: str = "symbol") -> str:
    """check_symbol, also for values of another type (a rules file may hold anything)."""
    if not isinstance(value, str):
        raise InvalidArgument(field, f"{short(value)} is not a BASE-QUOTE symbol such as 'BTC-USD'")
    return check_symbol(value, field)


def checked_interval(value: str, field: str = "interval") -> str:
    if not isinstance(value, str):
        raise InvalidArgument(field, f"{short(value)} is not one of {' '.join(INTERVAL_MS)}")
    return check_interval(value, field)


def _lookback(text: str, field: str) -> int:
    if not isinstance(text, str) or not _LOOKBACK_TEXT.match(text.strip()):
        raise InvalidArgument(field, f"{short(text)} is not a lookback such as '24h', '30d' or '1y'")
    return parse_lookback(text.strip(), field)


def min_window_bars(rule: Rule, baseline: bool = False) -> int:
    """Bar steps a rule's window needs: one for price levels, two for anything built on returns."""
    if baseline or rule.kind == "volatility_spike" or (rule.kind == "threshold" and rule.metric in RETURN_METRICS):
        return 2
    return 1


def window_bars(text: str, interval: str, field: str = "window", minimum: int = 1,
                maximum: int = MAX_WINDOW_BARS) -> int:
    """Bar steps of ``interval`` a lookback spans, refused outside [minimum, maximum]."""
    step = INTERVAL_MS[interval]
    bars = _lookback(text, field) // step
    if bars < minimum:
        raise InvalidArgument(field, f"{text!r} spans {bars} bar(s) of {interval}; this rule needs at least "
                                     f"{minimum} ({minimum * step // 60_000}m)")
    if bars > maximum:
        raise InvalidArgument(field, f"{text!r} is {bars:,} bars of {interval}, over the cap of "
                                     f"{maximum:,} bars")
    return bars


def validate_rule(rule: Rule) -> Rule:
    """The rule with defaults filled in, or InvalidArgument naming the field and the reason."""
    if not isinstance(rule.id, str) or not _ID_RE.match(rule.id):
        raise InvalidArgument("id", f"{short(rule.id)} must be a slug: lower-case letters, digits, "
                                    f"'-', '_' or '.'")
    if rule.kind not in KINDS:
        raise InvalidArgument("kind", f"{short(rule.kind)} is not one of {', '.join(KINDS)}")
    if rule.kind == "threshold" and rule.metric not in METRICS:
        raise InvalidArgument("metric", f"unknown metric {short(rule.metric)}; use one of {', '.join(METRICS)}")
    if rule.condition not in CONDITIONS:
        raise InvalidArgument("condition", f"{short(rule.condition)} is not one of {', '.join(CONDITIONS)}")
    if rule.notify not in NOTIFY:
        raise InvalidArgument("notify", f"{short(rule.notify)} is not one of {', '.join(NOTIFY)}")
    for name, limit in _TEXT_LIMITS.items():
        if len(getattr(rule, name)) > limit:
            raise InvalidArgument(name, f"longer than {limit} characters")
    symbol = rule.symbol if rule.symbol == "*" else checked_symbol(rule.symbol)
    checked_interval(rule.interval)
    if rule.kind == "forecast_volatility":  # the window is the GARCH estimation window (docs/forecasts.md)
        window = window_bars(rule.window, rule.interval, "window", 1, forecast.MAX_HISTORY_BARS)
        if window < forecast.MIN_HISTORY_BARS:
            raise InvalidArgument("window", f"{short(rule.window)} spans {window} bar(s) of {rule.interval}; a "
                                            f"forecast needs at least MIN_HISTORY_BARS = {forecast.MIN_HISTORY_BARS}")
    else:
        window = window_bars(rule.window, rule.interval, "window", min_window_bars(rule))
    if rule.kind == "volatility_spike":
        baseline = window_bars(rule.baseline_window, rule.interval, "baseline_window", 2)
        if baseline <= window:
            raise InvalidArgument("baseline_window", "must be longer than window")
    for name in ("pending_for_s", "cooldown_s", "keep_firing_for_s"):
        if not 0 <= getattr(rule, name) <= MAX_DURATION_S:
            raise InvalidArgument(name, f"must be between 0 and {MAX_DURATION_S} seconds")
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


def at_interval(rule: Rule, interval: str, field: str = "interval") -> Rule:
    """The rule judged on another bar interval, validated there (a window may be too short for it)."""
    if interval == rule.interval:
        return rule
    try:
        return validate_rule(replace(rule, interval=interval))
    except InvalidArgument as exc:
        raise InvalidArgument(field, f"rule {rule.id!r} cannot run at {interval}: {exc.message}") from None


def rule_to_dict(rule: Rule) -> dict:
    return asdict(rule)


_HINTS = typing.get_type_hints(Rule)


def _check_type(name: str, value) -> None:
    kind = _HINTS[name]
    if kind is str:
        ok = isinstance(value, str)
    elif kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:  # float | None
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    if not ok:
        raise InvalidArgument(name, f"{str(value)[:40]!r} is not a valid {getattr(kind, '__name__', 'number')}")


def rule_from_dict(data: dict, base: Rule | None = None) -> Rule:
    """A validated rule from a mapping; unknown keys and wrong types are refused. ``base`` supplies defaults."""
    known = {f.name for f in fields(Rule)}
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise InvalidArgument(unknown[0][:40], f"unknown field; rules have {', '.join(sorted(known))}")
    if "id" not in data and base is None:
        raise InvalidArgument("id", "missing")
    for name, value in data.items():
        _check_type(name, value)
    rule = replace(base, **data) if base else Rule(**data)
    return validate_rule(rule)
