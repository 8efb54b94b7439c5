"""The thin gRPC client the dashboard uses for every number it shows. No analytics here."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Iterator

import grpc
import pandas as pd
from google.protobuf.json_format import MessageToDict, ParseDict

from cryptolens.v1 import (alerts_pb2, alerts_pb2_grpc, core_pb2, core_pb2_grpc, fetch_pb2,
                           fetch_pb2_grpc)
from services.common import tls


class ServiceError(Exception):
    """A call failed; the message is meant for a person."""


# round_robin over every address the target names (dns:/// on a headless Service, or
# ipv4:host:p1,host:p2): each call goes to the next ready replica, where gRPC's default, pick_first,
# would send them all to one (with a single address the two are the same). A read that a stopping
# replica refused (UNAVAILABLE) or dropped before starting it (gRPC answers CANCELLED then,
# grpc/grpc#41785) is tried again, on the next replica. The rule writes are not retried: one that
# ran but lost its answer must not run twice.
_SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {"name": [{}], "retryPolicy": {
            "maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s", "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"]}},
        {"name": [{"service": "cryptolens.v1.AlertsService", "method": m}
                  for m in ("CreateRule", "UpdateRule", "DeleteRule")]},
    ],
})


def _channel(addr: str) -> grpc.Channel:
    options = [("grpc.service_config", _SERVICE_CONFIG)]
    return tls.channel(addr, tls.ClientTLS.from_env(), options)  # TLS when CRYPTOLENS_TLS_CA_FILE is set


def _as_dict(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True)


def _resumed(service: str, method, request_after, after: str, retry_s: float) -> Iterator[dict]:
    """A resumable server stream as dicts, for as long as the caller iterates: whenever it ends (a
    connection age-out, a restarted or unreachable service) it is called again from the last
    ``resume_token``, so nothing is missed while the service's log still holds it."""
    token = after
    while True:
        try:
            for update in method(request_after(token)):
                token = update.resume_token
                yield _as_dict(update)
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                  grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ServiceError(f"{service}: {exc.code().name}: {exc.details()}") from None
        time.sleep(retry_s)


