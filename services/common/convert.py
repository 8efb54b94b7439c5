"""Conversions between internal values (epoch ms, bar arrays) and protobuf messages."""

from __future__ import annotations

import time

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import common_pb2
from services.common.bars import FLAG_PARTIAL, FLAG_SUSPECT
from services.common.errors import InvalidArgument
from services.common.limits import MAX_FUTURE_MS

# google.protobuf.Timestamp's valid range, 0001-01-01 to 9999-12-31: outside it a value is no time.
_MIN_S, _MAX_S = -62_135_596_800, 253_402_300_799


def now_ms() -> int:
    return int(time.time() * 1000)


def to_timestamp(ms: int) -> Timestamp:
    ms = int(ms)
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def from_timestamp(message, field: str) -> int | None:
    """Epoch ms of a request's Timestamp field, or None when the field is unset.

    A value outside the Timestamp range, or more than MAX_FUTURE_MS ahead of the clock (it would
    anchor windows in the future), is INVALID_ARGUMENT naming the field.
    """
    if not message.HasField(field):
        return None
    ts = getattr(message, field)
    if not (_MIN_S <= ts.seconds <= _MAX_S and 0 <= ts.nanos < 1_000_000_000):
        raise InvalidArgument(field, f"seconds={ts.seconds} nanos={ts.nanos} is not a valid Timestamp "
                                     "(0001-01-01 to 9999-12-31)")
    ms = ts.seconds * 1000 + ts.nanos // 1_000_000
    if ms > now_ms() + MAX_FUTURE_MS:
        raise InvalidArgument(field, f"{ts.ToJsonString()} is more than {MAX_FUTURE_MS // 3_600_000} h ahead of "
                                     "the clock")
    return ms


def bars_to_pb(bars: np.ndarray) -> list[common_pb2.Bar]:
    flags = bars["flags"]
    return [
        common_pb2.Bar(time=to_timestamp(t), open=o, high=h, low=lo, close=c, volume=v,
                       partial=bool(f & FLAG_PARTIAL), suspect=bool(f & FLAG_SUSPECT))
        for t, o, h, lo, c, v, f in zip(bars["ts"].tolist(), bars["open"].tolist(), bars["high"].tolist(),
                                        bars["low"].tolist(), bars["close"].tolist(), bars["volume"].tolist(),
                                        flags.tolist())
    ]


def gaps_to_pb(gaps: list[tuple[int, int]], step_ms: int) -> list[common_pb2.Gap]:
    return [common_pb2.Gap(start=to_timestamp(a), end=to_timestamp(b), missing_bars=(b - a) // step_ms + 1)
            for a, b in gaps]
