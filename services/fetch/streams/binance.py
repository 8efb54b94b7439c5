"""Binance spot combined streams: ``<market>@aggTrade`` and ``<market>@kline_1m`` per symbol.

The streams are named in the URL (``/stream?streams=a/b/c``), so nothing is sent after connect.
Frames come wrapped (``{"stream", "data"}``); raw ``/ws`` payloads are accepted too. Times are
epoch ms; prices decimal strings. Unknown and missing optional fields are ignored (``@trade``
lost its ``b``/``a`` fields in 2024). Liveness: the server pings every 20 s and aiohttp answers;
a connection lives at most 24 h, and ``serverShutdown`` announces a close.
"""

from __future__ import annotations

from services.fetch.providers.binance import market
from services.fetch.streams.messages import BadFrame, Kline, Parsed, Trade, amount, json_object, price

DEFAULT_URL = "wss://stream.binance.com:443"  # Binance serves streams on 9443 and 443; 443 passes the chart's egress policy
MAX_AGE_S = 23.5 * 3600  # reconnect before Binance's 24 h limit
SILENCE_S = 0.0  # no application heartbeat: websocket pings keep the connection honest


class BinanceStream:
    name = "binance"
    max_age_s = MAX_AGE_S
    silence_s = SILENCE_S

    def __init__(self, symbols: list[str], base_url: str = DEFAULT_URL):
        self.symbols = {market(s): s for s in symbols}
        self.base_url = base_url.rstrip("/")

    def url(self) -> str:
        names = [f"{m.lower()}@{kind}" for m in self.symbols for kind in ("aggTrade", "kline_1m")]
        return f"{self.base_url}/stream?streams={'/'.join(names)}"

    def subscribe_messages(self) -> list[str]:
        return []

    def reset(self) -> None:
        """Nothing carries over between connections."""

    def parse(self, text: str | bytes) -> Parsed:
        frame = json_object(text)
        data = frame.get("data", frame)
        if not isinstance(data, dict):
            raise BadFrame("data is not an object")
        kind = data.get("e")
        try:
            if kind in ("aggTrade", "trade"):
                symbol = self.symbols.get(data["s"])
                if symbol is None:
                    return Parsed("ignored")
                trade = Trade(symbol, int(data["T"]), price(data["p"]), amount(data["q"]))
                return Parsed("trade", [trade], int(data["E"]))
            if kind == "kline":
                k = data["k"]
                symbol = self.symbols.get(k["s"])
                if symbol is None or k["i"] != "1m":
                    return Parsed("ignored")
                kline = Kline(symbol, int(k["t"]), price(k["o"]), price(k["h"]), price(k["l"]), price(k["c"]),
                              amount(k["v"]), int(data["E"]), bool(k["x"]))
                return Parsed("kline", [kline], int(data["E"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadFrame(f"{kind} frame: {str(exc)[:60]}") from None
        if kind == "serverShutdown":
            return Parsed("shutdown")
        if "result" in frame and "id" in frame:  # an answer to a control request
            return Parsed("control")
        return Parsed("ignored")  # depth, bookTicker and other streams we did not ask for
