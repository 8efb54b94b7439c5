"""The dashboard against the real services: Streamlit's AppTest, then a real headless Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, UI_APP, free_port, require_tool


def test_page_shows_kpis_from_core(service_env):
    from ui.client import CryptoLensClient
    from ui.present import local_time

    at = AppTest.from_file(UI_APP, default_timeout=120).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    labels = [m.label for m in at.metric]
    assert {"BTC-USD", "ETH-USD", "SOL-USD", "Volatility", "Max drawdown", "Sharpe"} <= set(labels)
    # The numbers on the page are the service's numbers, formatted.
    stats = CryptoLensClient.from_env().stats("BTC-USD", "1h", "30d")
    btc = next(m for m in at.metric if m.label == "BTC-USD")
    assert btc.value == f"{stats['last']:,.2f}"
    sharpes = [m.value for m in at.metric if m.label == "Sharpe"]
    assert f"{stats['sharpe']:,.2f}" in sharpes
    assert any("Simulated data" in w.value for w in at.warning)
    # Freshness beside the numbers: the newest bar's time and age, as Core reported them.
    fresh = " ".join(m.value for m in at.markdown)
    newest = local_time(stats["freshness"]["newest_bar"], "UTC")
    age_s = stats["freshness"].get("age_seconds", 0)
    assert f"BTC-USD: newest bar {newest}, " + ("still open" if age_s == 0 else "closed") in fresh
    assert ("stale" in fresh) == any(
        CryptoLensClient.from_env().stats(s, "1h", "30d")["freshness"].get("stale", False)
        for s in ("BTC-USD", "ETH-USD", "SOL-USD"))


def test_page_follows_the_served_interval():
    from ui.present import default_interval

    series = [{"symbol": "BTC-USD", "interval": "1h"}, {"symbol": "BTC-USD", "interval": "1d", "watched": True},
              {"symbol": "ETH-USD", "interval": "1h"}]
    assert default_interval(series) == "1d"  # the watched interval wins over what is stored more often
    assert default_interval(series[:1] + series[2:]) == "1h"
    assert default_interval([]) == "1h"


def test_page_degrades_when_core_is_down(service_env, monkeypatch):
    """Core down: a calm notice where the numbers go, no error box, and the alerts still show."""
    monkeypatch.setenv("CRYPTOLENS_CORE_ADDR", f"127.0.0.1:{free_port()}")
    at = AppTest.from_file(UI_APP, default_timeout=120).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    calm = [m.value for m in at.markdown if "class='calm'" in m.value]
    assert any("Some numbers could not be refreshed" in c and "Core service is not reachable" in c for c in calm)
    assert "Active alerts" in [h.value for h in at.subheader]
    assert not any("Alerts are not answering" in c for c in calm)
    assert any("border-radius:999px" in m.value for m in at.markdown)  # the badges, from Alerts


def test_real_browser_renders_the_dashboard(service_env, tmp_path):
    chromium = require_tool("chromium")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "ui", "--port", str(port), "--host", "127.0.0.1"],
        cwd=ROOT, env={**os.environ, **service_env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("streamlit did not start")
                time.sleep(0.25)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
            # Streamlit renders over a websocket: wait for the KPI metrics to appear.
            page.wait_for_selector("[data-testid='stMetric']", timeout=60_000)
            page.wait_for_selector("text=Correlation of returns", timeout=60_000)
            page.wait_for_selector("text=No price call here", timeout=60_000)
            page.wait_for_selector("text=scored QLIKE", timeout=90_000)  # forecasts come in the background
            page.wait_for_selector(".vega-embed canvas, .vega-embed svg", timeout=60_000)
            page.wait_for_timeout(1500)  # let the charts finish drawing before the screenshot
            text = page.inner_text("body")
            shot = page.screenshot(full_page=True)
            browser.close()
        assert "CryptoLens" in text and "Volatility" in text and "BTC-USD" in text
        assert "Traceback" not in text and "Error" not in text
        assert "Volatility next hour" in text and "No price call here" in text and "scored QLIKE" in text
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(shot[16:20], "big") == 1400
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_page_shows_the_volatility_forecast_without_a_price_call(service_env):
    from ui.client import CryptoLensClient
    from ui.present import band, record_sentence

    at = AppTest.from_file(UI_APP, default_timeout=180).run()
    # Forecasts are computed off the page's script thread; later runs show them once they are in.
    deadline = time.monotonic() + 90
    while any("being computed" in c.value for c in at.caption) and time.monotonic() < deadline:
        time.sleep(1)
        at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    # The simulated open bar moves every minute and the page keeps a forecast up to 60 s (ui/app.py),
    # so the page can lag our fresh call by one bar: compare once the page has refetched in the same
    # minute as our call, which happens within one cache lifetime and a minute tick.
    deadline = time.monotonic() + 150
    while True:
        answer = CryptoLensClient.from_env().forecast("BTC-USD", "1h")
        volatility = [m.value for m in at.metric if m.label == "Expected volatility"]
        bands = [m.value for m in at.metric if m.label == "95 % band"]
        realised = [m.value for m in at.metric if m.label == "Realised, latest bar"]
        shown = (volatility[:1], bands[:1], realised[:1])
        wanted = ([f"{answer['forecast']['volatility'] * 100:.2f} %"], [band(answer["forecast"])],
                  [f"{answer['last_abs_return'] * 100:.2f} %"])
        if shown == wanted or time.monotonic() > deadline:
            break
        time.sleep(1)
        at.run()
    assert "**BTC-USD** · next hour" in [m.value for m in at.markdown]
    # The panel's rows follow the selected symbols; BTC-USD is the first.
    assert len(volatility) == len(bands) == len(realised) == 3
    assert shown == wanted
    captions = " ".join(c.value for c in at.caption)
    assert record_sentence(answer) in captions and record_sentence(answer).startswith("Over ")
    assert "No price call here" in captions
    # No price arrows anywhere: the forecast panel's metrics carry no delta, the price's change no arrow.
    panel = [m for m in at.metric if m.label in ("Expected volatility", "95 % band", "Realised, latest bar")]
    assert len(panel) == 9 and all(not m.proto.delta for m in panel)
    btc = next(m for m in at.metric if m.label == "BTC-USD")
    assert btc.proto.delta and btc.proto.direction == btc.proto.NONE
    assert {m.proto.direction for m in at.metric} == {btc.proto.NONE}


def test_record_sentence_and_band_format():
    from ui.present import band, next_period, record_sentence

    answer = {"model": "garch_t", "interval": "1d", "track_record": [
        {"model": "garch_t", "count": "2900", "qlike": 1.7, "coverage": 0.948},
        {"model": "ewma", "count": "2900", "qlike": 1.81, "coverage": 0.93}]}
    assert record_sentence(answer) == ("Over 2,900 days GARCH-t scored QLIKE 1.70 against EWMA's 1.81 (lower is "
                                       "better); the band held 94.8 % of days.")
    assert record_sentence({"model": "garch_t", "interval": "1d"}).startswith("Not enough history")
    assert band({"band_lower": -0.057, "band_upper": 0.058}) == "−5.7 / +5.8 %"
    assert next_period("1d") == "tomorrow" and next_period("15m") == "next 15m bar"
