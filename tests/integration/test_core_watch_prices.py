"""WatchPrices (issue #10 item 4) over gRPC with a real redis-server, a real Fetch and a real Core:
the snapshot, an update after each write, a resume without a missed update (a dropped connection
and a Core restart, through ui/client.py), bad requests naming their field, grpcurl via reflection."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis

from cryptolens.v1 import core_pb2, core_pb2_grpc
from services.common.bars import make_bars
from services.common.store import PriceStore
from tests.conftest import RedisServer, free_port, require_tool
from tests.integration.services import ServiceProcess, Stack
from ui.client import CryptoLensClient

HOUR = 3_600_000
NOW_HOUR = int(time.time() * 1000) // HOUR * HOUR
N = 72  # three days of hourly bars, the newest one open now


def write(url: str, symbol: str, ts: list[int], close: list[float]) -> int:
    async def go():
        client = aioredis.from_url(url, socket_timeout=10)
        try:
            bars = make_bars(np.asarray(ts, np.int64), close, close, close, close, np.ones(len(ts)))
            return (await PriceStore(client).write(symbol, "1h", bars, "test")).version
        finally:
            await client.aclose()
    return asyncio.run(go())


def history(level: float) -> tuple[list[int], list[float]]:
    ts = [NOW_HOUR - (N - 1 - k) * HOUR for k in range(N)]
    return ts, [level * (1 + 0.01 * k) for k in range(N)]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("watch_prices")
    redis = RedisServer(tmp)
    redis.start()
    for symbol, level in (("ADA-USD", 1.0), ("DOT-USD", 10.0)):
        write(redis.url, symbol, *history(level))
    stack = Stack(redis.url, tmp, {"CRYPTOLENS_INTERVAL": "1h"})
    stack.add("fetch", "--provider", "simulated", "--refresh-s", "0", "--history-days", "3")
    stack.add("core", "--grace-s", "0.5")
    try:
        stack["fetch"].wait_serving()
        stack["core"].wait_serving()
        yield redis, stack
    finally:
        stack.stop()
        redis.stop()


class Reader:
    """A WatchPrices stream read in a thread."""

    def __init__(self, addr: str, request: core_pb2.WatchPricesRequest):
        self.channel = grpc.insecure_channel(addr)
        self.call = core_pb2_grpc.CoreServiceStub(self.channel).WatchPrices(request)
        self.messages: list[core_pb2.WatchPricesResponse] = []
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for message in self.call:
                self.messages.append(message)
        except grpc.RpcError as exc:
            self.error = exc

    def wait_for(self, n: int, timeout: float = 20.0) -> list[core_pb2.WatchPricesResponse]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline and self.error is None:
            time.sleep(0.02)
        assert len(self.messages) >= n, f"{len(self.messages)} of {n} messages; error {self.error}"
        return self.messages

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(5)
        self.channel.close()


def test_snapshot_then_one_update_per_write_then_resume(services):
    redis, stack = services
    reader = Reader(stack["core"].addr, core_pb2.WatchPricesRequest(symbols=["ADA-USD", "DOT-USD"], interval="1h"))
    try:
        snapshot = reader.wait_for(2)
        assert [m.symbol for m in snapshot] == ["ADA-USD", "DOT-USD"] and all(m.snapshot for m in snapshot)
        for message, level in zip(snapshot, (1.0, 10.0)):
            _, close = history(level)
            assert message.last == pytest.approx(close[-1])
            # 24 h before the newest bar is the bar 24 positions back.
            assert message.change_24h == pytest.approx(close[-1] / close[-25] - 1, rel=1e-12)
            assert message.change_24h_from.ToMilliseconds() == NOW_HOUR - 24 * HOUR
            assert message.freshness.newest_bar.ToMilliseconds() == NOW_HOUR and not message.freshness.stale
            assert message.source == "test" and message.data_version >= 1 and message.resume_token

        version = write(redis.url, "DOT-USD", [NOW_HOUR], [12.5])  # the open bar's close changes
        update = reader.wait_for(3)[2]
        assert (update.symbol, update.last, update.snapshot, update.data_version, update.write_version) == (
            "DOT-USD", 12.5, False, version, version)
        assert update.change_24h == pytest.approx(12.5 / history(10.0)[1][-25] - 1, rel=1e-12)
        write(redis.url, "SOL-USD", [NOW_HOUR], [99.0])  # not watched: no message
        write(redis.url, "ADA-USD", [NOW_HOUR], [1.5])
        assert reader.wait_for(4)[3].symbol == "ADA-USD"
        time.sleep(0.3)
        assert len(reader.messages) == 4
        token = reader.messages[3].resume_token
    finally:
        reader.close()

    # Writes while nobody listens; the resumed stream sends exactly those, in order, and no snapshot.
    missed = [write(redis.url, "ADA-USD", [NOW_HOUR], [1.6]), write(redis.url, "DOT-USD", [NOW_HOUR], [13.0]),
              write(redis.url, "ADA-USD", [NOW_HOUR], [1.7])]
    resumed = Reader(stack["core"].addr, core_pb2.WatchPricesRequest(symbols=["ADA-USD", "DOT-USD"], interval="1h",
                                                                     after=token))
    try:
        got = resumed.wait_for(3)
        # One message per missed write, in order; each carries the series as it is when sent.
        assert [(m.symbol, m.write_version, m.snapshot) for m in got] == [
            ("ADA-USD", missed[0], False), ("DOT-USD", missed[1], False), ("ADA-USD", missed[2], False)]
        assert [(m.last, m.data_version) for m in got[1:]] == [(13.0, missed[1]), (1.7, missed[2])]
        assert got[0].data_version >= missed[0]
    finally:
        resumed.close()


def test_a_symbol_the_store_lacks_is_fetched_through_for_the_snapshot(services):
    _, stack = services
    reader = Reader(stack["core"].addr, core_pb2.WatchPricesRequest(symbols=["XRP-USD"], interval="1h"))
    try:
        message = reader.wait_for(1)[0]
        assert message.snapshot and message.source == "simulated" and message.HasField("last")
        assert message.freshness.HasField("newest_bar")
    finally:
        reader.close()


def test_the_ui_client_resumes_across_a_core_restart_without_missing_an_update(services):
    redis, stack = services
    client = CryptoLensClient(core_addr=stack["core"].addr)
    seen: list[dict] = []
    stream = client.watch_prices(["ADA-USD"], "1h", retry_s=0.2)
    thread = threading.Thread(target=lambda: [seen.append(m) for m in stream], daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen and seen[0]["snapshot"]
    core = stack["core"]
    core.stop()  # the open stream ends (UNAVAILABLE); the client retries meanwhile
    versions = [write(redis.url, "ADA-USD", [NOW_HOUR], [2.0 + k / 10]) for k in range(3)]
    core.start()
    core.wait_serving()
    versions.append(write(redis.url, "ADA-USD", [NOW_HOUR], [3.0]))
    deadline = time.monotonic() + 30
    while len(seen) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    updates = [m for m in seen if not m.get("snapshot")]
    assert [int(m["write_version"]) for m in updates] == versions, updates  # none missed, none twice
    assert updates[-1]["last"] == 3.0 and int(updates[-1]["data_version"]) == versions[-1]


def test_shutdown_ends_an_open_stream_with_unavailable(services):
    _, stack = services
    reader = Reader(stack["core"].addr, core_pb2.WatchPricesRequest(symbols=["ADA-USD"], interval="1h"))
    try:
        reader.wait_for(1)
        stack["core"].stop()
        reader.thread.join(10)
        assert reader.error is not None and reader.error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        reader.close()
        stack["core"].start()
        stack["core"].wait_serving()


@pytest.mark.parametrize("request_, field", [
    (core_pb2.WatchPricesRequest(symbols=["BTC/USD"]), "symbols"),
    (core_pb2.WatchPricesRequest(), "symbols"),
    (core_pb2.WatchPricesRequest(symbols=["ADA-USD", "ADA-USD"]), "symbols"),
    (core_pb2.WatchPricesRequest(symbols=["ADA-USD"], interval="7m"), "interval"),
    (core_pb2.WatchPricesRequest(symbols=["ADA-USD"], after="not-a-token"), "after"),
])
def test_bad_requests_are_invalid_argument_naming_the_field(services, request_, field):
    _, stack = services
    with grpc.insecure_channel(stack["core"].addr) as channel:
        with pytest.raises(grpc.RpcError) as exc:
            list(core_pb2_grpc.CoreServiceStub(channel).WatchPrices(request_, timeout=10))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in exc.value.details()


def test_grpcurl_lists_and_calls_watch_prices(services):
    _, stack = services
    grpcurl = [require_tool("grpcurl"), "-plaintext", "-max-time", "20"]
    listed = subprocess.run([*grpcurl, stack["core"].addr, "list", "cryptolens.v1.CoreService"],
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and "cryptolens.v1.CoreService.WatchPrices" in listed.stdout.split(), listed
    bad = subprocess.run([*grpcurl, "-d", json.dumps({"symbols": ["nope"]}), stack["core"].addr,
                          "cryptolens.v1.CoreService/WatchPrices"], capture_output=True, text=True, timeout=30)
    assert "InvalidArgument" in bad.stderr and "symbols" in bad.stderr, bad.stderr


def test_fetch_down_leaves_a_calm_gap_in_the_snapshot_not_a_broken_stream(services, tmp_path):
    redis, _ = services
    env = {"CRYPTOLENS_REDIS_URL": redis.url, "CRYPTOLENS_FETCH_ADDR": f"127.0.0.1:{free_port()}",
           "CRYPTOLENS_FETCH_TIMEOUT_S": "1", "CRYPTOLENS_INTERVAL": "1h"}
    core = ServiceProcess("core", free_port(), free_port(), [], env, tmp_path / "core.log").start().wait_serving()
    reader = Reader(core.addr, core_pb2.WatchPricesRequest(symbols=["LINK-USD", "ADA-USD"]))
    try:
        missing, stored = reader.wait_for(2)
        assert missing.symbol == "LINK-USD" and not missing.HasField("last") and missing.freshness.stale
        assert stored.symbol == "ADA-USD" and stored.HasField("last") and reader.error is None
    finally:
        reader.close()
        core.stop()
