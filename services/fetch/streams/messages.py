"""What an exchange parser turns a frame into: trades, 1-minute klines, and the frame's kind.

Kinds (the ``kind`` label of ``cryptolens_stream_frames_total``): ``trade``, ``kline``,
``heartbeat``, ``control`` (acks, status, subscriptions, state on subscribe), ``ignored``
(channels we do not use), ``error`` (an error frame from the exchange), ``shutdown`` (the
exchange says it will close the connection) and ``malformed`` (counted by the connection, never
raised past it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime


class BadFrame(ValueError):
    """A frame that is not valid JSON or lacks a field we need: counted and skipped."""


@dataclass(slots=True)
class Trade:
    symbol: str  # canonical BASE-QUOTE
    ts_ms: int  # exchange trade time
    price: float
    qty: float


@dataclass(slots=True)
class Kline:
    """An exchange 1-minute bar as of ``event_ms``; ``closed`` on its final update."""

    symbol: str
    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    event_ms: int
    closed: bool


@dataclass(slots=True)
class Parsed:
    kind: str
    events: list = field(default_factory=list)  # Trade / Kline, in frame order
    event_ms: int | None = None  # exchange time of the frame, for the lag gauge
    gap: str = ""  # a non-empty text when the frame shows that messages were lost ...
    gap_symbol: str = ""  # ... for this symbol


def price(value) -> float:
    """A positive finite number from an exchange's decimal string (or number)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise BadFrame(f"{str(value)[:20]!r} is not a number") from None
    if not 0 < out < math.inf:  # NaN fails every comparison
        raise BadFrame(f"{str(value)[:20]!r} is not a positive price")
    return out


def amount(value) -> float:
    """A non-negative finite quantity."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise BadFrame(f"{str(value)[:20]!r} is not a number") from None
    if not 0 <= out < math.inf:
        raise BadFrame(f"{str(value)[:20]!r} is not a quantity")
    return out


def iso_ms(text: str) -> int:
    """An ISO-8601 / RFC 3339 time (Coinbase, Kraken v2) as epoch milliseconds."""
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except (TypeError, ValueError):
        raise BadFrame(f"time {str(text)[:32]!r} is not ISO-8601") from None


def json_frame(text: str | bytes):
    """A frame's JSON value."""
    try:
        return json.loads(text)
    except ValueError:
        raise BadFrame("not JSON") from None


def json_object(text: str | bytes) -> dict:
    """A frame that must be one JSON object (Binance, Coinbase)."""
    frame = json_frame(text)
    if not isinstance(frame, dict):
        raise BadFrame("not a JSON object")
    return frame
