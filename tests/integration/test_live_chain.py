"""The live provider chain inside a real Fetch process, against local replay servers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc
from tests.conftest import ROOT
from tests.integration.services import Stack
from tests.replay_server import Fault, ReplayServer, SyntheticMarket

MINUTE = 60_000


def ts(iso: str) -> Timestamp:
    t = Timestamp()
    t.FromJsonString(iso)
    return t


@pytest.fixture
def exchange():
    with ReplayServer() as server:
        server.serve_market(SyntheticMarket())
        yield server


def start_fetch(redis_server, tmp_path, provider: str, binance_url: str, *args: str, db: str = "5") -> Stack:
    stack = Stack(redis_server.url[:-1] + db, tmp_path)
    stack.add("fetch", "--provider", provider, "--binance-url", binance_url, "--refresh-s", "0",
              "--provider-timeout-s", "20", *args)
    stack["fetch"].wait_serving()
    return stack


def backfill(stack: Stack, symbol: str = "BTC-USD"):
    with grpc.insecure_channel(stack["fetch"].addr) as channel:
        return fetch_pb2_grpc.FetchServiceStub(channel).Backfill(fetch_pb2.BackfillRequest(
            symbol=symbol, interval="1h", start=ts("2024-01-01T00:00:00Z"), end=ts("2024-01-03T00:00:00Z")),
            timeout=60)


def test_binance_serves_through_the_chain(redis_server, tmp_path, exchange):
    stack = start_fetch(redis_server, tmp_path, "binance", exchange.url)
    try:
        reply = backfill(stack)
        assert reply.source == "binance" and reply.bars_stored == 48
        assert any(r.path == "/api/v3/klines" for r in exchange.requests)
    finally:
        stack.stop()


def test_simulated_never_mixes_with_live_providers():
    proc = subprocess.run([sys.executable, "-m", "services.cli", "serve", "fetch", "--provider", "binance,simulated"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "simulated is a mode of its own" in lines[0], proc.stderr


def test_live_with_every_provider_dead_is_unavailable_never_simulated(redis_server, tmp_path):
    """Defect 1: `--provider live` used to answer with simulated prices when no exchange answered."""
    with ReplayServer() as dead:  # every route unknown: 404 pages
        stack = start_fetch(redis_server, tmp_path, "live", dead.url, "--coingecko-url", dead.url,
                            "--kraken-url", dead.url, "--coinbase-url", dead.url, db="6")
        try:
            with pytest.raises(grpc.RpcError) as exc:
                backfill(stack, "ETH-USD")
            with grpc.insecure_channel(stack["fetch"].addr) as channel:
                listed = fetch_pb2_grpc.FetchServiceStub(channel).ListSymbols(fetch_pb2.ListSymbolsRequest(),
                                                                              timeout=10)
        finally:
            stack.stop()
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE and "binance" in exc.value.details()
    assert "ETH-USD" not in [s.symbol for s in listed.series]
    assert "simulated" not in stack["fetch"].log()


def test_no_fallback_means_unavailable_with_the_reasons(redis_server, tmp_path):
    with ReplayServer() as dead:
        dead.fail_randomly(1.0, seed=1, modes=("500",))
        stack = start_fetch(redis_server, tmp_path, "binance", dead.url)
        try:
            with pytest.raises(grpc.RpcError) as exc:
                backfill(stack, "SOL-USD")
            with grpc.insecure_channel(stack["fetch"].addr) as channel:
                listed = fetch_pb2_grpc.FetchServiceStub(channel).ListSymbols(fetch_pb2.ListSymbolsRequest(),
                                                                              timeout=10)
            assert "SOL-USD" not in [s.symbol for s in listed.series]  # nothing half-written
        finally:
            stack.stop()
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE and "binance" in exc.value.details()


def series_age(metrics_port: int) -> float | None:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith('cryptolens_series_newest_bar_age_seconds{interval="1m",symbol="BTC-USD"}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def all_bars(stub, symbol: str, interval: str, lookback: str) -> list:
    bars, token = [], ""
    for _ in range(100):
        reply = stub.GetBars(fetch_pb2.GetBarsRequest(symbol=symbol, interval=interval, lookback=lookback,
                                                      page_size=1000, page_token=token), timeout=30)
        bars += reply.bars
        token = reply.next_page_token
        if not token:
            return bars
    raise AssertionError("GetBars kept paging")


def test_the_only_exchange_goes_dark_every_bar_stays_the_exchanges(redis_server, tmp_path):
    """Done-when: the live chain's one answering exchange returns 503 for a while. Before the fix
    the refresh replaced the stored minute bars by simulated prices; now nothing is written, the
    age gauge rises, and the series is complete again once the exchange is back."""
    market = SyntheticMarket()
    with ReplayServer() as server:
        server.route("/api/v3/klines", handler=market.binance_klines)  # the other providers: 404
        stack = Stack(redis_server.url[:-1] + "7", tmp_path)
        fetch = stack.add("fetch", "--provider", "live", "--binance-url", server.url, "--coingecko-url", server.url,
                          "--kraken-url", server.url, "--coinbase-url", server.url, "--symbols", "BTC-USD",
                          "--interval", "1m", "--history-days", "1", "--refresh-s", "1", "--lease-s", "10",
                          "--provider-timeout-s", "3")
        try:
            fetch.wait_serving()
            with grpc.insecure_channel(fetch.addr) as channel:
                stub = fetch_pb2_grpc.FetchServiceStub(channel)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    series = {(s.symbol, s.interval): s for s in stub.ListSymbols(fetch_pb2.ListSymbolsRequest(),
                                                                                   timeout=10).series}
                    if ("BTC-USD", "1m") in series and series[("BTC-USD", "1m")].count >= 1440:
                        break
                    time.sleep(0.5)
                else:
                    raise AssertionError(f"no backfill:\n{fetch.log()[-2000:]}")
                # Go dark ~8 s before a minute boundary, so the newest bar closes during the outage.
                while time.gmtime().tm_sec < 50:
                    time.sleep(0.2)
                server.add_fault(Fault("503", path="/api/v3/klines"), times=1_000_000)
                dark_at = time.monotonic()
                time.sleep(20)  # dark for a minute, as in the issue
                age_early = series_age(fetch.metrics_port)
                time.sleep(40)
                age_late = series_age(fetch.metrics_port)
                during = all_bars(stub, "BTC-USD", "1m", "1d")
                server.clear_faults()
                dark_s = time.monotonic() - dark_at
                deadline = time.monotonic() + 45
                while time.monotonic() < deadline:
                    after = all_bars(stub, "BTC-USD", "1m", "1d")
                    now_open = int(time.time() * 1000) // MINUTE * MINUTE
                    times = [b.time.ToMilliseconds() for b in after]
                    if times[-1] >= now_open and all(b - a == MINUTE for a, b in zip(times, times[1:])):
                        break
                    time.sleep(1)
                else:
                    raise AssertionError("the series never became complete again after the outage")
                info = next(s for s in stub.ListSymbols(fetch_pb2.ListSymbolsRequest(), timeout=10).series
                            if s.symbol == "BTC-USD" and s.interval == "1m")
        finally:
            stack.stop()
    assert dark_s >= 60
    for bar in during + after:  # every stored close is the exchange's (simulated BTC would be ~68k, not ~20k)
        assert bar.close == pytest.approx(market.bar(bar.time.ToMilliseconds(), MINUTE)[3], abs=1e-6)
    assert age_early is not None and age_late is not None and 0 < age_early < age_late
    assert info.origin == "live" and {r.source for r in info.provenance} == {"binance"}
    assert not info.freshness.stale
    lines = [json.loads(line) for line in fetch.log().splitlines() if line.startswith("{")]
    failing = [line for line in lines if line["msg"].startswith("series not refreshed")]
    assert len(failing) == 1  # one calm line for the outage, not one per tick
    assert any(line["msg"] == "series refreshed again" for line in lines)


def test_provenance_says_which_exchange_served_which_range(redis_server, tmp_path, exchange):
    stack = Stack(redis_server.url[:-1] + "13", tmp_path)
    stack.add("fetch", "--provider", "binance,kraken", "--binance-url", exchange.url, "--kraken-url", exchange.url,
              "--refresh-s", "0", "--provider-timeout-s", "20")
    try:
        stack["fetch"].wait_serving()
        with grpc.insecure_channel(stack["fetch"].addr) as channel:
            stub = fetch_pb2_grpc.FetchServiceStub(channel)
            first = stub.Backfill(fetch_pb2.BackfillRequest(symbol="ETH-USD", interval="1h",
                                                            start=ts("2024-01-01T00:00:00Z"),
                                                            end=ts("2024-01-02T00:00:00Z")), timeout=60)
            exchange.add_fault(Fault("503", path="/api/v3/klines"), times=1000)  # Binance goes dark
            second = stub.Backfill(fetch_pb2.BackfillRequest(symbol="ETH-USD", interval="1h",
                                                             start=ts("2024-01-02T00:00:00Z"),
                                                             end=ts("2024-01-03T00:00:00Z")), timeout=60)
            bars = stub.GetBars(fetch_pb2.GetBarsRequest(symbol="ETH-USD", interval="1h", page_size=100), timeout=30)
    finally:
        stack.stop()
    assert (first.source, second.source) == ("binance", "kraken")
    assert bars.origin == "live" and len(bars.bars) == 48
    runs = [(r.first.ToJsonString(), r.last.ToJsonString(), r.source) for r in bars.provenance]
    assert runs == [("2024-01-01T00:00:00Z", "2024-01-01T23:00:00Z", "binance"),
                    ("2024-01-02T00:00:00Z", "2024-01-02T23:00:00Z", "kraken")]
