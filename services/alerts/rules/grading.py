"""Grading and words: a value becomes OK / WARNING / ALERT (with hysteresis) and a sentence."""

from __future__ import annotations

from services.alerts.rules.model import Rule

GRADES = ("OK", "WARNING", "ALERT", "NO_DATA", "ERROR")
FIRING = ("WARNING", "ALERT")
_PERCENT_METRICS = ("change", "volatility", "annualized_volatility", "max_drawdown", "current_drawdown",
                    "downside_deviation", "var_95", "cvar_95")


def _beyond(rule: Rule, value: float, line: float | None) -> bool:
    return line is not None and rule.direction * (value - line) >= 0


def grade(rule: Rule, value: float, current: str = "OK", previous_value: float | None = None) -> str:
    """OK / WARNING / ALERT with hysteresis: a raised grade holds until the value passes ``clear``.

    ``crosses_*`` rules enter only on a crossing: the previous value must not already be beyond.
    """
    raw = "ALERT" if _beyond(rule, value, rule.alert) else "WARNING" if _beyond(rule, value, rule.warning) else "OK"
    if raw != "OK" and current not in FIRING and rule.condition.startswith("crosses") and previous_value is not None:
        line = rule.warning if rule.warning is not None else rule.alert
        if _beyond(rule, previous_value, line):
            return "OK"  # already beyond before: not a crossing
    if raw == "OK" and current in FIRING and rule.direction * (value - rule.clear) > 0:
        return current  # between clear and enter: hold
    return raw


def threshold_for(rule: Rule, grade_: str) -> float | None:
    if grade_ in ("NO_DATA", "ERROR"):
        return None
    return {"ALERT": rule.alert, "WARNING": rule.warning}.get(grade_, rule.clear)


def fmt(rule: Rule, value: float) -> str:
    if rule.kind == "volatility_spike":
        return f"{value:.2f}x"
    if rule.kind == "price_drop":
        return f"{abs(value) * 100:.1f} %"
    if rule.kind in ("drawdown", "forecast_volatility") or rule.metric in _PERCENT_METRICS:
        return f"{value * 100:.1f} %"
    return f"{value:,.6g}"


def explain(rule: Rule, symbol: str, value: float | None, grade_: str, reason: str = "") -> str:
    """A sentence a person understands, e.g. 'BTC-USD fell 11.2 % in 1h, above the 10.0 % ALERT line'."""
    if grade_ == "NO_DATA":
        return f"{symbol}: {rule.name or rule.id} at {rule.interval} is not judged: {reason or 'no data'}"
    if grade_ == "ERROR":
        return f"{symbol}: {rule.name or rule.id} failed: {reason}"
    if value is None:
        return f"{symbol}: {rule.name or rule.id} is undefined for now (not enough data)"
    line = threshold_for(rule, grade_)
    where = "OK" if grade_ == "OK" else f"{'above' if rule.direction > 0 else 'below'} the " \
                                        f"{fmt(rule, line)} {grade_} line"
    if grade_ == "OK" and line is not None:
        where = f"back inside the {fmt(rule, line)} clear line"
    if rule.kind == "price_drop":
        return f"{symbol} fell {fmt(rule, value)} in {rule.window}, {where}"
    if rule.kind == "volatility_spike":
        return f"{symbol} volatility is {fmt(rule, value)} its {rule.baseline_window} baseline, {where}"
    if rule.kind == "drawdown":
        return f"{symbol} is {fmt(rule, value)} from its {rule.window} high, {where}"
    if rule.kind == "forecast_volatility":
        return f"{symbol} forecast volatility of the next {rule.interval} bar is {fmt(rule, value)} annualised, {where}"
    return f"{symbol} {rule.metric} over {rule.window} is {fmt(rule, value)}, {where}"
