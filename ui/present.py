"""Pure presentation helpers of the dashboard: formatting, badges, freshness lines, colours (no I/O)."""

from __future__ import annotations

import re
from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

BADGE = {"OK": ("#1b7f4b", "#e8f5ee"), "WARNING": ("#8a5a00", "#fdf3dc"), "ALERT": ("#a3262b", "#fbe7e8"),
         "PENDING": ("#555", "#f0f0f0"), "RECOVERING": ("#8a5a00", "#fdf3dc"), "NO_DATA": ("#555", "#eeeeee"),
         "ERROR": ("#a3262b", "#fbe7e8")}
AMBER = "#b26a00"


def pct(value, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def num(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def price(value) -> str:
    if value is None:
        return "—"
    return f"{value:,.2f}" if value >= 1 else f"{value:.6g}"


def age(seconds: float) -> str:
    """'4 s', '12 min', '3 h', '5 days': how long ago the newest bar closed."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def updated_line(answer_age_s: float, fresh: dict, stale_after_s: float) -> str:
    """Beside a symbol's numbers: how long ago the page got them ('updated 4 s ago') and, once the newest
    bar has closed, how old it is. Amber when the series is stale or the answer is older than stale_after_s
    (its service stopped answering: the page keeps the last numbers and says how old they are)."""
    answer_age_s = max(0.0, answer_age_s)
    text = f"updated {age(answer_age_s)} ago"
    bar_age = fresh.get("age_seconds", 0)
    if bar_age > 0:
        text += f" · newest bar closed {age(bar_age)} ago"
    style = "font-size:0.8rem;margin-top:-0.6rem"
    if fresh.get("stale") or answer_age_s > stale_after_s:
        return f"<div class='age' style='{style};color:{AMBER};font-weight:600'>{text} · stale</div>"
    return f"<div class='age' style='{style};color:#666'>{text}</div>"


def freshness_line(symbol: str, s: dict, tz: str = "UTC") -> str:
    """The newest bar's time and age; amber when the series is stale; coverage when partial."""
    fresh = s.get("freshness", {})
    newest = local_time(fresh.get("newest_bar", ""), tz)
    seconds = fresh.get("age_seconds", 0)
    # Age counts from the bar's close: 0 means the newest bar is the one still open.
    when = f"closed {age(seconds)} ago" if seconds > 0 else "still open"
    text = f"{symbol}: newest bar {newest}, {when}"
    if fresh.get("stale"):
        text = f"<span style='color:{AMBER};font-weight:600'>{text} — stale</span>"
    cover = s.get("coverage", {})
    if cover and cover.get("fraction", 1) < 0.999:
        text += (f" · the window holds {int(cover.get('bars', 0)):,} of {int(cover.get('expected_bars', 0)):,} bars "
                 f"({cover.get('fraction', 0) * 100:.0f} %)")
    return text


def zone(name: str | None) -> ZoneInfo:
    """The browser's time zone when it told us a valid one, else UTC."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_time(iso: str, tz: str = "UTC") -> str:
    """'2026-12-01T10:42:05Z' -> '1 Dec 11:42:05 CET' in the reader's zone ('' stays '')."""
    if not iso:
        return ""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(zone(tz))
    return f"{moment.day} {moment:%b %H:%M:%S %Z}"


STORE_LOST_SHOWN_S = 24 * 3600


def store_lost_sentence(contents: dict, tz: str = "UTC", now: datetime | None = None) -> str | None:
    """One calm sentence for a store (Redis) that restarted empty within the last day, else None."""
    began = contents.get("began", "")
    if not contents.get("lost") or not began:
        return None
    moment = datetime.fromisoformat(began.replace("Z", "+00:00"))
    if ((now or datetime.now(moment.tzinfo)) - moment).total_seconds() > STORE_LOST_SHOWN_S:
        return None
    return (f"The shared store (Redis) restarted empty at {local_time(began, tz)}. History has been "
            "fetched again from the providers since, and alert states were judged afresh; a window "
            "that reaches back further than the providers serve can be shorter for a while.")


def delta_label(change, window: str, coverage: dict | None = None) -> str | None:
    """A metric's delta names its period: '+2.10 % over 30d', or the span it really covers when the
    window is only partly stored: '+2.10 % over 3 days (of 30d)'."""
    if change is None:
        return None
    period = window
    cover = coverage or {}
    if cover.get("fraction", 1) < 0.95 and cover.get("first_bar") and cover.get("last_bar"):
        first, last = (datetime.fromisoformat(cover[k].replace("Z", "+00:00")) for k in ("first_bar", "last_bar"))
        period = f"{age((last - first).total_seconds())} (of {window})"
    return f"{change * 100:+.2f} % over {period}".replace("-", "−")


PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#9d755d", "#eeca3b", "#bab0ac",
           "#ff9da6"]


def colours(symbols_in_order: list[str]) -> dict[str, str]:
    """A stable colour per symbol: by first appearance (watch list, then stored series, then symbols added
    on the page), so choosing fewer symbols or adding one never recolours the others."""
    return {symbol: PALETTE[i % len(PALETTE)] for i, symbol in enumerate(dict.fromkeys(symbols_in_order))}


STEP_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}


