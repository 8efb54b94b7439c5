"""Status codes for hostile input, over a real gRPC channel to the real services.

Raw bytes go out through generic calls with identity serializers, exactly what a broken or
hostile client sends: the answer is INVALID_ARGUMENT naming the request type, never UNKNOWN,
and a huge bad value never makes the status itself too big (RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import alerts_pb2, core_pb2, fetch_pb2
from services.common.errors import MAX_MESSAGE_CHARS

GARBAGE = b"\xff\xff\xff\xff"  # wire type 7 does not exist: no message decodes from this
HUGE = "A" * 1_000_000


def methods(full_name: str):
    service = descriptor_pool.Default().FindServiceByName(full_name)
    return [(m.name, m.input_type.full_name, m.server_streaming) for m in service.methods]


CASES = [(name, service, *m) for name, service in (
    ("fetch", "cryptolens.v1.FetchService"), ("core", "cryptolens.v1.CoreService"),
    ("alerts", "cryptolens.v1.AlertsService"), ("core", "grpc.health.v1.Health"))
    for m in methods(service)]


def call_raw(addr: str, path: str, payload: bytes, streaming: bool) -> grpc.RpcError:
    with grpc.insecure_channel(addr) as channel:
        if streaming:
            stream = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
            call = stream(payload, timeout=20)
            with pytest.raises(grpc.RpcError) as exc:
                next(iter(call))
        else:
            unary = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as exc:
                unary(payload, timeout=20)
    return exc.value


@pytest.mark.parametrize("name, service, method, request_type, streaming", CASES,
                         ids=[f"{c[1].rsplit('.', 1)[1]}.{c[2]}" for c in CASES])
def test_undecodable_bytes_are_invalid_argument(stack, name, service, method, request_type, streaming):
    error = call_raw(stack[name].addr, f"/{service}/{method}", GARBAGE, streaming)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert request_type in error.details() and "request" in error.details()


def test_undecodable_bytes_to_reflection_are_invalid_argument(stack):
    with grpc.insecure_channel(stack["core"].addr) as channel:
        bidi = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                     request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as exc:
            list(bidi(iter([GARBAGE]), timeout=20))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc.reflection.v1alpha.ServerReflectionRequest" in exc.value.details()


@pytest.mark.parametrize("name, path, message, streaming, field", [
    ("core", "/cryptolens.v1.CoreService/GetStats", core_pb2.GetStatsRequest(symbol=HUGE), False, "symbol"),
    ("core", "/cryptolens.v1.CoreService/GetStats",
     core_pb2.GetStatsRequest(symbol="BTC-USD", lookback=HUGE), False, "lookback"),
    ("core", "/cryptolens.v1.CoreService/GetTimeseries",
     core_pb2.GetTimeseriesRequest(symbol="BTC-USD", interval=HUGE), False, "interval"),
    ("fetch", "/cryptolens.v1.FetchService/GetBars", fetch_pb2.GetBarsRequest(symbol=HUGE), False, "symbol"),
    ("fetch", "/cryptolens.v1.FetchService/WatchBars", fetch_pb2.WatchBarsRequest(symbols=[HUGE]), True, "symbols"),
    ("alerts", "/cryptolens.v1.AlertsService/ListAlerts", alerts_pb2.ListAlertsRequest(symbol=HUGE), False,
     "symbol"),
    ("alerts", "/cryptolens.v1.AlertsService/WatchAlerts", alerts_pb2.WatchAlertsRequest(symbols=[HUGE]), True,
     "symbols"),
])
def test_a_huge_bad_value_is_quoted_short(stack, name, path, message, streaming, field):
    error = call_raw(stack[name].addr, path, message.SerializeToString(), streaming)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details()[:200])
    details = error.details()
    assert details.startswith(f"{field}: ") and "AAAA" in details
    assert len(details) <= MAX_MESSAGE_CHARS and "1,000,000 chars" in details


YEAR_2200 = Timestamp(seconds=7_258_118_400)


@pytest.mark.parametrize("name, path, message, field", [
    ("core", "/cryptolens.v1.CoreService/GetStats",
     core_pb2.GetStatsRequest(symbol="BTC-USD", start=Timestamp(seconds=10**15)), "start"),
    ("core", "/cryptolens.v1.CoreService/GetTimeseries",
     core_pb2.GetTimeseriesRequest(symbol="BTC-USD", lookback="1d", end=YEAR_2200), "end"),
    ("fetch", "/cryptolens.v1.FetchService/Backfill",
     fetch_pb2.BackfillRequest(symbol="BTC-USD", start=Timestamp(seconds=-10**15)), "start"),
    ("fetch", "/cryptolens.v1.FetchService/GetBars", fetch_pb2.GetBarsRequest(symbol="BTC-USD", end=YEAR_2200), "end"),
    ("alerts", "/cryptolens.v1.AlertsService/Backtest",
     alerts_pb2.BacktestRequest(rule="price_drop", symbol="BTC-USD", start=Timestamp(nanos=-1)), "start"),
])
def test_timestamps_out_of_range_or_in_the_future_are_invalid_argument(stack, name, path, message, field):
    error = call_raw(stack[name].addr, path, message.SerializeToString(), False)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert error.details().startswith(f"{field}: ")
