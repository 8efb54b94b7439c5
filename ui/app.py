"""CryptoLens dashboard: a calm page over the services. Every number comes through ui/client.py.

The live part (KPIs, badges, charts, active alerts) is a fragment that reruns on its own every
CRYPTOLENS_UI_REFRESH_S seconds (default 5) without rerunning the page; the rule form, the portfolio
and the symbol picker rerun only when the reader uses them. A service that does not answer shows a
calm notice in its own place, and the numbers it gave last stay on the page, marked with their age.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pandas as pd
import streamlit as st

from ui import charts
from ui.background import BackgroundCalls
from ui.client import CryptoLensClient, ServiceError
from ui.present import (NO_PRICE_CALL, RULE_CONDITIONS, RULE_METRICS, band, colours, correlation_cells,
                        default_interval, delta_label, freshness_line, gap_after_ms, local_time, next_period, num,
                        pct, portfolio_rows, price, price_lines, record_sentence, store_lost_sentence, symbol_badges,
                        threshold_rule, threshold_text, updated_line)

WINDOWS = ["24h", "7d", "30d", "90d", "1y", "5y", "10y"]
INTERVALS = ["1m", "5m", "15m", "1h", "4h", "1d"]
DEFAULT_SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]
st.set_page_config(page_title="CryptoLens", page_icon="◎", layout="wide")
st.markdown("<style>div[data-testid='stMetricValue']{font-size:1.45rem} .block-container{padding-top:2rem}"
            ".calm{color:#555;background:#f6f6f4;border-radius:6px;padding:0.5rem 0.8rem;font-size:0.9rem}"
            "</style>", unsafe_allow_html=True)


def refresh_seconds() -> float:
    raw = os.environ.get("CRYPTOLENS_UI_REFRESH_S", "5")
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0.5 <= value <= 3600:
        st.error(f"bad setting CRYPTOLENS_UI_REFRESH_S={raw[:20]!r}: must be seconds between 0.5 and 3600")
        st.stop()
    return value


REFRESH_S = refresh_seconds()


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


@st.cache_resource
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=12, thread_name_prefix="page-call")


def _attempt(fn):
    try:
        return fn()
    except ServiceError as exc:
        return exc


def call_all(jobs: dict) -> dict:
    """Start independent service calls at once; each future gives the answer or the ServiceError raised."""
    return {key: _pool().submit(_attempt, fn) for key, fn in jobs.items()}


def notice(text: str, where=st) -> None:
    """A calm notice in the place of what could not be shown."""
    where.markdown(f"<div class='calm'>{text}</div>", unsafe_allow_html=True)


def remembered(kind: str, key, value):
    """The latest good answer and when it came; a failed call keeps the previous one (older, never different)."""
    memo = st.session_state.setdefault("answers", {})
    if not isinstance(value, ServiceError):
        memo[(kind, key)] = (time.time(), value)
    return memo.get((kind, key))


def timezone_name() -> str:
    return getattr(st.context, "timezone", None) or "UTC"


@st.cache_data(ttl=15, show_spinner=False)
def load_series(service_addrs: tuple) -> tuple[list[dict], list[str], dict]:
    return client().list_series()


@st.cache_data(ttl=15, show_spinner=False)
def load_correlation(service_addrs: tuple, symbols: tuple[str, ...], interval: str, window: str) -> pd.DataFrame:
    return client().correlation(list(symbols), interval, window)


@st.cache_data(ttl=15, show_spinner=False)
def load_portfolio(service_addrs: tuple, holdings: tuple, interval: str, window: str) -> dict:
    return client().portfolio_risk(dict(holdings), interval, window)


@st.cache_resource
def _background() -> BackgroundCalls:
    # One at a time: a cold forecast keeps a Core compute thread busy for seconds, and the live calls
    # (GetStats) need the other.
    return BackgroundCalls(workers=1)


# --- the symbol picker ------------------------------------------------------------------------
def served() -> tuple[list[dict], list[str]]:
    """Stored series and the watch list from Fetch; the last good listing (or the configured watch list)
    while Fetch does not answer."""
    try:
        answer = load_series(addrs())
    except ServiceError as exc:
        answer = exc
    memo = remembered("series", "", answer)
    if isinstance(answer, ServiceError):
        notice(f"The symbol list is from {'earlier' if memo else 'the settings'}: {answer}.", st.sidebar)
    if memo:
        series, watchlist, contents = memo[1]
        if sentence := store_lost_sentence(contents, timezone_name()):
            notice(sentence)
        return series, watchlist
    watch = [s for s in os.environ.get("CRYPTOLENS_SYMBOLS", "").split(",") if s] or DEFAULT_SYMBOLS
    return [{"symbol": s, "interval": os.environ.get("CRYPTOLENS_INTERVAL") or "1h", "watched": True}
            for s in watch], watch


def add_symbol(interval: str, window: str) -> None:
    """Form callback: a symbol is added once Core answers for it (fetching it through Fetch from any
    provider that serves it); otherwise the service's reason is shown under the form."""
    symbol = st.session_state.get("new_symbol", "").strip().upper()
    st.session_state.pop("add_error", None)
    if not symbol:
        return
    try:
        client().stats(symbol, interval, window)
    except ServiceError as exc:
        st.session_state["add_error"] = str(exc)
        return
    added = st.session_state.setdefault("added", [])
    if symbol not in added:
        added.append(symbol)
    if symbol not in st.session_state["symbols"]:
        st.session_state["symbols"] = [*st.session_state["symbols"], symbol]
    st.session_state["new_symbol"] = ""


