"""`cryptolens up` for the browser tests and the page benchmark: a whole stack on its own ports, and
Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from services import local_redis

ROOT = Path(__file__).resolve().parents[2]
FIVE = ("BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "XRP-USD")
BASE_PORTS = (50051, 50052, 50053, 9101, 9102, 9103, 8501, 6379)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _offset() -> int:
    for _ in range(50):
        offset = random.randrange(1000, 15000)
        if all(local_redis.port_free(p + offset) for p in BASE_PORTS):
            return offset
    raise RuntimeError("no free set of ports for a stack on this machine")


def _children(pid: int) -> dict[int, str]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid and stat[0] != "Z":
                    out[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError):
                continue
    return out


class PageStack:
    """`cryptolens up --provider simulated --interval 1m` with five symbols on free ports.

    Fetch polls every 2 s and Alerts judges every 2 s, so a new minute bar and a new rule reach the page
    within seconds; the page refreshes every ``refresh_s``."""

    def __init__(self, tmp: Path, refresh_s: float = 3.0, symbols: tuple[str, ...] = FIVE):
        self.offset, self.refresh_s, self.tmp = _offset(), refresh_s, tmp
        self.argv = [sys.executable, "-m", "services.cli", "up", "--provider", "simulated", "--interval", "1m",
                     "--symbols", ",".join(symbols), "--history-days", "3", "--port-offset", str(self.offset),
                     "--data-dir", str(tmp / "data")]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "CRYPTOLENS_REFRESH_S": "2",
                    "CRYPTOLENS_EVAL_INTERVAL_S": "2", "CRYPTOLENS_UI_REFRESH_S": str(refresh_s)}
        self.log_path = tmp / "up.log"
        self.proc: subprocess.Popen | None = None

    def port(self, base: int) -> int:
        return base + self.offset

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port(8501)}/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, timeout: float = 90.0) -> "PageStack":
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while "CryptoLens is up." not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"cryptolens up did not come up within {timeout:g} s:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        return self

    def pid_of(self, service: str) -> int:
        [pid] = [p for p, cmd in _children(self.proc.pid).items() if f"serve {service} " in cmd]
        return pid

    def pause_supervisor(self) -> None:
        """Stop `cryptolens up` restarting children, so a killed service stays down."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume_supervisor(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume_supervisor()
            self.proc.terminate()  # `cryptolens up` stops every child, then itself
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def launch_chromium(pw):
    return pw.chromium.launch(executable_path=os.environ.get("CRYPTOLENS_CHROMIUM", "/usr/bin/chromium"),
                              args=CHROMIUM_ARGS)


KPI_VALUES_JS = """n => {
    const values = [...document.querySelectorAll("[data-testid='stMetric']")]
        .filter(m => /^[A-Z0-9]+-[A-Z]+/.test(m.querySelector("[data-testid='stMetricLabel']")?.innerText || ""))
        .map(m => m.querySelector("[data-testid='stMetricValue']")?.innerText || "");
    return values.length >= n && values.slice(0, n).every(v => /[0-9]/.test(v)) ? values : null;
}"""


def kpi_prices(page, n: int, timeout_ms: float = 60_000) -> list[str]:
    """The price KPI of each of the first n symbols, once all n show a number."""
    return page.wait_for_function(KPI_VALUES_JS, arg=n, timeout=timeout_ms, polling=100).json_value()
