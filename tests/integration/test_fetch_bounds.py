"""Bounded work in Fetch (defect 5): validation before any I/O, window caps, paged GetBars, a
client's deadline stops the work, and a fetch-through of a year of minute bars costs neither the
memory nor the health of the process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc
from services.common.limits import MAX_PAGE_BARS, MAX_WINDOW_BARS
from tests.integration.services import Stack

DAY = 86_400_000


def ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def iso(text: str) -> Timestamp:
    t = Timestamp()
    t.FromJsonString(text)
    return t


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def fetch(redis_server, tmp_path_factory):
    stack = Stack(redis_server.url[:-1] + "11", tmp_path_factory.mktemp("bounds"))
    service = stack.add("fetch", "--provider", "simulated", "--refresh-s", "0")
    service.wait_serving()
    try:
        yield service
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def stub(fetch):
    with grpc.insecure_channel(fetch.addr) as channel:
        yield fetch_pb2_grpc.FetchServiceStub(channel)


def error_of(call, request, timeout: float = 60) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        call(request, timeout=timeout)
    return exc.value


def stored(stub) -> dict[tuple[str, str], int]:
    listed = stub.ListSymbols(fetch_pb2.ListSymbolsRequest(), timeout=10)
    return {(s.symbol, s.interval): s.count for s in listed.series}


def test_a_bad_window_is_refused_before_any_fetch_through(stub):
    inverted = fetch_pb2.GetBarsRequest(symbol="LINK-USD", interval="1h", start=iso("2024-01-03T00:00:00Z"),
                                        end=iso("2024-01-01T00:00:00Z"))
    error = error_of(stub.GetBars, inverted)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith("end:")
    future = fetch_pb2.GetBarsRequest(symbol="LINK-USD", interval="1h", start=iso("2024-01-01T00:00:00Z"),
                                      end=iso("2199-01-01T00:00:00Z"))
    error = error_of(stub.GetBars, future)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "end" in error.details()
    too_big = fetch_pb2.GetBarsRequest(symbol="LINK-USD", interval="1h", page_size=MAX_PAGE_BARS + 1)
    error = error_of(stub.GetBars, too_big)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in error.details()
    error = error_of(stub.GetBars, fetch_pb2.GetBarsRequest(symbol="LINK-USD", interval="1h", page_token="x" * 5000))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in error.details()
    assert len(error.details()) < 200  # a short prefix of the bad value, not all of it
    assert ("LINK-USD", "1h") not in stored(stub)  # nothing was fetched for the refused requests


def test_a_window_wider_than_the_cap_is_resource_exhausted_at_once(fetch, stub):
    """GetBars start=2010 limit=1 at 1m (Core's fetch-through for GetStats from 2010)."""
    request = fetch_pb2.GetBarsRequest(symbol="BTC-USD", interval="1m", start=iso("2010-01-01T00:00:00Z"), limit=1)
    error = error_of(stub.GetBars, request)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"MAX_WINDOW_BARS={MAX_WINDOW_BARS}" in error.details()
    error = error_of(stub.GetBars, fetch_pb2.GetBarsRequest(symbol="BTC-USD", interval="1m", lookback="3y"))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("BTC-USD", "1m") not in stored(stub)


def test_pages_cover_the_window_exactly(stub):
    start, end = iso("2016-01-01T00:00:00Z"), iso("2024-01-01T00:00:00Z")
    pages, token = [], ""
    while True:
        reply = stub.GetBars(fetch_pb2.GetBarsRequest(symbol="ADA-USD", interval="1d", start=start, end=end,
                                                      page_size=1000, page_token=token), timeout=60)
        pages.append(reply)
        token = reply.next_page_token
        if not token:
            break
    times = [b.time.ToMilliseconds() for p in pages for b in p.bars]
    assert [len(p.bars) for p in pages] == [1000, 1000, 922]  # 2,922 days, 1,000 per page
    assert times[0] == start.ToMilliseconds() and times[-1] == end.ToMilliseconds() - DAY
    assert all(b - a == DAY for a, b in zip(times, times[1:]))
    assert pages[0].origin == "simulated" and pages[0].freshness.HasField("newest_bar")
    newest = stub.GetBars(fetch_pb2.GetBarsRequest(symbol="ADA-USD", interval="1d", start=start, end=end, limit=2500,
                                                   page_size=1000), timeout=60)
    assert len(newest.bars) == 1000 and newest.bars[0].time.ToMilliseconds() == times[-2500]
    one = stub.GetBars(fetch_pb2.GetBarsRequest(symbol="ADA-USD", interval="1d", start=start, end=end, limit=1),
                       timeout=60)
    assert [b.time.ToMilliseconds() for b in one.bars] == [times[-1]] and not one.next_page_token


def test_a_client_deadline_stops_the_fetch_through(stub):
    now = int(time.time() * 1000)
    request = fetch_pb2.GetBarsRequest(symbol="AVAX-USD", interval="1m", start=ts(now - 600 * DAY), limit=1)
    error = error_of(stub.GetBars, request, timeout=0.5)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(2)
    before = stored(stub).get(("AVAX-USD", "1m"), 0)
    time.sleep(3)
    assert stored(stub).get(("AVAX-USD", "1m"), 0) == before  # the work stopped with the caller
    assert before < 600 * 1440


def test_a_year_of_minute_bars_stays_small_and_health_keeps_answering(fetch, stub):
    pid = fetch.proc.pid
    stop = threading.Event()
    busy = threading.Event()  # set while the fetch-through runs
    worst = {"health_s": 0.0, "rss_mb": rss_mb(pid), "checks": 0}

    def watch():
        with grpc.insecure_channel(fetch.addr) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while not stop.is_set():
                started = time.perf_counter()
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                worst["health_s"] = max(worst["health_s"], time.perf_counter() - started)
                worst["rss_mb"] = max(worst["rss_mb"], rss_mb(pid))
                worst["checks"] += busy.is_set()
                assert status == health_pb2.HealthCheckResponse.SERVING
                time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    now = int(time.time() * 1000)
    time.sleep(0.2)
    try:
        busy.set()
        reply = stub.GetBars(fetch_pb2.GetBarsRequest(symbol="SOL-USD", interval="1m", start=ts(now - 365 * DAY),
                                                      limit=1), timeout=300)
        busy.clear()
        page = stub.GetBars(fetch_pb2.GetBarsRequest(symbol="SOL-USD", interval="1m", start=ts(now - 365 * DAY),
                                                     page_size=MAX_PAGE_BARS), timeout=60)
    finally:
        stop.set()
        watcher.join(timeout=10)
    count = stored(stub)[("SOL-USD", "1m")]
    print(f"stored {count} bars; worst health {worst['health_s'] * 1000:.0f} ms, {worst['checks']} checks during; "
          f"peak RSS {worst['rss_mb']:.0f} MB")
    assert count >= 365 * 1440 - 2 and len(reply.bars) == 1
    assert len(page.bars) == MAX_PAGE_BARS and page.next_page_token
    assert worst["checks"] >= 3 and worst["health_s"] < 0.1  # health was asked while the work ran
    assert worst["rss_mb"] < 400


def test_a_lookback_beyond_what_is_stored_loads_the_missing_range(stub):
    """Defect 3: `lookback: 1y` on 1d answered the 91 stored bars."""
    now = int(time.time() * 1000)
    stub.Backfill(fetch_pb2.BackfillRequest(symbol="XRP-USD", interval="1d", start=ts(now - 90 * DAY)), timeout=60)
    assert stored(stub)[("XRP-USD", "1d")] <= 91
    reply = stub.GetBars(fetch_pb2.GetBarsRequest(symbol="XRP-USD", interval="1d", lookback="1y"), timeout=60)
    times = [b.time.ToMilliseconds() for b in reply.bars]
    assert len(times) == 365 and all(b - a == DAY for a, b in zip(times, times[1:]))
    assert not reply.freshness.stale and reply.freshness.stale_after_bars == 3
