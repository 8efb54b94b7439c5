"""The only exchange fails 30 % of its requests, then goes dark for over a minute, then comes back.

Through it all: every stored bar is the exchange's, staleness shows while it is dark, the series is
complete again after, and the documented rate limit (Coinbase: 10 requests/s, bursts to 15;
services/fetch/resilience.py) is never exceeded, not even by the retries.
"""

from __future__ import annotations

import time

import grpc
import pytest
from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc

from tests.conftest import RedisServer
from tests.integration.services import Stack
from tests.integration.test_live_chain import all_bars
from tests.replay_server import Fault, ReplayServer, SyntheticMarket

MINUTE = 60_000
RATE, BURST = 10, 15  # services/fetch/resilience.py DEFAULT_LIMITS["coinbase"]


def series_info(stub) -> fetch_pb2.SeriesInfo | None:
    for info in stub.ListSymbols(fetch_pb2.ListSymbolsRequest(), timeout=10).series:
        if info.symbol == "BTC-USD" and info.interval == "1m":
            return info
    return None


def complete(bars) -> bool:
    times = [b.time.ToMilliseconds() for b in bars]
    now_open = int(time.time() * 1000) // MINUTE * MINUTE
    return bool(times) and times[-1] >= now_open and all(b - a == MINUTE for a, b in zip(times, times[1:]))


def test_a_flaky_then_dark_exchange_leaves_a_true_complete_series_within_its_rate_limit(tmp_path):
    market = SyntheticMarket()
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    with ReplayServer() as server:
        server.route("/products/{product}/candles", handler=market.coinbase_candles)
        stack = Stack(redis_server.url, tmp_path)
        fetch = stack.add("fetch", "--provider", "coinbase", "--coinbase-url", server.url, "--symbols", "BTC-USD",
                          "--interval", "1m", "--history-days", "1", "--refresh-s", "1", "--lease-s", "10",
                          "--provider-timeout-s", "5", "--stale-after-bars", "1")
        try:
            fetch.wait_serving()
            with grpc.insecure_channel(fetch.addr) as channel:
                stub = fetch_pb2_grpc.FetchServiceStub(channel)
                deadline = time.monotonic() + 60
                while not ((info := series_info(stub)) and info.count >= 1440) and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert info and info.count >= 1440, fetch.log()[-2000:]

                server.fail_randomly(0.3, seed=20261201)
                flaky_until = time.monotonic() + 20
                while time.monotonic() < flaky_until or time.gmtime().tm_sec < 50:
                    time.sleep(0.2)  # flaky for at least 20 s, until 10 s before a minute boundary
                flaky = all_bars(stub, "BTC-USD", "1m", "1d")

                server.clear_faults()
                server.add_fault(Fault("503"), times=1_000_000)
                dark_until = time.monotonic() + 75  # the bar open now closes in 10 s, then ages past 1 bar
                stale_seen = False
                while time.monotonic() < dark_until:
                    info = series_info(stub)
                    stale_seen = stale_seen or info.freshness.stale
                    time.sleep(1)
                during = all_bars(stub, "BTC-USD", "1m", "1d")

                server.clear_faults()
                deadline = time.monotonic() + 45
                while not complete(after := all_bars(stub, "BTC-USD", "1m", "1d")) and time.monotonic() < deadline:
                    time.sleep(1)
                recovered = series_info(stub)
        finally:
            stack.stop()
            redis_server.stop()

    assert stale_seen, "a dark exchange never made the series stale"
    assert complete(after), "the series never became complete again"
    assert not recovered.freshness.stale
    for bar in flaky + during + after:  # every stored close is the exchange's
        assert bar.close == pytest.approx(market.bar(bar.time.ToMilliseconds(), MINUTE)[3], abs=1e-6)
    faults = [r for r in server.requests if r.fault]
    print(f"{len(server.requests)} requests, {len(faults)} faulted; peak {server.peak_count(1.0)} in 1 s, "
          f"{server.peak_count(10.0)} in 10 s")
    assert len(faults) > 20  # the failures really happened
    assert server.peak_count(1.0) <= BURST + RATE + 1, server.peak_count(1.0)
    assert server.peak_count(10.0) <= BURST + RATE * 10 + 1, server.peak_count(10.0)