def gap_after_ms(interval: str, total_bars: int, points: int) -> float:
    """The longest step between two shown points that is not missing data. Unsampled, any step over 1.5
    bars is a gap; downsampled to one point per bucket of b bars, two neighbours can be up to 2b bars
    apart, so only a longer step is one."""
    bucket = -(-total_bars // points) if points else 1
    return STEP_MS.get(interval, 3_600_000) * (1.5 if bucket <= 1 else 2 * bucket + 1)


def segments(times: pd.DatetimeIndex, gap_ms: float) -> np.ndarray:
    """A segment number per point that grows at every gap (a step longer than gap_ms), so a chart draws
    one line per segment and never across missing data."""
    ms = times.as_unit("ms").asi8
    return np.concatenate([[0], np.cumsum(np.diff(ms) > gap_ms)]).astype(int) if len(ms) else np.zeros(0, int)


def price_lines(values: dict[str, pd.Series], gaps_ms: dict[str, float], tz: str = "UTC",
                indexed: bool = False) -> pd.DataFrame:
    """Long form for a line chart: time in the reader's zone (wall clock), optionally indexed to 100 at
    each symbol's first value (to compare several), and a segment number per gap-free stretch."""
    parts = []
    for symbol, close in values.items():
        close = close.dropna()
        if close.empty:
            continue
        value = close / close.iloc[0] * 100 if indexed else close
        parts.append(pd.DataFrame({"time": close.index.tz_convert(zone(tz)).tz_localize(None), "symbol": symbol,
                                   "value": value.to_numpy(), "segment": segments(close.index, gaps_ms[symbol])}))
    columns = ["time", "symbol", "value", "segment"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def correlation_cells(corr: pd.DataFrame) -> pd.DataFrame:
    """The matrix in long form for a heatmap: one row per (row, column) with its value and a label with
    two decimals always ('0.80', '-0.05', '1.00')."""
    cells = corr.rename_axis("row").reset_index().melt(id_vars="row", var_name="column", value_name="value")
    cells["label"] = cells["value"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    return cells


RANK = {"OK": 0, "PENDING": 1, "NO_DATA": 1, "RECOVERING": 2, "WARNING": 3, "ERROR": 3, "ALERT": 4}


def symbol_badges(symbol: str, active: list[dict], rule_names: dict[str, str]) -> str:
    """Every rule not OK on a symbol as a badge naming the rule, worst first, its sentence beside it
    (and in the tooltip); a single calm 'OK' when none is firing."""
    mine = sorted((a for a in active if a.get("symbol") == symbol), key=lambda a: -RANK.get(a.get("state", ""), 0))
    if not mine:
        return badge("OK", "", f"no rule is firing on {symbol}")
    return "".join(
        badge(a["state"], rule_names.get(a["rule"], a["rule"]), a.get("message") or a.get("reason", ""))
        for a in mine)


def badge(state: str, rule: str = "", sentence: str = "") -> str:
    fg, bg = BADGE.get(state, BADGE["PENDING"])
    label = f"{state} · {escape(rule)}" if rule else state
    text = (f"<span title='{escape(sentence, quote=True)}' style='color:{fg};background:{bg};border-radius:999px;"
            f"padding:2px 10px;font-size:0.8rem;font-weight:600;white-space:nowrap'>{label}</span>")
    if sentence and state != "OK":
        text += f"<div style='color:#555;font-size:0.78rem;line-height:1.3;margin:2px 0 6px'>{escape(sentence)}</div>"
    return text


SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """A rule id from its name: 'BTC below 50k!' -> 'btc-below-50k'."""
    return SLUG.sub("-", text.lower()).strip("-")[:60]


def threshold_rule(name: str, symbol: str, interval: str, metric: str, condition: str, window: str,
                   warning: float | None, alert: float | None, clear: float | None, pending_for_s: int,
                   rule_id: str = "") -> dict:
    """The Rule fields of a threshold rule from the form (ratios as fractions; blanks stay unset, so the
    service's validation speaks, not the page's)."""
    rule = {"id": rule_id or slug(name), "name": name, "kind": "threshold", "symbol": symbol, "interval": interval,
            "metric": metric, "condition": condition, "window": window, "pending_for_s": pending_for_s}
    rule.update({k: v for k, v in (("warning", warning), ("alert", alert), ("clear", clear)) if v is not None})
    return rule


def threshold_text(value) -> str:
    """A rule's line for reading: '10,000,000', '-0.2', '' when unset."""
    return "" if value is None else f"{value:,.10g}"


def portfolio_rows(answer: dict) -> pd.DataFrame:
    """Per holding: the weight used, its share of the portfolio's risk and its marginal contribution."""
    return pd.DataFrame([{"symbol": c["symbol"], "weight": pct(c.get("weight"), 1),
                          "share of risk": pct(c.get("contribution_pct"), 1),
                          "marginal (per bar)": pct(c.get("marginal"), 3)}
                         for c in answer.get("contributions", [])])


RULE_METRICS = ["price", "change", "annualized_volatility", "volatility", "max_drawdown", "current_drawdown",
                "sharpe", "sortino", "var_95", "cvar_95", "mean", "min", "max"]
RULE_CONDITIONS = ["below", "above", "crosses_below", "crosses_above"]


def default_interval(series: list[dict]) -> str:
    """The interval being served: the watched series' interval, else the most common stored one."""
    watched = [s["interval"] for s in series if s.get("watched")]
    stored = watched or [s["interval"] for s in series]
    return max(set(stored), key=stored.count) if stored else "1h"


NO_PRICE_CALL = ("No price call here, on purpose: one bar ahead the direction of a crypto price is noise, no "
                 "model on this page beats a coin flip on it. The size of the move is different: calm follows "
                 "calm and storms follow storms, so this panel forecasts how large the next move is likely to be, "
                 "never which way.")
MODEL_NAMES = {"garch_t": "GARCH-t", "ewma": "EWMA", "historical": "30-bar historical"}
_UNITS = {"1d": ("day", "days"), "1h": ("hour", "hours")}


def next_period(interval: str) -> str:
    """'tomorrow' on daily bars, 'next hour' on hourly, else 'next 15m bar'."""
    return {"1d": "tomorrow", "1h": "next hour"}.get(interval, f"next {interval} bar")


def band(forecast: dict) -> str:
    """The 95 % band of the next return, e.g. '−5.7 / +5.8 %'."""
    lower, upper = forecast.get("band_lower"), forecast.get("band_upper")
    if lower is None or upper is None:
        return "—"
    return f"{lower * 100:+.1f} / {upper * 100:+.1f} %".replace("-", "−")


def record_sentence(answer: dict) -> str:
    """The track record in one sentence: 'Over 2,891 days GARCH-t scored QLIKE 3.38 against EWMA's 3.38
    (lower is better); the band held 94.2 % of days.'"""
    records = {r["model"]: r for r in answer.get("track_record", [])}
    model = answer.get("model", "garch_t")
    mine, ewma = records.get(model), records.get("ewma")
    if not mine or "qlike" not in mine:
        return "Not enough history yet to score past forecasts."
    one, many = _UNITS.get(answer.get("interval", ""), ("bar", "bars"))
    count = int(mine["count"])
    text = f"Over {count:,} {one if count == 1 else many} {MODEL_NAMES.get(model, model)} scored QLIKE {mine['qlike']:.2f}"
    if model != "ewma" and ewma and "qlike" in ewma:
        text += f" against EWMA's {ewma['qlike']:.2f} (lower is better)"
    return text + f"; the band held {mine.get('coverage', 0) * 100:.1f} % of {many}."
