"""Coinbase Exchange feed: ``matches`` (every trade) and ``heartbeat`` (liveness), per product.

A subscribe must reach the feed within 5 s of connect; it is the first thing sent. ``time`` is an
ISO-8601 UTC string; prices decimal strings. ``match.side`` is the maker side (unused here).
On subscribe each product first gets a ``last_match``: a trade from before we listened, taken
as state (where the trade ids start), never as a new trade.

Lost messages: ``sequence`` is per product and counts every book event, so it jumps between
trades by design and only going *backwards* means something (a duplicate or out-of-order frame).
``trade_id`` is per product and consecutive (checked on the capture), so a match whose id skips
ahead says trades were lost: the frame is applied and ``gap`` set, and the caller repairs the
bars from REST. A match with an id already seen is a duplicate and dropped. A heartbeat carries
the product's ``last_trade_id``: one beyond the last match we saw is the same gap, found even when
the lost trades were the last ones.
``ticker`` frames share ``trade_id``/``sequence`` with matches and are not applied as trades.
"""

from __future__ import annotations

import json

from services.fetch.streams.messages import BadFrame, Parsed, Trade, amount, iso_ms, json_object, price

DEFAULT_URL = "wss://ws-feed.exchange.coinbase.com"
SILENCE_S = 10.0  # one heartbeat per product per second: ten silent seconds is a dead feed
MAX_AGE_S = 0.0  # no documented connection limit


class CoinbaseStream:
    name = "coinbase"
    max_age_s = MAX_AGE_S
    silence_s = SILENCE_S

    def __init__(self, symbols: list[str], base_url: str = DEFAULT_URL):
        self.products = list(symbols)  # Coinbase product ids are our canonical symbols
        self.known = set(symbols)
        self.base_url = base_url
        self.reset()

    def reset(self) -> None:
        """Per-connection state: the last trade id and sequence per product."""
        self._last_trade: dict[str, int] = {}
        self._last_seq: dict[str, int] = {}

    def url(self) -> str:
        return self.base_url

    def subscribe_messages(self) -> list[str]:
        return [json.dumps({"type": "subscribe", "product_ids": self.products, "channels": ["matches", "heartbeat"]})]

    def parse(self, text: str | bytes) -> Parsed:
        frame = json_object(text)
        kind = frame.get("type")
        try:
            if kind in ("match", "last_match"):
                return self._match(frame, kind == "last_match")
            if kind == "heartbeat":
                return self._heartbeat(frame)
            if kind == "ticker":
                return Parsed("ignored", event_ms=iso_ms(frame["time"]) if "time" in frame else None)
        except (KeyError, TypeError) as exc:
            raise BadFrame(f"{kind} frame lacks {str(exc)[:40]}") from None
        if kind == "error":
            return Parsed("error")
        if kind == "subscriptions":
            return Parsed("control")
        return Parsed("ignored")

    def _heartbeat(self, frame: dict) -> Parsed:
        product, ts = frame.get("product_id"), iso_ms(frame["time"])
        last_id, told = self._last_trade.get(product), frame.get("last_trade_id")
        if last_id is None or not isinstance(told, int) or told <= last_id:
            return Parsed("heartbeat", event_ms=ts)
        self._last_trade[product] = told
        return Parsed("heartbeat", [], ts, f"{product}: trade ids {last_id + 1}..{told} missing (heartbeat)",
                      product)

    def _match(self, frame: dict, state_only: bool) -> Parsed:
        product = frame["product_id"]
        if product not in self.known:
            return Parsed("ignored")
        trade_id, seq, ts = int(frame["trade_id"]), int(frame["sequence"]), iso_ms(frame["time"])
        trade = Trade(product, ts, price(frame["price"]), amount(frame["size"]))
        last_id, last_seq = self._last_trade.get(product), self._last_seq.get(product)
        if last_id is not None and trade_id <= last_id:
            return Parsed("control", event_ms=ts)  # a duplicate or replayed trade: already counted
        gap = ""
        if last_id is not None and trade_id > last_id + 1:
            gap = f"{product}: trade ids {last_id + 1}..{trade_id - 1} missing (sequence {last_seq} -> {seq})"
        elif last_seq is not None and seq < last_seq:
            gap = f"{product}: sequence went back from {last_seq} to {seq}"
        self._last_trade[product] = trade_id
        self._last_seq[product] = max(seq, last_seq or seq)
        if state_only:
            return Parsed("control", event_ms=ts)
        return Parsed("trade", [trade], ts, gap, product if gap else "")
