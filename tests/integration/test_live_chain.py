"""The live provider chain inside a real Fetch process, against local replay servers."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc
from tests.integration.services import Stack
from tests.replay_server import ReplayServer, SyntheticMarket


def ts(iso: str) -> Timestamp:
    t = Timestamp()
    t.FromJsonString(iso)
    return t


@pytest.fixture
def exchange():
    with ReplayServer() as server:
        server.serve_market(SyntheticMarket())
        yield server


def start_fetch(redis_server, tmp_path, provider: str, binance_url: str) -> Stack:
    stack = Stack(redis_server.url[:-1] + "5", tmp_path)
    stack.add("fetch", "--provider", provider, "--binance-url", binance_url, "--refresh-s", "0",
              "--provider-timeout-s", "20")
    stack["fetch"].wait_serving()
    return stack


def backfill(stack: Stack, symbol: str = "BTC-USD"):
    with grpc.insecure_channel(stack["fetch"].addr) as channel:
        return fetch_pb2_grpc.FetchServiceStub(channel).Backfill(fetch_pb2.BackfillRequest(
            symbol=symbol, interval="1h", start=ts("2024-01-01T00:00:00Z"), end=ts("2024-01-03T00:00:00Z")),
            timeout=60)


def test_binance_serves_through_the_chain(redis_server, tmp_path, exchange):
    stack = start_fetch(redis_server, tmp_path, "binance,simulated", exchange.url)
    try:
        reply = backfill(stack)
        assert reply.source == "binance" and reply.bars_stored == 48
        assert any(r.path == "/api/v3/klines" for r in exchange.requests)
    finally:
        stack.stop()


def test_a_dead_provider_fails_over_to_simulated_loudly(redis_server, tmp_path):
    with ReplayServer() as dead:  # every route unknown: 404 HTML pages
        stack = start_fetch(redis_server, tmp_path, "binance,simulated", dead.url + "/nothing-here")
        try:
            reply = backfill(stack, "ETH-USD")
            assert reply.source == "simulated" and reply.bars_stored == 48
        finally:
            stack.stop()
    lines = [json.loads(line) for line in stack["fetch"].log().splitlines() if line.startswith("{")]
    assert any(line["msg"] == "NO LIVE PROVIDER ANSWERED: serving simulated data" for line in lines)


def test_no_fallback_means_unavailable_with_the_reasons(redis_server, tmp_path):
    with ReplayServer() as dead:
        dead.fail_randomly(1.0, seed=1, modes=("500",))
        stack = start_fetch(redis_server, tmp_path, "binance", dead.url)
        try:
            with pytest.raises(grpc.RpcError) as exc:
                backfill(stack, "SOL-USD")
            with grpc.insecure_channel(stack["fetch"].addr) as channel:
                listed = fetch_pb2_grpc.FetchServiceStub(channel).ListSymbols(fetch_pb2.ListSymbolsRequest(), timeout=10)
            assert "SOL-USD" not in [s.symbol for s in listed.series]  # nothing half-written
        finally:
            stack.stop()
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE and "binance" in exc.value.details()
