"""CryptoLens dashboard: a calm page over the services. Every number comes through ui/client.py."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui.client import CryptoLensClient, ServiceError
from ui.present import (NO_PRICE_CALL, badge, band, default_interval, freshness_line, next_period, num, pct, price,
                        record_sentence)

WINDOWS = ["24h", "7d", "30d", "90d", "1y", "5y", "10y"]
INTERVALS = ["1m", "5m", "15m", "1h", "4h", "1d"]
st.set_page_config(page_title="CryptoLens", page_icon="◎", layout="wide")
st.markdown("<style>div[data-testid='stMetricValue']{font-size:1.55rem} .block-container{padding-top:2rem}"
            "</style>", unsafe_allow_html=True)


@st.cache_resource
def _client(fetch_addr: str, core_addr: str, alerts_addr: str) -> CryptoLensClient:
    return CryptoLensClient(fetch_addr, core_addr, alerts_addr)


def client() -> CryptoLensClient:
    env = CryptoLensClient.from_env()
    return _client(env.fetch_addr, env.core_addr, env.alerts_addr)


def addrs() -> tuple[str, str, str]:
    """Part of every cache key, so cached answers never outlive a change of service address."""
    c = client()
    return c.fetch_addr, c.core_addr, c.alerts_addr


@st.cache_data(ttl=15, show_spinner=False)
def load_series(service_addrs: tuple) -> tuple[list[dict], list[str]]:
    return client().list_series()


@st.cache_data(ttl=15, show_spinner=False)
def load_stats(service_addrs: tuple, symbol: str, interval: str, window: str, rf: float) -> dict:
    return client().stats(symbol, interval, window, rf)


@st.cache_data(ttl=15, show_spinner=False)
def load_timeseries(service_addrs: tuple, symbol: str, interval: str, window: str) -> pd.DataFrame:
    return client().timeseries(symbol, interval, window)


@st.cache_data(ttl=15, show_spinner=False)
def load_correlation(service_addrs: tuple, symbols: tuple[str, ...], interval: str, window: str) -> pd.DataFrame:
    return client().correlation(list(symbols), interval, window)


@st.cache_data(ttl=60, show_spinner=False)
def load_forecast(service_addrs: tuple, symbol: str, interval: str) -> dict:
    return client().forecast(symbol, interval)


@st.cache_data(ttl=10, show_spinner=False)
def load_alerts(service_addrs: tuple) -> dict:
    return client().alerts()


def forecast_panel(symbols: list[str], interval: str) -> None:
    """Per symbol: the next period's expected volatility and band beside the latest realised move, a small
    chart of past forecasts against what happened, and the record in one sentence. No price call."""
    st.subheader(f"Volatility {next_period(interval)}")
    st.caption(NO_PRICE_CALL)
    for symbol in symbols:
        try:
            answer = load_forecast(addrs(), symbol, interval)
        except ServiceError as exc:
            st.caption(f"{symbol}: no forecast ({exc})")
            continue
        left, right = st.columns([1.3, 1])
        left.markdown(f"**{symbol}** · {next_period(interval)}")
        a, b, c = left.columns([1, 1.3, 1])
        a.metric("Expected volatility", pct(answer["forecast"].get("volatility"), 2))
        b.metric("95 % band", band(answer["forecast"]))
        c.metric("Realised, latest bar", pct(answer.get("last_abs_return"), 2))
        left.caption(record_sentence(answer))
        if not answer["history"].empty:
            right.line_chart(answer["history"].mul(100).rename(columns={
                "forecast": "forecast volatility (%)", "realised": "realised move (%)"}), height=170)


def main() -> None:
    st.title("CryptoLens")
    try:
        series, watchlist = load_series(addrs())
    except ServiceError as exc:
        st.error(f"Cannot list symbols: {exc}")
        return

    with st.sidebar:
        st.header("View")
        interval = st.selectbox("Interval", INTERVALS, index=INTERVALS.index(default_interval(series)))
        known = sorted({s["symbol"] for s in series if s["interval"] == interval} | set(watchlist))
        symbols = st.multiselect("Symbols", known, default=[s for s in watchlist if s in known] or known[:3])
        window = st.radio("Window", WINDOWS, index=2, horizontal=True)
        rf = st.number_input("Risk-free rate (annual, %)", value=0.0, step=0.5, format="%.2f") / 100
        st.caption("Ratios are computed by the Core service; the page only formats them.")

    if not symbols:
        st.info("Choose at least one symbol.")
        return

    try:
        alerts = load_alerts(addrs())
    except ServiceError as exc:
        alerts = None
        st.caption(f"Alerts are unavailable right now ({exc}).")
    worst: dict[str, str] = {}
    rank = {"OK": 0, "PENDING": 0, "NO_DATA": 1, "RECOVERING": 1, "WARNING": 2, "ERROR": 2, "ALERT": 3}
    for item in (alerts or {}).get("active", []):
        current = worst.get(item["symbol"], "OK")
        if rank.get(item["state"], 0) > rank.get(current, 0):
            worst[item["symbol"]] = item["state"]

    stats: dict[str, dict] = {}
    for symbol in symbols:
        try:
            stats[symbol] = load_stats(addrs(), symbol, interval, window, rf)
        except ServiceError as exc:
            st.error(f"{symbol}: {exc}")
    if not stats:
        return

    sources = {s.get("source", "") for s in stats.values()}
    if "simulated" in sources:
        st.warning("Simulated data — this stack runs in simulated mode (no network at start, or --provider "
                   "simulated). The numbers are realistic but not market prices.", icon="ℹ️")

    for symbol, s in stats.items():
        cols = st.columns([1.3, 1, 1, 1, 1, 0.8])
        # The window's change, in grey and without an arrow: a past move, never a price call.
        cols[0].metric(symbol, price(s.get("last")), pct(s.get("change"), 2) if "change" in s else None,
                       delta_color="off", delta_arrow="off", help=f"change over the last {window}")
        cols[1].metric("Annualised volatility", pct(s.get("annualized_volatility")))
        cols[2].metric("Max drawdown", pct(s.get("max_drawdown")))
        cols[3].metric("Sharpe", num(s.get("sharpe")))
        cols[4].metric("VaR 95 % (per bar)", pct(s.get("var_95"), 2))
        cols[5].markdown(f"<div style='padding-top:1.9rem'>{badge(worst.get(symbol, 'OK'))}</div>",
                         unsafe_allow_html=True)

    st.markdown("<div style='color:#666;font-size:0.85rem'>" + "<br>".join(
        freshness_line(symbol, s) for symbol, s in stats.items()) + "</div>", unsafe_allow_html=True)

    frames = {}
    for symbol in stats:
        try:
            frames[symbol] = load_timeseries(addrs(), symbol, interval, window)
        except ServiceError as exc:
            st.error(f"{symbol}: {exc}")
    if frames:
        left, right = st.columns(2)
        closes = pd.DataFrame({s: f["close"] for s, f in frames.items()}).sort_index()
        if len(frames) > 1:
            left.subheader("Price, indexed to 100")
            left.line_chart(closes.div(closes.bfill().iloc[0]).mul(100), height=300)
        else:
            left.subheader("Price")
            left.line_chart(closes, height=300)
        right.subheader("Drawdown from peak (%)")
        right.line_chart(pd.DataFrame({s: f["drawdown"] * 100 for s, f in frames.items()}).sort_index(), height=300)

    forecast_panel(list(stats), interval)

    risk_col, corr_col = st.columns(2)
    risk = pd.DataFrame({
        symbol: {"CVaR 95 %": pct(s.get("cvar_95"), 2), "Sortino": num(s.get("sortino")),
                 "Downside deviation": pct(s.get("downside_deviation")), "Beta vs BTC": num(s.get("beta")),
                 "Current drawdown": pct(s.get("current_drawdown")), "Bars": f"{int(s.get('count', 0)):,}",
                 "Source": s.get("source", "")}
        for symbol, s in stats.items()})
    risk_col.subheader("Risk")
    risk_col.dataframe(risk, width="stretch")
    if len(stats) >= 2:
        corr_col.subheader("Correlation of returns")
        try:
            corr = load_correlation(addrs(), tuple(stats), interval, window)
            corr_col.dataframe(corr.style.format("{:.2f}").background_gradient(cmap="Blues", vmin=0, vmax=1),
                               width="stretch")
        except ServiceError as exc:
            corr_col.info(f"Correlation unavailable: {exc}")
        except ImportError:  # background_gradient needs matplotlib; the plain table is fine
            corr_col.dataframe(corr.round(2), width="stretch")

    if alerts is not None:
        st.subheader("Recent alerts")
        history = alerts.get("history", [])
        if history:
            st.dataframe(pd.DataFrame([{"time": e.get("time", ""), "symbol": e["symbol"], "rule": e["rule"],
                                        "to": e.get("to", ""), "message": e.get("message", "")}
                                       for e in history]), width="stretch", hide_index=True)
        else:
            st.caption("No alert transitions yet.")
    st.caption(" · ".join(f"{sym}: {s.get('source', '?')}, data v{s.get('data_version', '?')}"
                          for sym, s in stats.items()))


main()
