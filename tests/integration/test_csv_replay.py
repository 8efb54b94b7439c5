"""Replaying real history: Fetch's csv provider serves exactly the files given, whole, at their
interval; another file or an earlier simulated run on the same Redis is replaced, never mixed;
bad files are refused at start with one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import core_pb2, core_pb2_grpc, fetch_pb2, fetch_pb2_grpc
from services.common.csv_bars import load_csv
from tests.conftest import ROOT
from tests.integration.services import Stack

FILES = {"BTC-USD": "BTCUSDT_1d_cdd-binance.csv", "ETH-USD": "ETHUSDT_1d_cdd-binance.csv",
         "SOL-USD": "SOLUSDT_1d_cdd-binance.csv"}


@pytest.fixture(scope="module")
def replay(redis_server, shared_data, tmp_path_factory):
    prices = shared_data / "prices"
    stack = Stack(redis_server.url[:-1] + "3", tmp_path_factory.mktemp("replay"))
    stack.add("fetch", "--provider", "csv", "--interval", "1d", "--symbols", "BTC-USD,ETH-USD",
              "--csv-file", f"BTC-USD:1d={prices / 'BTCUSDT_1d_cdd-binance.csv'},"
                            f"ETH-USD:1d={prices / 'ETHUSDT_1d_cdd-binance.csv'}", "--history-days", "4000")
    stack.add("core", "--interval", "1d")
    try:
        stack["fetch"].wait_serving()
        stack["core"].wait_serving()
        with grpc.insecure_channel(stack["core"].addr) as channel:
            yield core_pb2_grpc.CoreServiceStub(channel)
    finally:
        stack.stop()


def test_btc_history_shows_the_real_events(replay):
    start = Timestamp()
    start.FromJsonString("2017-08-17T00:00:00Z")
    stats = replay.GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1d", start=start), timeout=60)
    assert stats.source == "csv" and stats.count == 3142
    assert stats.worst_return == pytest.approx(-0.395, abs=0.001)
    assert stats.worst_return_time.ToJsonString() == "2020-03-12T00:00:00Z"
    assert stats.max_drawdown == pytest.approx(-0.832, abs=0.001)
    assert stats.max_drawdown_time.ToJsonString() == "2018-12-15T00:00:00Z"
    assert len(stats.gaps) == 4  # the four 2026 gaps, reported not filled


def test_unknown_symbol_with_csv_only_is_not_found(replay):
    with pytest.raises(grpc.RpcError) as exc:
        replay.GetStats(core_pb2.GetStatsRequest(symbol="SOL-USD", interval="1d"), timeout=60)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


# --- Fetch alone, the way `cryptolens up --csv-file ...` runs it: no --history-days ------------


def run_fetch(url: str, tmp_path, *args: str) -> Stack:
    stack = Stack(url, tmp_path)
    (tmp_path).mkdir(parents=True, exist_ok=True)
    stack.add("fetch", *args)
    stack["fetch"].wait_serving()
    return stack


def wait_series(stub, want: dict[str, int], timeout: float = 30.0) -> dict[str, fetch_pb2.SeriesInfo]:
    deadline = time.monotonic() + timeout
    while True:
        listed = {s.symbol: s for s in stub.ListSymbols(fetch_pb2.ListSymbolsRequest(), timeout=10).series
                  if s.interval == "1d"}
        if all(symbol in listed and listed[symbol].count == n for symbol, n in want.items()):
            return listed
        if time.monotonic() > deadline:
            raise AssertionError(f"series never matched {want}: {[(s, i.count, i.origin) for s, i in listed.items()]}")
        time.sleep(0.3)


def closes(stub, symbol: str) -> list[tuple[int, float]]:
    out, token = [], ""
    while True:
        reply = stub.GetBars(fetch_pb2.GetBarsRequest(symbol=symbol, interval="1d", lookback="3650d",
                                                      page_size=1000, page_token=token), timeout=30)
        out += [(b.time.ToMilliseconds(), b.close) for b in reply.bars]
        token = reply.next_page_token
        if not token:
            return out


def file_closes(path) -> list[tuple[int, float]]:
    bars = load_csv(path, "1d").bars
    return list(zip(bars["ts"].tolist(), bars["close"].tolist()))


def csv_args(prices, files: dict[str, str]) -> list[str]:
    return ["--provider", "csv", "--csv-file", ",".join(f"{s}:1d={prices / f}" for s, f in files.items())]


def test_replay_serves_every_bar_of_each_file_then_another_file_replaces_it(redis_server, shared_data, tmp_path):
    """Defect 2: only the 90 days before the wall clock were loaded (0 bars of these files), and a
    second run with another ETH file kept serving the first file's bars."""
    prices = shared_data / "prices"
    url = redis_server.url[:-1] + "8"
    first = run_fetch(url, tmp_path / "first", *csv_args(prices, FILES))
    try:
        with grpc.insecure_channel(first["fetch"].addr) as channel:
            stub = fetch_pb2_grpc.FetchServiceStub(channel)
            want = {s: len(load_csv(prices / f, "1d").bars) for s, f in FILES.items()}
            assert want == {"BTC-USD": 3142, "ETH-USD": 3142, "SOL-USD": 2052}
            listed = wait_series(stub, want)
            assert closes(stub, "ETH-USD") == file_closes(prices / FILES["ETH-USD"])
            first_origin = listed["ETH-USD"].origin
    finally:
        first["fetch"].stop(signal.SIGKILL)  # dies holding its leases: the next run must not wait them out
    other = {**FILES, "ETH-USD": "ETHUSDT_1d_cdd-binance-2021export.csv"}
    second = run_fetch(url, tmp_path / "second", *csv_args(prices, other))
    try:
        with grpc.insecure_channel(second["fetch"].addr) as channel:
            stub = fetch_pb2_grpc.FetchServiceStub(channel)
            listed = wait_series(stub, {"ETH-USD": 1408, "BTC-USD": 3142})
            assert closes(stub, "ETH-USD") == file_closes(prices / other["ETH-USD"])  # that file, and only it
            assert listed["ETH-USD"].origin.startswith("csv:") and listed["ETH-USD"].origin != first_origin
            assert listed["BTC-USD"].freshness.stale  # the files end in March: old, and said so
    finally:
        second.stop()