def sidebar(series: list[dict], watchlist: list[str]) -> tuple[str, list[str], str, float, dict[str, str]]:
    with st.sidebar:
        st.header("View")
        interval = st.selectbox("Interval", INTERVALS, index=INTERVALS.index(default_interval(series)),
                                help="the interval being served is preselected")
        stored = sorted({s["symbol"] for s in series if s["interval"] == interval})
        known = list(dict.fromkeys([*watchlist, *stored, *st.session_state.get("added", [])]))
        if "symbols" not in st.session_state:
            st.session_state["symbols"] = [s for s in watchlist if s in known] or known[:3]
        else:  # a symbol stored at one interval only leaves the choice when the interval changes
            st.session_state["symbols"] = [s for s in st.session_state["symbols"] if s in known]
        symbols = st.multiselect("Symbols", known, key="symbols")
        window = st.radio("Window", WINDOWS, index=2, horizontal=True)
        with st.form("add-symbol", clear_on_submit=False, border=False):
            st.text_input("Add a symbol", key="new_symbol", placeholder="e.g. ADA-USD")
            st.form_submit_button("Add", on_click=add_symbol, args=(interval, window))
        if "add_error" in st.session_state:
            st.error(st.session_state["add_error"])
        rf = st.number_input("Risk-free rate (annual, %)", value=0.0, step=0.5, format="%.2f") / 100
        st.caption("Ratios are computed by the Core service; the page only formats them.")
    # Colours by first appearance over everything known, so they never depend on the selection.
    return interval, symbols, window, rf, colours(known)


