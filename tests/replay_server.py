"""A real local HTTP server for provider tests: recorded bodies, generated pages, scripted faults.

    with ReplayServer() as server:
        server.route("/api/v3/klines", file="binance_klines.json")      # a recorded body
        market = SyntheticMarket(step_ms=60_000)                       # or generated pages
        server.serve_market(market)
        server.add_fault(Fault("429", retry_after=2), times=1)        # the next request gets a 429
        server.fail_randomly(0.3, seed=7)                              # 30 % of requests fail, seeded
        server.clear_faults()                                          # back to normal
        ... provider(base_url=server.url) ...
        server.requests                                                # (t, path, query, status, fault)

It listens on 127.0.0.1 on a free port, in a background thread (so it serves whatever event
loop the test runs), and keeps a request log for asserting rates and paging. ``replay_server``
is a pytest fixture for the common case.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qsl, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = Path(os.environ.get("CRYPTOLENS_SHARED_DATA", ROOT.parent / "shared" / "data")) / "api"

FAULT_KINDS = ("429", "418", "500", "502", "503", "hang", "reset", "truncated", "html", "wrong_content_type",
               "empty")
# Random failures: every kind a client should survive by retrying (no hang by default: it costs
# a client timeout per hit).
RANDOM_FAULTS = ("429", "500", "502", "503", "reset", "truncated", "html", "wrong_content_type", "empty")

CLOUDFLARE_HTML = ("<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
                   "<body><h1>Checking your browser</h1><p>Ray ID: 7f00</p></body></html>")


@dataclass
class Request:
    path: str
    query: dict[str, str]
    params: dict[str, str]  # {name} segments of the route pattern


@dataclass
class Reply:
    status: int = 200
    body: str | bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def json(payload, status: int = 200, **headers: str) -> "Reply":
        return Reply(status, json.dumps(payload), "application/json", dict(headers))

    def body_bytes(self) -> bytes:
        return self.body.encode() if isinstance(self.body, str) else self.body


@dataclass
class Fault:
    """A failure to answer with instead of the route's reply.

    kind: 429 / 418 (with ``retry_after`` seconds if given, body from ``body``/``body_file``),
    500 / 502 / 503, hang (no answer until the server stops or ``hang_s``), reset (close the
    connection), truncated (the real body cut in half), html (a Cloudflare page, 200),
    wrong_content_type (the real body as text/plain), empty (200 with no body).
    ``path``: only requests whose path contains it.
    """

    kind: str
    retry_after: float | None = None
    body: str | None = None
    body_file: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; use one of {FAULT_KINDS}")


@dataclass(frozen=True)
class LoggedRequest:
    t: float  # time.monotonic() at arrival
    path: str
    query: dict[str, str]
    status: int  # 0: no HTTP answer (hang, reset)
    fault: str | None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Reply]


class ReplayServer:
    def __init__(self, data_dir: Path | str | None = None, *, hang_s: float = 5.0):
        self.data_dir = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
        self.hang_s = hang_s
        self._routes: list[tuple[re.Pattern, Handler]] = []
        self._faults: list[list] = []  # [fault, remaining]
        self._random: tuple[float, random.Random, tuple[str, ...]] | None = None
        self._log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "ReplayServer":
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 15
            disable_nagle_algorithm = True  # headers and body go out separately: no 40 ms delayed-ACK stalls

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                server._handle(self)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="replay-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hanging handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "ReplayServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- configuration -----------------------------------------------------------------------
    def route(self, path: str, reply: Reply | None = None, *, file: str | None = None, handler: Handler | None = None,
              status: int = 200, content_type: str = "application/json", headers: dict[str, str] | None = None) -> None:
        """Serve ``path`` (``{name}`` matches one segment) with a fixed reply, a file from the data
        directory, or a handler. Later routes win over earlier ones for the same path."""
        if handler is None:
            if reply is None:
                if file is None:
                    raise ValueError("give a reply, a file or a handler")
                reply = Reply(status, self.read(file), content_type, dict(headers or {}))
            handler = lambda _request, _reply=reply: _reply  # noqa: E731
        pattern = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$")
        self._routes.insert(0, (pattern, handler))

    def read(self, file: str) -> bytes:
        return (self.data_dir / file).read_bytes()

    def add_fault(self, fault: Fault, times: int = 1) -> None:
        """The next ``times`` matching requests get ``fault`` (scripted faults go first, in order)."""
        with self._lock:
            self._faults.append([fault, times])

    def clear_faults(self) -> None:
        """Drop every scripted and random fault: the server answers normally again."""
        with self._lock:
            self._faults.clear()
            self._random = None

    def fail_randomly(self, rate: float, seed: int, modes: Iterable[str] = RANDOM_FAULTS) -> None:
        modes = tuple(modes)
        for mode in modes:
            Fault(mode)  # validates
        self._random = (rate, random.Random(seed), modes)

    def serve_market(self, market: "SyntheticMarket") -> None:
        """Generated pages for all four providers' bar endpoints."""
        self.route("/api/v3/klines", handler=market.binance_klines)
        self.route("/0/public/OHLC", handler=market.kraken_ohlc)
        self.route("/products/{product}/candles", handler=market.coinbase_candles)
        self.route("/api/v3/coins/{coin}/market_chart/range", handler=market.coingecko_range)

    # --- the log -----------------------------------------------------------------------------
    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def peak_count(self, window_s: float) -> int:
        """Most requests that arrived within any window of ``window_s`` seconds."""
        times = sorted(r.t for r in self.requests)
        best, j = 0, 0
        for i, t in enumerate(times):
            while times[j] <= t - window_s:
                j += 1
            best = max(best, i - j + 1)
        return best

    # --- serving -----------------------------------------------------------------------------
    def _pick_fault(self, path: str) -> Fault | None:
        with self._lock:
            for entry in self._faults:
                fault, remaining = entry
                if remaining > 0 and (fault.path is None or fault.path in path):
                    entry[1] -= 1
                    return fault
            if self._random is not None:
                rate, rng, modes = self._random
                if rng.random() < rate:
                    return Fault(rng.choice(modes))
        return None

    def _reply_for(self, path: str, query: dict[str, str]) -> Reply:
        for pattern, handler in self._routes:
            match = pattern.match(path)
            if match:
                return handler(Request(path, query, match.groupdict()))
        return Reply.json({"error": f"no route for {path}"}, 404)

    def _handle(self, http: BaseHTTPRequestHandler) -> None:
        arrived = time.monotonic()
        parts = urlsplit(http.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        fault = self._pick_fault(parts.path)
        silent = fault is not None and fault.kind in ("hang", "reset")
        reply = None
        if not silent:
            reply = self._reply_for(parts.path, query)
            if fault is not None:
                reply = self._faulty(fault, reply)
        # Logged before answering, so a test sees a hanging request the moment its client gave up.
        with self._lock:
            self._log.append(LoggedRequest(arrived, parts.path, query, reply.status if reply else 0,
                                           fault.kind if fault else None,
                                           {k.lower(): v for k, v in http.headers.items()}))
        if reply is None:
            if fault.kind == "hang":
                self._stopping.wait(self.hang_s)
            http.close_connection = True
            return
        self._send(http, reply)

    def _faulty(self, fault: Fault, reply: Reply) -> Reply:
        body = fault.body if fault.body is not None else self.read(fault.body_file) if fault.body_file else None
        kind = fault.kind
        if kind in ("429", "418"):
            headers = {} if fault.retry_after is None else {"Retry-After": _number(fault.retry_after)}
            default = '{"status":{"error_code":429,"error_message":"You\'ve exceeded the Rate Limit."}}'
            return Reply(int(kind), body if body is not None else default, "application/json", headers)
        if kind in ("500", "502", "503"):
            default = '{"error":"internal error"}' if kind == "500" else f"<html><body>{kind} Bad Gateway</body></html>"
            return Reply(int(kind), body if body is not None else default,
                         "application/json" if kind == "500" else "text/html")
        if kind == "truncated":
            data = reply.body_bytes()
            return Reply(reply.status, data[: len(data) // 2], reply.content_type, reply.headers)
        if kind == "html":
            return Reply(200, body if body is not None else CLOUDFLARE_HTML, "text/html; charset=UTF-8")
        if kind == "wrong_content_type":
            return Reply(reply.status, reply.body, "text/plain", reply.headers)
        return Reply(200, b"", "application/json")  # empty

    @staticmethod
    def _send(http: BaseHTTPRequestHandler, reply: Reply) -> None:
        data = reply.body_bytes()
        http.send_response(reply.status)
        http.send_header("Content-Type", reply.content_type)
        http.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            http.send_header(name, value)
        http.end_headers()
        http.wfile.write(data)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# --- generated market data -------------------------------------------------------------------


def _price(t_ms: int) -> float:
    """A smooth, deterministic price path (two waves), rounded to cents so it survives JSON."""
    days = t_ms / 86_400_000
    return round(20_000 + 1_500 * math.sin(days / 3) + 120 * math.sin(days * 17), 2)


def _parse_time_s(text: str) -> int:
    """Coinbase start/end: epoch seconds or ISO 8601."""
    try:
        return int(float(text))
    except ValueError:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp())


@dataclass
class SyntheticMarket:
    """Deterministic bars and CoinGecko points for any range, served with each provider's paging.

    ``now_ms``: bars opening after it do not exist yet; the bar containing it is still open.
    ``missing``: bar open times that have no bar (gaps). The same values come back from
    ``bars(step_ms, start_ms, end_ms)``, the series a complete backfill must reproduce.
    """

    now_ms: int = 4_102_444_800_000  # 2100-01-01: everything generated is in the past
    missing: frozenset[int] = frozenset()
    binance_symbols: frozenset[str] = frozenset({"BTCUSDT", "ETHUSDT", "SOLUSDT"})
    kraken_keys: dict[str, str] = field(default_factory=lambda: {"XBTUSD": "XXBTZUSD", "ETHUSD": "XETHZUSD",
                                                                 "SOLUSD": "SOLUSD"})
    coinbase_products: frozenset[str] = frozenset({"BTC-USD", "ETH-USD", "SOL-USD"})

    # --- the truth -------------------------------------------------------------------------
    def bar(self, ts: int, step_ms: int) -> tuple[float, float, float, float, float]:
        o, c = _price(ts), _price(ts + step_ms)
        return o, round(max(o, c) + 5, 2), round(min(o, c) - 5, 2), c, round(1 + (ts // step_ms) % 7 * 0.25, 2)

    def open_times(self, step_ms: int, start_ms: int, end_ms: int) -> list[int]:
        first = -(-start_ms // step_ms) * step_ms
        return [t for t in range(first, end_ms, step_ms) if t <= self.now_ms and t not in self.missing]

    def bars(self, step_ms: int, start_ms: int, end_ms: int) -> list[tuple[int, float, float, float, float, float]]:
        return [(t, *self.bar(t, step_ms)) for t in self.open_times(step_ms, start_ms, end_ms)]

    # --- Binance -----------------------------------------------------------------------------
    def binance_klines(self, request: Request) -> Reply:
        q = request.query
        if q.get("symbol") not in self.binance_symbols:
            return Reply.json({"code": -1121, "msg": "Invalid symbol."}, 400)
        step = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000,
                "1d": 86_400_000}.get(q.get("interval", ""))
        limit = int(q.get("limit", 500))
        if step is None or not 1 <= limit <= 1000:
            return Reply.json({"code": -1120, "msg": "Invalid interval or limit."}, 400)
        start = int(q.get("startTime", 0))
        end = int(q.get("endTime", self.now_ms))
        span = (limit + len(self.missing)) * step  # enough open times for ``limit`` rows despite gaps
        rows = [[t, f"{o:.8f}", f"{h:.8f}", f"{lo:.8f}", f"{c:.8f}", f"{v:.8f}", t + step - 1, "0", 1, "0", "0", "0"]
                for t, o, h, lo, c, v in self.bars(step, start, min(end + 1, start + span))[:limit]]
        return Reply.json(rows)

    # --- Kraken ------------------------------------------------------------------------------
    def kraken_ohlc(self, request: Request) -> Reply:
        q = request.query
        pair = q.get("pair", "")
        if pair not in self.kraken_keys:
            return Reply.json({"error": ["EQuery:Unknown asset pair"]})
        step = int(q.get("interval", 1)) * 60_000
        since_ms = int(q.get("since", 0)) * 1000
        first = since_ms - since_ms % step
        rows = self.bars(step, first, min(self.now_ms + 1, first + (720 + len(self.missing)) * step))[:720]
        committed = [r[0] for r in rows if r[0] + step <= self.now_ms]
        last = committed[-1] // 1000 if committed else since_ms // 1000
        body = [[t // 1000, str(o), str(h), str(lo), str(c), str(round((o + c) / 2, 2)), str(v), 10]
                for t, o, h, lo, c, v in rows]
        return Reply.json({"error": [], "result": {self.kraken_keys[pair]: body, "last": last}})

    # --- Coinbase ----------------------------------------------------------------------------
    def coinbase_candles(self, request: Request) -> Reply:
        if request.params["product"] not in self.coinbase_products:
            return Reply.json({"message": "NotFound"}, 404)
        q = request.query
        granularity = int(q.get("granularity", 0))
        if granularity not in (60, 300, 900, 3600, 21600, 86400):
            return Reply.json({"message": "Unsupported granularity"}, 400)
        start, end = _parse_time_s(q["start"]), _parse_time_s(q["end"])
        if (end - start) / granularity > 300:
            return Reply.json({"message": "granularity too small for the requested time range. "
                                          "Count of aggregations requested exceeds 300"}, 400)
        step = granularity * 1000
        rows = [[t // 1000, lo, h, o, c, v] for t, o, h, lo, c, v in self.bars(step, start * 1000, end * 1000 + 1)]
        return Reply.json(rows[::-1])  # newest first

    # --- CoinGecko ---------------------------------------------------------------------------
    @staticmethod
    def coingecko_spacing_s(span_s: int) -> int:
        """CoinGecko's automatic granularity for a request span."""
        if span_s <= 86_400:
            return 300
        return 3_600 if span_s <= 90 * 86_400 else 86_400

    def coingecko_points(self, from_s: int, to_s: int) -> list[tuple[int, float]]:
        """Points as CoinGecko would send them: on its grid, but a few seconds late (not aligned)
        unless daily (00:00 UTC)."""
        spacing = self.coingecko_spacing_s(to_s - from_s)
        first = -(-from_s // spacing) * spacing
        points = []
        for grid in range(first, to_s + 1, spacing):
            t_ms = grid * 1000 + (0 if spacing == 86_400 else (grid // spacing) % 40 * 1000 + 123)
            if t_ms <= to_s * 1000 and t_ms <= self.now_ms and grid * 1000 not in self.missing:
                points.append((t_ms, _price(t_ms)))
        return points

    def coingecko_range(self, request: Request) -> Reply:
        q = request.query
        points = self.coingecko_points(int(q["from"]), int(q["to"]))
        return Reply.json({
            "prices": [[t, p] for t, p in points],
            "market_caps": [[t, p * 19e6] for t, p in points],
            "total_volumes": [[t, 2.4e10] for t, _ in points],
        })


@pytest.fixture
def replay_server():
    with ReplayServer() as server:
        yield server
