"""Conversions between internal values (epoch ms, bar arrays) and protobuf messages."""

from __future__ import annotations

import time

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from cryptolens.v1 import common_pb2
from services.common.bars import FLAG_PARTIAL, FLAG_SUSPECT


def now_ms() -> int:
    return int(time.time() * 1000)


def to_timestamp(ms: int) -> Timestamp:
    ms = int(ms)
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def from_timestamp(message, field: str) -> int | None:
    """Epoch ms of a Timestamp field, or None when the field is unset."""
    if not message.HasField(field):
        return None
    ts = getattr(message, field)
    return ts.seconds * 1000 + ts.nanos // 1_000_000


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