def test_a_file_changed_while_fetch_runs_is_served_anew(scratch_redis_url, shared_data, tmp_path):
    """"Re-ingested when a file changes": the new content replaces the series without a restart."""
    prices = shared_data / "prices"
    live_file = tmp_path / "eth.csv"
    live_file.write_bytes((prices / FILES["ETH-USD"]).read_bytes())
    redis.Redis.from_url(scratch_redis_url).flushdb()
    stack = run_fetch(scratch_redis_url, tmp_path / "run", "--provider", "csv", "--refresh-s", "1",
                      "--lease-s", "10", "--csv-file", f"ETH-USD:1d={live_file}")
    try:
        with grpc.insecure_channel(stack["fetch"].addr) as channel:
            stub = fetch_pb2_grpc.FetchServiceStub(channel)
            before = wait_series(stub, {"ETH-USD": 3142})["ETH-USD"].origin
            other = prices / "ETHUSDT_1d_cdd-binance-2021export.csv"
            live_file.write_bytes(other.read_bytes())
            after = wait_series(stub, {"ETH-USD": 1408})["ETH-USD"]
            assert after.origin != before and closes(stub, "ETH-USD") == file_closes(other)
    finally:
        stack.stop()


def test_replay_after_a_simulated_run_serves_csv_bars_only(redis_server, shared_data, tmp_path):
    """Defect 2: a run after a simulated run served the simulated bars labelled csv."""
    prices = shared_data / "prices"
    url = redis_server.url[:-1] + "9"
    simulated = run_fetch(url, tmp_path / "sim", "--provider", "simulated", "--symbols", "BTC-USD",
                          "--interval", "1d", "--history-days", "4000", "--refresh-s", "1", "--lease-s", "5")
    try:
        with grpc.insecure_channel(simulated["fetch"].addr) as channel:
            stub = fetch_pb2_grpc.FetchServiceStub(channel)
            deadline = time.monotonic() + 30
            while not any(s.symbol == "BTC-USD" and s.interval == "1d" and s.count > 3000
                          for s in stub.ListSymbols(fetch_pb2.ListSymbolsRequest(), timeout=10).series):
                assert time.monotonic() < deadline, "the simulated run stored nothing"
                time.sleep(0.3)
    finally:
        simulated.stop()
    replay = run_fetch(url, tmp_path / "csv", *csv_args(prices, {"BTC-USD": FILES["BTC-USD"]}))
    try:
        with grpc.insecure_channel(replay["fetch"].addr) as channel:
            stub = fetch_pb2_grpc.FetchServiceStub(channel)
            listed = wait_series(stub, {"BTC-USD": 3142})
            assert closes(stub, "BTC-USD") == file_closes(prices / FILES["BTC-USD"])
            assert listed["BTC-USD"].origin.startswith("csv:") and listed["BTC-USD"].source == "csv"
    finally:
        replay.stop()


@pytest.mark.parametrize("content, reason", [
    (None, "no such file"),
    (b"", "the file is empty"),
    (b"\x00\x01\x02binary\xff\xfe" * 50, "binary content"),
    (b"timestamp,open,high,low,close,volume\n1672531200,1,2,0.5,1.5,10\n1672617600,1,2,0.5,1.5,10,9,9\n",
     "ragged rows"),
    (b"timestamp,open,high,low,close,volume\nx,y,z,w,v,u\n", "no valid bar"),
])
def test_a_bad_file_is_refused_at_start_with_one_line(tmp_path, content, reason):
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "services.cli", "serve", "fetch", "--provider", "csv",
                           "--csv-file", f"BTC-USD:1d={path}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and reason in lines[0] and "Traceback" not in proc.stderr


def test_a_file_broken_after_start_is_unavailable_not_internal(redis_server, shared_data, tmp_path):
    path = tmp_path / "btc.csv"
    path.write_bytes((shared_data / "prices" / "BTCUSD_1d_kraken.csv").read_bytes())
    stack = run_fetch(redis_server.url[:-1] + "12", tmp_path / "svc", "--provider", "csv", "--refresh-s", "0",
                      "--csv-file", f"BTC-USD:1d={path}")
    try:
        path.write_bytes(b"timestamp,open,high,low,close,volume\n1,2\n3,4,5,6,7,8,9,10\n")  # ragged now
        with grpc.insecure_channel(stack["fetch"].addr) as channel:
            with pytest.raises(grpc.RpcError) as exc:
                fetch_pb2_grpc.FetchServiceStub(channel).GetBars(
                    fetch_pb2.GetBarsRequest(symbol="BTC-USD", interval="1d"), timeout=30)
    finally:
        stack.stop()
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE and "ragged rows" in exc.value.details()