@dataclass
class CryptoLensClient:
    fetch_addr: str = "127.0.0.1:50051"
    core_addr: str = "127.0.0.1:50052"
    alerts_addr: str = "127.0.0.1:50053"
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls) -> "CryptoLensClient":
        env = os.environ
        return cls(env.get("CRYPTOLENS_FETCH_ADDR", cls.fetch_addr), env.get("CRYPTOLENS_CORE_ADDR", cls.core_addr),
                   env.get("CRYPTOLENS_ALERTS_ADDR", cls.alerts_addr))

    def __post_init__(self) -> None:
        self._fetch = fetch_pb2_grpc.FetchServiceStub(_channel(self.fetch_addr))
        self._core = core_pb2_grpc.CoreServiceStub(_channel(self.core_addr))
        self._alerts = alerts_pb2_grpc.AlertsServiceStub(_channel(self.alerts_addr))

    def _call(self, service: str, addr: str, method, request, timeout_s: float | None = None):
        timeout_s = timeout_s or self.timeout_s
        try:
            return method(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ServiceError(f"the {service} service is not reachable at {addr} ({exc.details()})") from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServiceError(f"the {service} service did not answer within {timeout_s:g} s") from None
            raise ServiceError(f"{service}: {code.name}: {exc.details()}") from None

    # --- Fetch ---
    def list_series(self) -> tuple[list[dict], list[str], dict]:
        """Stored series, the watch list, and the store's contents (``began``, ``lost``; {} unknown)."""
        reply = self._call("Fetch", self.fetch_addr, self._fetch.ListSymbols, fetch_pb2.ListSymbolsRequest())
        return [_as_dict(s) for s in reply.series], list(reply.watchlist), _as_dict(reply.store)

    def bars(self, symbol: str, interval: str, lookback: str = "", page_size: int = 1000) -> pd.DataFrame:
        """Every bar of a window, fetched page by page (GetBars answers at most 10,000 bars per call)."""
        rows, token = [], ""
        while True:
            reply = self._call("Fetch", self.fetch_addr, self._fetch.GetBars, fetch_pb2.GetBarsRequest(
                symbol=symbol, interval=interval, lookback=lookback, page_size=page_size, page_token=token))
            rows += [(b.time.ToMilliseconds(), b.open, b.high, b.low, b.close, b.volume) for b in reply.bars]
            token = reply.next_page_token
            if not token:
                break
        frame = pd.DataFrame(rows, columns=["time", "open", "high", "low", "close", "volume"])
        frame["time"] = pd.to_datetime(frame["time"], unit="ms", utc=True)
        return frame.set_index("time")

    def watch_bars(self, symbols: list[str] = (), interval: str = "", after: str = "",
                   retry_s: float = 0.5) -> Iterator[dict]:
        """Every bar write from ``after`` on (empty: from now), for as long as the caller iterates.

        Reconnects from the last ``resume_token`` whenever the stream ends: a connection age-out,
        a restarted or unreachable Fetch. Nothing written meanwhile is missed (while the Fetch
        stream log still holds it)."""
        return _resumed("Fetch", self._fetch.WatchBars, lambda token: fetch_pb2.WatchBarsRequest(
            symbols=list(symbols), interval=interval, after=token), after, retry_s)

    # --- Core ---
    def stats(self, symbol: str, interval: str, lookback: str, risk_free_rate: float = 0.0) -> dict:
        reply = self._call("Core", self.core_addr, self._core.GetStats, core_pb2.GetStatsRequest(
            symbol=symbol, interval=interval, lookback=lookback, risk_free_rate=risk_free_rate))
        return _as_dict(reply)

    def watch_prices(self, symbols: list[str], interval: str = "", after: str = "",
                     retry_s: float = 0.5) -> Iterator[dict]:
        """Last price, 24 h change and age per symbol as dicts: a snapshot of every symbol (without
        ``after``), then one per update, for as long as the caller iterates. Reconnects from the
        last ``resume_token`` whenever the stream ends, so no update is missed."""
        return _resumed("Core", self._core.WatchPrices, lambda token: core_pb2.WatchPricesRequest(
            symbols=list(symbols), interval=interval, after=token), after, retry_s)

    def timeseries(self, symbol: str, interval: str, lookback: str, max_points: int = 800) -> pd.DataFrame:
        reply = self._call("Core", self.core_addr, self._core.GetTimeseries, core_pb2.GetTimeseriesRequest(
            symbol=symbol, interval=interval, lookback=lookback, max_points=max_points))
        frame = pd.DataFrame({
            "time": pd.to_datetime([p.time.ToMilliseconds() for p in reply.points], unit="ms", utc=True),
            "close": [p.close for p in reply.points],
            "drawdown": [p.drawdown for p in reply.points],
            "rolling_volatility": [p.rolling_volatility if p.HasField("rolling_volatility") else None
                                   for p in reply.points],
        }).set_index("time")
        frame.attrs["total_points"] = reply.total_points  # bars before downsampling
        return frame

    def correlation(self, symbols: list[str], interval: str, lookback: str) -> pd.DataFrame:
        reply = self._call("Core", self.core_addr, self._core.GetCorrelation, core_pb2.GetCorrelationRequest(
            symbols=symbols, interval=interval, lookback=lookback))
        return pd.DataFrame([list(r.values) for r in reply.rows], index=list(reply.symbols),
                            columns=list(reply.symbols))

    def portfolio_risk(self, holdings: dict[str, float], interval: str, lookback: str) -> dict:
        request = core_pb2.GetPortfolioRiskRequest(interval=interval, lookback=lookback, normalize=True,
                                                   holdings=[core_pb2.Holding(symbol=s, weight=w)
                                                             for s, w in holdings.items()])
        return _as_dict(self._call("Core", self.core_addr, self._core.GetPortfolioRisk, request))

    def forecast(self, symbol: str, interval: str, model: str = "", timeout_s: float = 60.0) -> dict:
        """The live volatility forecast with its track record; ``history`` is a frame of forecast against
        realised (fractions). A cold evaluation takes seconds, hence the longer deadline."""
        reply = self._call("Core", self.core_addr, self._core.GetForecast,
                           core_pb2.GetForecastRequest(symbol=symbol, interval=interval, model=model), timeout_s)
        out = _as_dict(reply)
        out["history"] = pd.DataFrame(
            {"forecast": [p.forecast for p in reply.history], "realised": [p.realised for p in reply.history]},
            index=pd.to_datetime([p.time.ToMilliseconds() for p in reply.history], unit="ms", utc=True))
        return out

    # --- Alerts ---
    def alerts(self, page_size: int = 20) -> dict:
        reply = self._call("Alerts", self.alerts_addr, self._alerts.ListAlerts,
                           alerts_pb2.ListAlertsRequest(page_size=page_size))
        return {"active": [_as_dict(a) for a in reply.active], "history": [_as_dict(e) for e in reply.history]}

    def rules(self) -> list[dict]:
        reply = self._call("Alerts", self.alerts_addr, self._alerts.ListRules, alerts_pb2.ListRulesRequest())
        return [_as_dict(r) for r in reply.rules]

    def create_rule(self, rule: dict) -> dict:
        request = alerts_pb2.CreateRuleRequest(rule=ParseDict(rule, alerts_pb2.Rule()))
        return _as_dict(self._call("Alerts", self.alerts_addr, self._alerts.CreateRule, request).rule)

    def update_rule(self, rule: dict) -> dict:
        request = alerts_pb2.UpdateRuleRequest(rule=ParseDict(rule, alerts_pb2.Rule()))
        return _as_dict(self._call("Alerts", self.alerts_addr, self._alerts.UpdateRule, request).rule)

    def delete_rule(self, rule_id: str) -> bool:
        request = alerts_pb2.DeleteRuleRequest(id=rule_id)
        return self._call("Alerts", self.alerts_addr, self._alerts.DeleteRule, request).deleted

    def watch_alerts(self, symbols: list[str] | None = None, resume_from: str = "", retry_s: float = 1.0):
        """Alert transitions as dicts (each with its ``stream_id``), forever.

        The server recycles connections (max_connection_age) and replicas restart: the stream then
        ends and this reconnects from the last stream id it saw, so no transition is missed. Without
        ``resume_from`` it starts after the newest transition in the history."""
        cursor = resume_from
        if not cursor:
            newest = self._call("Alerts", self.alerts_addr, self._alerts.ListAlerts,
                                alerts_pb2.ListAlertsRequest(page_size=1)).history
            cursor = newest[0].stream_id if newest else "0-0"
        while True:
            request = alerts_pb2.WatchAlertsRequest(symbols=symbols or [], resume_from=cursor)
            try:
                for reply in self._alerts.WatchAlerts(request):
                    cursor = reply.stream_id
                    yield _as_dict(reply.event)
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                                      grpc.StatusCode.CANCELLED):
                    raise ServiceError(f"Alerts: {exc.code().name}: {exc.details()}") from None
            time.sleep(retry_s)
