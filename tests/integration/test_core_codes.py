"""Hostile input to Core gets a status naming the field and a short message, never UNKNOWN or
INTERNAL (issue 8, defect 6, Core side). Real Core, Fetch and Redis (the session stack)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import core_pb2, core_pb2_grpc

INVALID, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
MB = "X" * 1_000_000
YEAR_2200 = Timestamp(seconds=7_258_118_400)


@pytest.fixture(scope="module")
def core(stack):
    with grpc.insecure_channel(stack["core"].addr, options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
        yield core_pb2_grpc.CoreServiceStub(channel)


def holdings(*pairs):
    return [core_pb2.Holding(symbol=s, weight=w) for s, w in pairs]


CASES = [
    ("GetStats", core_pb2.GetStatsRequest(symbol=MB), INVALID, "symbol"),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD" + MB), INVALID, "symbol"),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", interval=MB), INVALID, "interval"),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", lookback=MB), INVALID, "lookback"),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", benchmark=MB), INVALID, "benchmark"),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", lookback="99999999999y"), INVALID, "lookback"),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1d", lookback="9000y"), INVALID, "lookback"),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1m", lookback="5y"), EXHAUSTED,
     "MAX_WINDOW_BARS"),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", start=Timestamp(seconds=10**15)), INVALID, "start"),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", end=Timestamp(seconds=-10**15)), INVALID, "end"),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", start=Timestamp(seconds=1, nanos=-5)), INVALID, "start"),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", risk_free_rate=float("nan")), INVALID,
     "risk_free_rate"),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", lookback="7d", end=YEAR_2200), INVALID, "end"),
    ("GetTimeseries", core_pb2.GetTimeseriesRequest(symbol="BTC-USD", max_points=2**31 - 1), INVALID,
     "MAX_PAGE_BARS"),
    ("GetTimeseries", core_pb2.GetTimeseriesRequest(symbol="BTC-USD", rolling_window=2**31 - 1), INVALID,
     "rolling_window"),
    ("GetTimeseries", core_pb2.GetTimeseriesRequest(symbol="BTC-USD", lookback="1d", end=YEAR_2200), INVALID,
     "end"),
    ("GetCorrelation", core_pb2.GetCorrelationRequest(symbols=[f"A{i:03d}-USD" for i in range(60)]), INVALID,
     "symbols"),
    ("GetCorrelation", core_pb2.GetCorrelationRequest(symbols=["BTC-USD", "ETH-USD"], method=99), INVALID, "method"),
    ("GetCorrelation", core_pb2.GetCorrelationRequest(symbols=["BTC-USD", MB]), INVALID, "symbols"),
    ("GetPortfolioRisk", core_pb2.GetPortfolioRiskRequest(holdings=holdings(("BTC-USD", 1e308), ("ETH-USD", 1e308)),
                                                          normalize=True), INVALID, "holdings.weight"),
    ("GetPortfolioRisk", core_pb2.GetPortfolioRiskRequest(holdings=holdings(("BTC-USD", float("inf")))), INVALID,
     "holdings.weight"),
    ("GetPortfolioRisk", core_pb2.GetPortfolioRiskRequest(holdings=holdings((MB, 1.0))), INVALID, "holdings.symbol"),
]


@pytest.mark.parametrize("method, request_, code, needle", CASES,
                         ids=[f"{i}-{c[0]}-{c[3]}" for i, c in enumerate(CASES)])
def test_hostile_input_gets_a_short_clear_status(core, method, request_, code, needle):
    with pytest.raises(grpc.RpcError) as exc:
        getattr(core, method)(request_, timeout=30)
    assert exc.value.code() == code, exc.value.details()[:300]
    assert needle in exc.value.details() and len(exc.value.details()) < 300


def test_a_future_window_does_not_anchor_later_ones(core):
    with pytest.raises(grpc.RpcError):
        core.GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD", start=YEAR_2200), timeout=30)
    stats = core.GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD", lookback="7d"), timeout=30)
    assert stats.count >= 7 * 24 - 1 and stats.coverage.fraction > 0.99 and not stats.freshness.stale
