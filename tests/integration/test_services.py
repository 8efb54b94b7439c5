"""Fetch and Core as real processes on loopback, with a real Redis, called over real gRPC."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import core_pb2, core_pb2_grpc, fetch_pb2, fetch_pb2_grpc


@pytest.fixture(scope="module")
def core(stack):
    with grpc.insecure_channel(stack["core"].addr) as channel:
        yield core_pb2_grpc.CoreServiceStub(channel)


@pytest.fixture(scope="module")
def fetch(stack):
    with grpc.insecure_channel(stack["fetch"].addr) as channel:
        yield fetch_pb2_grpc.FetchServiceStub(channel)


def ts(iso: str) -> Timestamp:
    t = Timestamp()
    t.FromJsonString(iso)
    return t


def call_error(fn, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        fn(request, timeout=30)
    return exc.value


def test_get_stats_returns_numbers_then_comes_from_cache(core):
    request = core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1h", lookback="7d")
    first = core.GetStats(request, timeout=60)
    assert first.count >= 7 * 24 - 1 and first.source == "simulated" and first.data_version > 0
    for name in ("first", "last", "mean", "min", "max", "change", "volatility", "annualized_volatility",
                 "max_drawdown", "current_drawdown", "sharpe", "var_95", "cvar_95", "downside_deviation", "sortino"):
        assert first.HasField(name), name
    assert first.min <= first.mean <= first.max and -1 <= first.max_drawdown <= 0
    assert first.periods_per_year == 8760 and not first.cached
    assert not first.HasField("beta") and first.benchmark == ""  # beta against itself is not a thing
    second = core.GetStats(request, timeout=30)
    if second.data_version == first.data_version:
        assert second.cached and second.sharpe == first.sharpe


def test_beta_against_benchmark(core):
    stats = core.GetStats(core_pb2.GetStatsRequest(symbol="ETH-USD", lookback="30d"), timeout=60)
    assert stats.HasField("beta") and stats.benchmark == "BTC-USD" and 0 < stats.beta < 3


@pytest.mark.parametrize("request_, code, needle", [
    (core_pb2.GetStatsRequest(symbol="BTCUSD"), grpc.StatusCode.INVALID_ARGUMENT, "symbol"),
    (core_pb2.GetStatsRequest(symbol="BTC-USD", interval="2h"), grpc.StatusCode.INVALID_ARGUMENT, "interval"),
    (core_pb2.GetStatsRequest(symbol="BTC-USD", lookback="thirty days"), grpc.StatusCode.INVALID_ARGUMENT,
     "lookback"),
    (core_pb2.GetStatsRequest(symbol="BTC-USD", start=ts("2025-01-02T00:00:00Z"), end=ts("2025-01-01T00:00:00Z")),
     grpc.StatusCode.INVALID_ARGUMENT, "end"),
    (core_pb2.GetStatsRequest(symbol="NOPE-USD"), grpc.StatusCode.NOT_FOUND, "NOPE-USD"),
    (core_pb2.GetStatsRequest(symbol="BTC-USD", risk_free_rate=-2), grpc.StatusCode.INVALID_ARGUMENT,
     "risk_free_rate"),
])
def test_bad_input_gets_a_clear_status(core, request_, code, needle):
    error = call_error(core.GetStats, request_)
    assert error.code() == code and needle in error.details()


def test_too_few_bars_is_failed_precondition(core):
    stats = core.GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD", lookback="2d"), timeout=30)
    end = stats.end.ToMilliseconds()
    start = Timestamp()
    start.FromMilliseconds(end)
    error = call_error(core.GetStats, core_pb2.GetStatsRequest(symbol="BTC-USD", start=start))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "need at least 2" in error.details()


def test_timeseries_downsampled_with_extremes(core):
    full = core.GetTimeseries(core_pb2.GetTimeseriesRequest(symbol="SOL-USD", lookback="30d", max_points=10000),
                              timeout=60)
    small = core.GetTimeseries(core_pb2.GetTimeseriesRequest(symbol="SOL-USD", lookback="30d", max_points=50),
                               timeout=60)
    assert len(full.points) == full.total_points > 500 and len(small.points) <= 50
    closes = [p.close for p in full.points]
    kept = [p.close for p in small.points]
    assert max(kept) == max(closes) and min(kept) == min(closes)
    assert small.points[0].time == full.points[0].time and small.points[-1].time == full.points[-1].time
    assert all(-1 <= p.drawdown <= 0 for p in full.points)


def test_correlation_matrix(core):
    reply = core.GetCorrelation(core_pb2.GetCorrelationRequest(symbols=["BTC-USD", "ETH-USD", "SOL-USD"],
                                                               lookback="30d"), timeout=60)
    matrix = [list(r.values) for r in reply.rows]
    assert reply.count > 100 and len(matrix) == 3
    for i in range(3):
        assert matrix[i][i] == pytest.approx(1.0)
        for j in range(3):
            assert matrix[i][j] == pytest.approx(matrix[j][i]) and -1 <= matrix[i][j] <= 1
    error = call_error(core.GetCorrelation, core_pb2.GetCorrelationRequest(symbols=["BTC-USD"]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "symbols" in error.details()


def test_portfolio_risk(core):
    holdings = [core_pb2.Holding(symbol="BTC-USD", weight=0.6), core_pb2.Holding(symbol="ETH-USD", weight=0.4)]
    reply = core.GetPortfolioRisk(core_pb2.GetPortfolioRiskRequest(holdings=holdings, lookback="30d"), timeout=60)
    assert reply.annualized_volatility > 0 and reply.var_95 < 0 and reply.cvar_95 <= reply.var_95
    assert sum(c.contribution_pct for c in reply.contributions) == pytest.approx(1.0)
    assert sum(c.contribution for c in reply.contributions) == pytest.approx(reply.volatility)
    bad = [core_pb2.Holding(symbol="BTC-USD", weight=0.6), core_pb2.Holding(symbol="ETH-USD", weight=0.6)]
    error = call_error(core.GetPortfolioRisk, core_pb2.GetPortfolioRiskRequest(holdings=bad, lookback="30d"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "holdings.weight" in error.details()
    normalized = core.GetPortfolioRisk(
        core_pb2.GetPortfolioRiskRequest(holdings=bad, lookback="30d", normalize=True), timeout=60)
    assert [c.weight for c in normalized.contributions] == pytest.approx([0.5, 0.5])
    negative = [core_pb2.Holding(symbol="BTC-USD", weight=1.5), core_pb2.Holding(symbol="ETH-USD", weight=-0.5)]
    error = call_error(core.GetPortfolioRisk, core_pb2.GetPortfolioRiskRequest(holdings=negative))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "non-negative" in error.details()


def test_fetch_lists_backfills_and_serves_bars(fetch):
    listed = fetch.ListSymbols(fetch_pb2.ListSymbolsRequest(), timeout=30)
    assert listed.watchlist == ["BTC-USD", "ETH-USD", "SOL-USD"]
    start = ts("2024-01-01T00:00:00Z")
    end = ts("2024-01-03T00:00:00Z")
    reply = fetch.Backfill(fetch_pb2.BackfillRequest(symbol="ADA-USD", interval="1d", start=start, end=end),
                           timeout=30)
    assert reply.bars_stored == 2 and reply.source == "simulated" and reply.data_version >= 1
    bars = fetch.GetBars(fetch_pb2.GetBarsRequest(symbol="ADA-USD", interval="1d", start=start, end=end), timeout=30)
    assert [b.time.ToJsonString() for b in bars.bars] == ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]
    assert all(b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high for b in bars.bars)
    error = call_error(fetch.Backfill, fetch_pb2.BackfillRequest(symbol="ADA-USD", interval="1d"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "start" in error.details()
    error = call_error(fetch.GetBars, fetch_pb2.GetBarsRequest(symbol="ZZZZ-USD", interval="1d"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_fetch_through_from_core(core):
    """Core asks Fetch for a series nobody stored yet."""
    stats = core.GetStats(core_pb2.GetStatsRequest(symbol="XRP-USD", interval="4h", lookback="30d"), timeout=60)
    assert stats.count > 100 and stats.source == "simulated"


def test_watch_bars_streams_writes(fetch):
    stream = fetch.WatchBars(fetch_pb2.WatchBarsRequest(symbols=["DOGE-USD"]), timeout=20)
    time.sleep(0.5)  # let the subscription start before the write
    fetch.Backfill(fetch_pb2.BackfillRequest(symbol="DOGE-USD", interval="1d", start=ts("2024-03-01T00:00:00Z"),
                                             end=ts("2024-03-05T00:00:00Z")), timeout=30)
    update = next(iter(stream))
    stream.cancel()
    assert update.symbol == "DOGE-USD" and update.interval == "1d" and len(update.bars) == 4


def test_metrics_show_per_method_rpc_counts(stack, core):
    core.GetStats(core_pb2.GetStatsRequest(symbol="BTC-USD", lookback="1d"), timeout=30)
    call_error(core.GetStats, core_pb2.GetStatsRequest(symbol="BAD"))
    text = urllib.request.urlopen(f"http://127.0.0.1:{stack['core'].metrics_port}/metrics", timeout=5).read().decode()
    labels = 'grpc_method="GetStats",grpc_service="cryptolens.v1.CoreService",grpc_type="unary"'
    assert f'grpc_server_handled_total{{grpc_code="OK",{labels}}}' in text
    assert f'grpc_server_handled_total{{grpc_code="INVALID_ARGUMENT",{labels}}}' in text
    assert f'grpc_server_started_total{{{labels}}}' in text
    assert f'grpc_server_handling_seconds_bucket{{{labels},le="+Inf"}}' in text
    assert 'cryptolens_redis_up{grpc_service="cryptolens.v1.CoreService"} 1.0' in text
