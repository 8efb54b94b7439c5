"""Vega-Lite (Altair) specs of the dashboard's charts. Data shaping lives in ui/present.py."""

from __future__ import annotations

import altair as alt
import pandas as pd

AXIS = {"labelColor": "#555", "titleColor": "#555", "gridColor": "#eee", "domainColor": "#ccc"}


def _colour(colours: dict[str, str], symbols: list[str], legend: bool = True) -> alt.Color:
    shown = [s for s in colours if s in symbols]
    return alt.Color("symbol:N", scale=alt.Scale(domain=shown, range=[colours[s] for s in shown]),
                     legend=alt.Legend(orient="top", title=None, columns=5, labelFontSize=11, symbolSize=60)
                     if legend else None)


def lines(data: pd.DataFrame, colours: dict[str, str], y_title: str, tz: str, height: int = 280) -> alt.Chart:
    """One line per symbol and gap-free segment (``detail``), so no line crosses missing data; the y-axis
    fits the data instead of starting at 0; the time axis names the zone its wall-clock times are in."""
    return alt.Chart(data, height=height).mark_line(strokeWidth=1.6).encode(
        x=alt.X("time:T", title=f"time ({tz})", scale=alt.Scale(type="utc"), axis=alt.Axis(format="%d %b %H:%M")),
        y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False, nice=False)),
        color=_colour(colours, list(data["symbol"].unique())),
        detail="segment:N",
        tooltip=[alt.Tooltip("symbol:N"), alt.Tooltip("time:T", timeUnit="utcyearmonthdatehoursminutes", title="time"),
                 alt.Tooltip("value:Q", format=",.2f")],
    ).configure_axis(**AXIS).configure_view(strokeWidth=0)


def heatmap(cells: pd.DataFrame, height: int = 260) -> alt.LayerChart:
    """Correlation on a diverging red-blue scale fixed to -1..1 (0 is white), each cell labelled with
    two decimals."""
    order = list(dict.fromkeys(cells["row"]))
    base = alt.Chart(cells, height=height).encode(
        x=alt.X("column:N", sort=order, title=None,
                axis=alt.Axis(labelAngle=0, orient="top", labelOverlap=False, labelFontSize=10)),
        y=alt.Y("row:N", sort=order, title=None))
    rect = base.mark_rect().encode(color=alt.Color(
        "value:Q", title="correlation", scale=alt.Scale(scheme="redblue", domain=[-1, 1], domainMid=0),
        legend=alt.Legend(format=".1f", values=[-1, -0.5, 0, 0.5, 1], orient="bottom", direction="horizontal",
                          gradientLength=220)))
    text = base.mark_text(fontSize=12).encode(
        text="label:N", color=alt.condition("abs(datum.value) > 0.6", alt.value("white"), alt.value("#222")))
    return (rect + text).configure_axis(**AXIS).configure_view(strokeWidth=0)


def risk_shares(rows: pd.DataFrame, colours: dict[str, str]) -> alt.Chart:
    """Each holding's share of portfolio volatility, as horizontal bars in the symbol's colour."""
    return alt.Chart(rows, height=alt.Step(26)).mark_bar().encode(
        x=alt.X("share:Q", title="share of portfolio volatility", axis=alt.Axis(format=".0%")),
        y=alt.Y("symbol:N", title=None, sort=None),
        color=_colour(colours, list(rows["symbol"]), legend=False),
        tooltip=[alt.Tooltip("symbol:N"), alt.Tooltip("share:Q", format=".1%")],
    ).configure_axis(**AXIS).configure_view(strokeWidth=0)
