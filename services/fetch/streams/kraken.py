"""Kraken spot ``trade`` channel, v2 (``wss://ws.kraken.com/v2``, preferred) and v1 (``wss://ws.kraken.com``).

The URL picks the protocol: a path ending in ``/v2`` speaks v2, anything else v1 (the recorded
sessions are v1). Symbols: v2 says ``BTC/USD``, v1 ``XBT/USD`` (and ``XDG`` for DOGE).
- v2: JSON objects; ``{"channel":"trade","type":"update"|"snapshot","data":[{symbol, price, qty,
  timestamp (RFC 3339)}]}``; numbers are JSON numbers. The snapshot holds trades from before we
  subscribed: state, not new trades. Heartbeat ``{"channel":"heartbeat"}``.
- v1: data frames are arrays ``[channelID, [[price, volume, time, side, type, misc], ...], "trade", pair]``
  with ``time`` epoch seconds as a string; control frames are objects with ``event``
  (``heartbeat``, ``systemStatus``, ``subscriptionStatus``).
Both send a heartbeat about every second when idle, so ten silent seconds mean a dead feed.
"""

from __future__ import annotations

import json

from services.fetch.providers.kraken import ASSET_CODES
from services.fetch.streams.messages import BadFrame, Parsed, Trade, amount, iso_ms, json_frame, price

DEFAULT_URL = "wss://ws.kraken.com/v2"
SILENCE_S = 10.0
MAX_AGE_S = 0.0


def v1_pair(symbol: str) -> str:
    base, _, quote = symbol.partition("-")
    return f"{ASSET_CODES.get(base, base)}/{ASSET_CODES.get(quote, quote)}"


def v2_pair(symbol: str) -> str:
    return symbol.replace("-", "/")


class KrakenStream:
    name = "kraken"
    max_age_s = MAX_AGE_S
    silence_s = SILENCE_S

    def __init__(self, symbols: list[str], base_url: str = DEFAULT_URL):
        self.base_url = base_url
        self.v2 = base_url.rstrip("/").endswith("/v2")
        naming = v2_pair if self.v2 else v1_pair
        self.pairs = {naming(s): s for s in symbols}

    def reset(self) -> None:
        """Nothing carries over between connections."""

    def url(self) -> str:
        return self.base_url

    def subscribe_messages(self) -> list[str]:
        pairs = list(self.pairs)
        if self.v2:
            return [json.dumps({"method": "subscribe", "params": {"channel": "trade", "symbol": pairs}})]
        return [json.dumps({"event": "subscribe", "pair": pairs, "subscription": {"name": "trade"}})]

    def parse(self, text: str | bytes) -> Parsed:
        frame = json_frame(text)
        try:
            if isinstance(frame, list):
                return self._v1_data(frame)
            if not isinstance(frame, dict):
                raise BadFrame("neither an array nor an object")
            if "event" in frame:
                event = frame["event"]
                if event == "heartbeat":
                    return Parsed("heartbeat")
                if event == "subscriptionStatus" and frame.get("status") == "error":
                    return Parsed("error")
                return Parsed("control")
            return self._v2(frame)
        except (KeyError, IndexError, TypeError) as exc:
            raise BadFrame(f"frame lacks {str(exc)[:40]}") from None

    def _v1_data(self, frame: list) -> Parsed:
        if len(frame) < 4 or frame[-2] != "trade":
            return Parsed("ignored")
        symbol = self.pairs.get(frame[-1])
        if symbol is None:
            return Parsed("ignored")
        trades = []
        for row in frame[1]:
            try:
                ts = int(float(row[2]) * 1000)
            except (TypeError, ValueError):
                raise BadFrame(f"trade time {str(row[2])[:20]!r} is not epoch seconds") from None
            trades.append(Trade(symbol, ts, price(row[0]), amount(row[1])))
        return Parsed("trade", trades, max(t.ts_ms for t in trades) if trades else None)

    def _v2(self, frame: dict) -> Parsed:
        channel = frame.get("channel")
        if channel == "heartbeat":
            return Parsed("heartbeat")
        if "method" in frame:  # subscribe ack or pong
            return Parsed("control" if frame.get("success", True) else "error")
        if channel != "trade":
            return Parsed("control" if channel == "status" else "ignored")
        trades = []
        for row in frame["data"]:
            symbol = self.pairs.get(row["symbol"])
            if symbol is not None:
                trades.append(Trade(symbol, iso_ms(row["timestamp"]), price(row["price"]), amount(row["qty"])))
        if frame.get("type") == "snapshot":
            return Parsed("control")  # trades from before we listened: REST has them
        return Parsed("trade", trades, max(t.ts_ms for t in trades) if trades else None)
