"""Panels of the dashboard against the real services (Streamlit's AppTest): adding a symbol, the
portfolio, the correlation heatmap and the charts' encodings."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
from streamlit.testing.v1 import AppTest

from tests.conftest import UI_APP, free_port



def charts(at: AppTest) -> list[tuple[dict, pd.DataFrame]]:
    """Each Vega-Lite chart on the page: its spec and the data Streamlit sent with it (Arrow)."""
    out = []
    for element in at.get("vega_lite_chart"):
        [dataset] = element.proto.datasets
        out.append((json.loads(element.proto.spec), pa.ipc.open_stream(dataset.data.data).read_pandas()))
    return out


def mark(spec: dict) -> str:
    kind = spec.get("mark", "")
    return kind.get("type", "") if isinstance(kind, dict) else kind


def test_a_symbol_any_provider_serves_can_be_added(service_env):
    at = AppTest.from_file(UI_APP, default_timeout=120).run()
    assert "ADA-USD" not in at.multiselect(key="symbols").value
    at.text_input(key="new_symbol").input("ada-usd")
    next(b for b in at.button if b.label == "Add").click()
    at.run()
    assert not at.exception, at.exception
    assert "ADA-USD" in at.multiselect(key="symbols").value
    assert "ADA-USD" in [m.label for m in at.metric]  # its KPIs, fetched through Core from the provider

    at.text_input(key="new_symbol").input("NOT A SYMBOL")
    next(b for b in at.button if b.label == "Add").click()
    at.run()
    errors = [e.value for e in at.error]
    assert errors and "INVALID_ARGUMENT" in errors[0] and "symbol" in errors[0]  # the service's own words
    assert "NOT A SYMBOL" not in at.multiselect(key="symbols").value


def test_portfolio_panel_shows_core_portfolio_risk(service_env):
    from ui.client import CryptoLensClient
    from ui.present import pct

    at = AppTest.from_file(UI_APP, default_timeout=120).run()
    symbols = at.multiselect(key="symbols").value
    weights = {s: at.number_input(key=f"weight-{s}").value for s in symbols}
    risk = CryptoLensClient.from_env().portfolio_risk(weights, "1h", "30d")
    assert pct(risk["annualized_volatility"]) in [m.value for m in at.metric if m.label == "Volatility"]
    assert pct(risk["var_95"], 2) in [m.value for m in at.metric if m.label == "VaR 95 %"]
    # Weight the first holding up: the panel follows with Core's new answer.
    at.number_input(key=f"weight-{symbols[0]}").set_value(0.8).run()
    risk = CryptoLensClient.from_env().portfolio_risk({**weights, symbols[0]: 0.8}, "1h", "30d")
    assert pct(risk["annualized_volatility"]) in [m.value for m in at.metric if m.label == "Volatility"]
    [shares] = [data for spec, data in charts(at) if spec.get("encoding", {}).get("x", {}).get("field") == "share"]
    assert shares["symbol"].tolist() == symbols
    assert shares["share"].round(9).tolist() == [round(c["contribution_pct"], 9) for c in risk["contributions"]]


def test_correlation_heatmap_and_the_line_charts_encodings(service_env):
    at = AppTest.from_file(UI_APP, default_timeout=120).run()
    assert not at.exception, at.exception
    [(heat, cells)] = [(spec, data) for spec, data in charts(at) if mark(spec.get("layer", [{}])[0]) == "rect"]
    colour = heat["layer"][0]["encoding"]["color"]["scale"]
    assert colour["domain"] == [-1, 1] and colour["scheme"] == "redblue" and colour["domainMid"] == 0
    assert len(cells) == 9 and all(len(label.split(".")[1]) == 2 for label in cells["label"])
    assert (cells["label"] == cells["value"].map("{:.2f}".format)).all()
    lines = [(spec, data) for spec, data in charts(at) if mark(spec) == "line" and "detail" in spec["encoding"]]
    assert len(lines) == 2  # price and drawdown (the forecast panel's charts are Streamlit's own)
    for spec, data in lines:
        assert set(data["symbol"]) == {"BTC-USD", "ETH-USD", "SOL-USD"}
        enc = spec["encoding"]
        assert enc["detail"]["field"] == "segment"  # one line per gap-free stretch
        assert enc["y"]["scale"]["zero"] is False  # fitted to the data, not from 0
        assert enc["x"]["title"] == "time (UTC)"
        palette = dict(zip(enc["color"]["scale"]["domain"], enc["color"]["scale"]["range"]))
        assert palette == {"BTC-USD": "#4c78a8", "ETH-USD": "#f58518", "SOL-USD": "#54a24b"}


def test_fetch_down_leaves_a_notice_in_the_sidebar_and_the_numbers_on_the_page(service_env, monkeypatch):
    monkeypatch.setenv("CRYPTOLENS_FETCH_ADDR", f"127.0.0.1:{free_port()}")
    at = AppTest.from_file(UI_APP, default_timeout=120).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    calm = " ".join(m.value for m in at.sidebar.markdown if "class='calm'" in m.value)
    assert "The symbol list is from the settings" in calm and "Fetch service is not reachable" in calm
    assert {"BTC-USD", "ETH-USD", "SOL-USD"} <= {m.label for m in at.metric}  # Core still answers
