"""Pure presentation helpers of the dashboard: formatting, badges, freshness lines (no I/O)."""

from __future__ import annotations

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


def freshness_line(symbol: str, s: dict) -> str:
    """The newest bar's age beside the numbers; amber when the series is stale; coverage when partial."""
    fresh = s.get("freshness", {})
    newest = fresh.get("newest_bar", "").replace("T", " ").replace("Z", " UTC")
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


def default_interval(series: list[dict]) -> str:
    """The interval being served: the watched series' interval, else the most common stored one."""
    watched = [s["interval"] for s in series if s.get("watched")]
    stored = watched or [s["interval"] for s in series]
    return max(set(stored), key=stored.count) if stored else "1h"


def badge(text: str) -> str:
    fg, bg = BADGE.get(text, BADGE["PENDING"])
    return (f"<span style='color:{fg};background:{bg};border-radius:999px;padding:2px 10px;"
            f"font-size:0.8rem;font-weight:600'>{text}</span>")


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