# --- the live part ----------------------------------------------------------------------------
@st.fragment(run_every=REFRESH_S)
def live(symbols: list[str], interval: str, window: str, rf: float, palette: dict[str, str]) -> None:
    c, tz = client(), timezone_name()
    jobs = {("stats", s): partial(c.stats, s, interval, window, rf) for s in symbols}
    jobs |= {"alerts": c.alerts, "rules": c.rules}
    calls = call_all(jobs)
    # Drawn after the KPIs; 300 points a line are plenty at this width and keep each refresh small.
    series_calls = call_all({s: partial(c.timeseries, s, interval, window, 300) for s in symbols})
    got = {key: future.result() for key, future in calls.items()}
    now = time.time()

    alerts, rules = got["alerts"], got["rules"]
    alerts_down = alerts if isinstance(alerts, ServiceError) else None
    rule_names = {} if isinstance(rules, ServiceError) else {r["id"]: r.get("name") or r["id"] for r in rules}
    stats = {s: remembered("stats", (s, interval, window, rf), got[("stats", s)]) for s in symbols}
    core_errors = [got[("stats", s)] for s in symbols if isinstance(got[("stats", s)], ServiceError)]

    if any(m and m[1].get("source") == "simulated" for m in stats.values()):
        st.warning("Simulated data — this stack runs in simulated mode (no network at start, or --provider "
                   "simulated). The numbers are realistic but not market prices.", icon="ℹ️")
    if core_errors:
        notice(f"Some numbers could not be refreshed: {core_errors[0]}. What is shown is the last answer, "
               "with its age.")
    for symbol in symbols:
        cols = st.columns([1.45, 0.95, 0.95, 0.7, 0.85, 2.1])
        memo = stats[symbol]
        if memo is None:
            cols[0].markdown(f"**{symbol}**")
            notice("no numbers yet", cols[1])
        else:
            got_at, s = memo
            # The window's change, in grey and without an arrow: a past move, never a price call.
            cols[0].metric(symbol, price(s.get("last")), delta_label(s.get("change"), window, s.get("coverage")),
                           delta_color="off", delta_arrow="off", help=f"last price; the change is over the last {window}")
            cols[0].markdown(updated_line(now - got_at, s.get("freshness", {}), 2 * REFRESH_S + 10),
                             unsafe_allow_html=True)
            cols[1].metric("Volatility", pct(s.get("annualized_volatility")), help=f"annualised, over {window}")
            cols[2].metric("Max drawdown", pct(s.get("max_drawdown")), help=f"over {window}")
            cols[3].metric("Sharpe", num(s.get("sharpe")), help=f"annualised, over {window}")
            cols[4].metric("VaR 95 %", pct(s.get("var_95"), 2), help=f"historical, one {interval} bar, over {window}")
        if alerts_down:
            notice("Alerts are not answering right now; prices and risk keep updating.", cols[5])
        else:
            cols[5].markdown("<div style='padding-top:0.3rem'>"
                             f"{symbol_badges(symbol, alerts['active'], rule_names)}</div>", unsafe_allow_html=True)

    shown = {s: m[1] for s, m in stats.items() if m}
    st.markdown("<div style='color:#666;font-size:0.85rem'>" + "<br>".join(
        freshness_line(symbol, s, tz) for symbol, s in shown.items()) + "</div>", unsafe_allow_html=True)

    frames = {s: remembered("series", (s, interval, window), series_calls[s].result()) for s in symbols}
    frames = {s: m[1] for s, m in frames.items() if m}
    left, right = st.columns(2)
    if frames:
        several = len(frames) > 1
        gaps = {s: gap_after_ms(interval, f.attrs.get("total_points", len(f)), len(f)) for s, f in frames.items()}
        left.markdown(f"**{'Price, indexed to 100 at the start' if several else 'Price'}** · {window}")
        prices = price_lines({s: f["close"] for s, f in frames.items()}, gaps, tz, several)
        left.altair_chart(charts.lines(prices, palette, "indexed (start = 100)" if several else "price", tz),
                          width="stretch")
        drawdowns = price_lines({s: f["drawdown"] * 100 for s, f in frames.items()}, gaps, tz)
        right.markdown(f"**Drawdown from peak (%)** · {window}")
        right.altair_chart(charts.lines(drawdowns, palette, "drawdown (%)", tz), width="stretch")
    else:
        notice("The price chart will appear once Core answers.", left)

    st.subheader("Active alerts")
    if alerts_down:
        notice(f"Alerts are not answering right now ({alerts_down}). Prices and risk above keep updating.")
    elif alerts["active"]:
        # Plain tables: a few rows, and far lighter for the browser than the data grid on every refresh.
        st.table(pd.DataFrame([{
            "state": a["state"], "symbol": a["symbol"], "rule": rule_names.get(a["rule"], a["rule"]),
            "since": local_time(a.get("since", ""), tz), "sentence": a.get("message") or a.get("reason", "")}
            for a in alerts["active"]]).set_index("state"))
    else:
        st.caption("No rule is firing.")
    if not alerts_down:
        st.markdown(f"**Recent transitions** · times in {tz}")
        history = alerts.get("history", [])[:10]
        if history:
            st.table(pd.DataFrame([{
                "time": local_time(e.get("time", ""), tz), "symbol": e["symbol"],
                "rule": rule_names.get(e["rule"], e["rule"]), "from": e.get("from", ""), "to": e.get("to", ""),
                "sentence": e.get("message", "")} for e in history]).set_index("time"))
        else:
            st.caption("No alert transitions yet.")


# --- rules ------------------------------------------------------------------------------------
def _number(label: str, text: str):
    """A threshold from its text box: blank is unset; anything else must be a number."""
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{label}: {text[:20]!r} is not a number") from None


