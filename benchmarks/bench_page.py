"""The dashboard in Debian's Chromium (Playwright): page open to all five symbols' KPIs, and one refresh of
the live fragment, against `cryptolens up --provider simulated --interval 1m` with five symbols.

Page open: a new browser page (a new Streamlit session) from navigation start to the moment all five
price KPIs show a number, read on the page's own clock (``performance.now()`` in the predicate).
Fragment refresh: from the browser's automatic rerun request for the live fragment (a BackMsg on the
websocket) to the server's "fragment run finished" (a ForwardMsg), both seen on the same websocket.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from streamlit.proto import BackMsg_pb2, ForwardMsg_pb2

from benchmarks.support import median
from tests.conftest import free_port
from tests.integration.page_stack import FIVE, PageStack, launch_chromium

KPIS_AT_JS = """n => {
    const values = [...document.querySelectorAll("[data-testid='stMetric']")]
        .filter(m => /^[A-Z0-9]+-[A-Z]+/.test(m.querySelector("[data-testid='stMetricLabel']")?.innerText || ""))
        .map(m => m.querySelector("[data-testid='stMetricValue']")?.innerText || "");
    return values.length >= n && values.slice(0, n).every(v => /[0-9]/.test(v)) ? performance.now() : null;
}"""
FINISHED = ForwardMsg_pb2.ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY
# The baseline: a Streamlit page with the same five price metrics and nothing else, no service calls.
BARE_PAGE = "import streamlit as st\nfor s in %r:\n    st.metric(s, '1,234.56')\n" % (FIVE,)


class BarePage:
    def __init__(self, tmp: Path):
        (tmp / "bare.py").write_text(BARE_PAGE)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(tmp / "bare.py"), "--server.port",
                                      str(self.port), "--server.address", "127.0.0.1", "--server.headless", "true",
                                      "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}_stcore/health", timeout=1)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the bare Streamlit page did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def _open_ms(browser, url: str) -> float:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(url, timeout=60_000)
        return page.wait_for_function(KPIS_AT_JS, arg=len(FIVE), timeout=60_000, polling="raf").json_value()
    finally:
        page.close()


def _refresh_ms(browser, url: str, seconds: float) -> list[float]:
    """Rerun request -> finished, for the live fragment (the first one the page registers to auto-rerun)."""
    events: list[tuple[float, str, str]] = []
    order: list[str] = []

    def on_socket(ws) -> None:
        def sent(payload) -> None:
            if isinstance(payload, bytes):
                msg = BackMsg_pb2.BackMsg.FromString(payload)
                if msg.WhichOneof("type") == "rerun_script" and msg.rerun_script.is_auto_rerun:
                    events.append((time.perf_counter(), "ask", msg.rerun_script.fragment_id))

        def received(payload) -> None:
            if isinstance(payload, bytes):
                msg = ForwardMsg_pb2.ForwardMsg.FromString(payload)
                kind = msg.WhichOneof("type")
                if kind == "auto_rerun" and msg.auto_rerun.fragment_id not in order:
                    order.append(msg.auto_rerun.fragment_id)
                elif kind == "script_finished" and msg.script_finished == FINISHED:
                    events.append((time.perf_counter(), "done", ""))

        ws.on("framesent", sent)
        ws.on("framereceived", received)

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("websocket", on_socket)
    try:
        page.goto(url, timeout=60_000)
        page.wait_for_function(KPIS_AT_JS, arg=len(FIVE), timeout=60_000)
        page.wait_for_timeout(seconds * 1000)
    finally:
        page.close()
    # Fragment runs are served one at a time, in order: pair each request with the next finish.
    durations, waiting = [], []
    for at, kind, fragment in events:
        if kind == "ask":
            waiting.append((at, fragment))
        elif waiting:
            asked, fragment = waiting.pop(0)
            if order and fragment == order[0]:
                durations.append((at - asked) * 1000)
    return durations


def run(quick: bool = False) -> dict:
    from playwright.sync_api import sync_playwright

    opens_n, watch_s, refresh_s = (3, 20, 5.0) if quick else (7, 60, 5.0)
    with tempfile.TemporaryDirectory() as tmp:
        stack, bare = PageStack(Path(tmp), refresh_s=refresh_s).start(), BarePage(Path(tmp))
        try:
            with sync_playwright() as pw:
                browser = launch_chromium(pw)
                for url in (stack.url, bare.url):
                    _open_ms(browser, url)  # warm: the first session imports the page's modules
                opens, bares = [], []
                for _ in range(opens_n):  # interleaved, so drift hits both alike
                    opens.append(_open_ms(browser, stack.url))
                    bares.append(_open_ms(browser, bare.url))
                refreshes = _refresh_ms(browser, stack.url, watch_s)
                browser.close()
        finally:
            stack.stop()
            bare.stop()
    open_ms, bare_ms = median(opens), median(bares)
    refresh_ms = median(refreshes) if refreshes else float("nan")
    p90 = statistics.quantiles(refreshes, n=10)[-1] if len(refreshes) >= 2 else refresh_ms
    rows = [
        {"name": "bare Streamlit page with five metrics, no services (baseline)", "median_ms": bare_ms, "ratio": 1.0,
         "note": "the browser and Streamlit alone"},
        {"name": "page open to all five price KPIs", "median_ms": open_ms, "ratio": open_ms / bare_ms,
         "note": f"target <= 3 s; {opens_n} new sessions, max {max(opens):.0f} ms"},
        {"name": "live fragment refresh (KPIs, badges, charts, alerts)", "median_ms": refresh_ms,
         "ratio": None, "note": f"target <= 1 s; {len(refreshes)} refreshes every {refresh_s:g} s, p90 {p90:.0f} ms"},
    ]
    return {"title": "Dashboard in Chromium: five symbols at 1m (simulated)", "rows": rows,
            "notes": "Measured with one headless Chromium (Playwright) against one `cryptolens up` on loopback; page "
                     "opens interleaved with the bare page's."}


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=1))
