"""Replaying real history: Fetch's csv provider feeding Core, checked against known events."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import core_pb2, core_pb2_grpc
from tests.integration.services import Stack


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