def _line(value) -> str:
    return "" if value is None else f"{value:.10g}"


def _fill_rule_form(chosen: str, rule: dict, symbol: str) -> None:
    """Put a rule (or a new rule's defaults) into the form's widgets. The widgets keep their keys from
    rule to rule: widgets keyed per rule were new page elements, and the browser could keep the last
    rule's beside them (a later fragment's rerun skipped the cleanup) until the next click."""
    st.session_state.update({
        "rule-filled": chosen, "rule-name": rule.get("name", ""),
        "rule-sym": rule.get("symbol", symbol), "rule-win": rule.get("window", "1h"),
        "rule-metric": rule.get("metric", "price"), "rule-cond": rule.get("condition", "below"),
        "rule-pending": int(rule.get("pending_for_s", 0)), "rule-warn": _line(rule.get("warning")),
        "rule-alert": _line(rule.get("alert")), "rule-clear": _line(rule.get("clear"))})


@st.fragment
def rule_form(symbols: list[str], interval: str) -> None:
    """Create, edit and delete user rules; the Alerts service validates, and its message is shown here."""
    st.subheader("Rules")
    try:
        rules = client().rules()
    except ServiceError as exc:
        notice(f"Rules cannot be listed or changed right now ({exc}).")
        return
    st.table(pd.DataFrame([{
        "rule": r["id"], "name": r.get("name", ""), "symbol": r.get("symbol", ""), "kind": r.get("kind", ""),
        "metric": r.get("metric", ""), "condition": r.get("condition", ""), "window": r.get("window", ""),
        "warning": threshold_text(r.get("warning")), "alert": threshold_text(r.get("alert")),
        "clear": threshold_text(r.get("clear")), "": "built in" if r.get("builtin") else ""}
        for r in rules]).set_index("rule"))
    user = {r["id"]: r for r in rules if not r.get("builtin")}
    chosen = st.selectbox("Edit", ["New rule", *user], key="rule-choice")
    rule = user.get(chosen, {})
    targets = list(dict.fromkeys([*symbols, "*", rule.get("symbol", "*")]))
    if st.session_state.get("rule-filled") != chosen:
        _fill_rule_form(chosen, rule, targets[0])
    with st.form("rule-form", border=True):
        a, b, c = st.columns(3)
        name = a.text_input("Name", key="rule-name")
        symbol = b.selectbox("Symbol", targets, key="rule-sym")
        window = c.text_input("Window", key="rule-win")
        a, b, c = st.columns(3)
        metric = a.selectbox("Metric", RULE_METRICS, key="rule-metric")
        condition = b.selectbox("Condition", RULE_CONDITIONS, key="rule-cond")
        pending = c.number_input("Pending for (s)", min_value=0, key="rule-pending")
        a, b, c = st.columns(3)
        st.caption("Thresholds in the metric's unit; ratios as fractions (−0.1 is −10 %).")
        warning = a.text_input("Warning line", key="rule-warn")
        alert = b.text_input("Alert line", key="rule-alert")
        clear = c.text_input("Clear line", key="rule-clear")
        save, delete = st.columns([1, 5])
        saved = save.form_submit_button("Save" if rule else "Create", type="primary", key="rule-save")
        deleted = delete.form_submit_button("Delete", disabled=not rule, key="rule-delete")
    try:
        if deleted:
            client().delete_rule(chosen)
            st.session_state["rule-note"] = f"Deleted {chosen}."
            st.rerun(scope="fragment")
        if saved:
            made = threshold_rule(name, symbol, rule.get("interval") or interval, metric, condition, window,
                                  _number("Warning line", warning), _number("Alert line", alert),
                                  _number("Clear line", clear), int(pending), rule_id=rule.get("id", ""))
            stored = (client().update_rule if rule else client().create_rule)(made)
            st.session_state["rule-note"] = f"Saved {stored['id']}; its badge shows once Alerts has judged it."
            st.rerun(scope="fragment")
    except (ServiceError, ValueError) as exc:
        st.error(str(exc))
    if "rule-note" in st.session_state:
        st.success(st.session_state.pop("rule-note"))


# --- portfolio, correlation, forecasts -------------------------------------------------------
@st.fragment
def portfolio(symbols: list[str], interval: str, window: str, palette: dict[str, str]) -> None:
    """GetPortfolioRisk on weights the reader sets: volatility, VaR and each holding's share of the risk."""
    st.subheader("Portfolio")
    st.caption("Weights")
    cols = st.columns(len(symbols))
    weights = {s: col.number_input(s, min_value=0.0, value=round(1 / len(symbols), 2), step=0.05,
                                   key=f"weight-{s}") for s, col in zip(symbols, cols)}
    holdings = tuple((s, w) for s, w in weights.items() if w > 0)
    if not holdings:
        st.caption("Give at least one holding a weight.")
        return
    try:
        risk = load_portfolio(addrs(), holdings, interval, window)
    except ServiceError as exc:
        notice(f"Portfolio risk is not available right now ({exc}).")
        return
    a, b, c, d = st.columns(4)
    a.metric("Volatility", pct(risk.get("annualized_volatility")), help=f"annualised, over {window}")
    b.metric("VaR 95 %", pct(risk.get("var_95"), 2), help=f"historical, one {interval} bar")
    c.metric("CVaR 95 %", pct(risk.get("cvar_95"), 2), help=f"mean of the worst 5 % of {interval} returns")
    d.metric("Max drawdown", pct(risk.get("max_drawdown")), help=f"rebalanced, over {window}")
    shares = pd.DataFrame([{"symbol": c["symbol"], "share": c.get("contribution_pct", 0.0)}
                           for c in risk.get("contributions", [])])
    st.altair_chart(charts.risk_shares(shares, palette), width="stretch")
    st.table(portfolio_rows(risk).set_index("symbol"))
    st.caption(f"Weights normalised to 100 %; {int(risk.get('count', 0)):,} common {interval} returns.")


def correlation(symbols: list[str], interval: str, window: str) -> None:
    st.subheader("Correlation of returns")
    if len(symbols) < 2:
        st.caption("Choose two symbols or more.")
        return
    try:
        corr = load_correlation(addrs(), tuple(symbols), interval, window)
    except ServiceError as exc:
        notice(f"Correlation is not available right now ({exc}).")
        return
    st.altair_chart(charts.heatmap(correlation_cells(corr)), width="stretch")
    st.caption(f"Pearson, on {interval} returns over {window}, timestamps common to all; −1 red, 0 white, +1 blue.")


@st.fragment(run_every=max(15.0, REFRESH_S))  # a forecast changes once a bar at most
def forecast_panel(symbols: list[str], interval: str) -> None:
    """Per symbol: the next period's expected volatility and band beside the latest realised move, a small
    chart of past forecasts against what happened, and the record in one sentence. No price call."""
    st.subheader(f"Volatility {next_period(interval)}")
    st.caption(NO_PRICE_CALL)
    for symbol in symbols:
        future = _background().get(("forecast", addrs(), symbol, interval),
                                    partial(_attempt, partial(client().forecast, symbol, interval)), ttl_s=60)
        if not future.done():
            st.caption(f"{symbol}: the forecast is being computed …")
            continue
        answer = future.result()
        if isinstance(answer, ServiceError):
            st.caption(f"{symbol}: no forecast ({answer})")
            continue
        left, right = st.columns([1.3, 1])
        left.markdown(f"**{symbol}** · {next_period(interval)}")
        a, b, c = left.columns([1, 1.3, 1])
        a.metric("Expected volatility", pct(answer["forecast"].get("volatility"), 2))
        b.metric("95 % band", band(answer["forecast"]))
        c.metric("Realised, latest bar", pct(answer.get("last_abs_return"), 2))
        left.caption(record_sentence(answer))
        if not answer["history"].empty:
            # The latest 240 bars: thousands of points in five small charts slow the page's opening.
            right.line_chart(answer["history"].tail(240).mul(100).rename(columns={
                "forecast": "forecast volatility (%)", "realised": "realised move (%)"}), height=170)


def main() -> None:
    st.title("CryptoLens")
    interval, symbols, window, rf, palette = sidebar(*served())
    if not symbols:
        st.info("Choose at least one symbol.")
        return
    live(symbols, interval, window, rf, palette)
    left, right = st.columns([1.15, 1])
    with left:
        portfolio(symbols, interval, window, palette)
    with right:
        correlation(symbols, interval, window)
    rule_form(symbols, interval)
    forecast_panel(symbols, interval)


main()
