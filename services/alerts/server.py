"""Alerts service: rules over Core's numbers, graded without flapping, persisted and notified."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc
from services.alerts import rules as rules_mod
from services.alerts.backtest import backtest
from services.alerts.engine import AlertEngine, transition_event
from services.alerts.leases import Ownership
from services.alerts.notify import Receiver
from services.alerts.rules.model import checked_interval, checked_symbol
from services.common import redact
from services.common.config import ServiceSettings, positive, setting
from services.common.convert import from_timestamp, to_timestamp
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from services.common.limits import MAX_WINDOW_BARS
from services.common.series import SeriesSource
from services.common.store import UPDATES_CHANNEL, PriceStore
from services.common.tls import ClientTLS

log = logging.getLogger("cryptolens.alerts")

SERVICE_NAME = "cryptolens.v1.AlertsService"


def _url(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _intervals(values: list[str]) -> list[str]:
    bad = [v for v in values if v and v not in ("1m", "5m", "15m", "1h", "4h", "1d")]
    if bad:
        raise ValueError(f"{bad[0][:10]!r} is not one of 1m 5m 15m 1h 4h 1d")
    return [v for v in values if v]


def _whole(value: int) -> int:
    if not 1 <= value <= 1024:
        raise ValueError("must be between 1 and 1024")
    return value


@dataclass
class AlertsSettings(ServiceSettings):
    rules_file: str = setting("", "YAML or JSON rules file, reloaded when it changes")
    eval_interval_s: float = setting(60.0, "seconds between timed evaluations of every rule", positive)
    rules_reload_s: float = setting(5.0, "seconds between checks of the rules file", positive)
    history_limit: int = setting(10_000, "transitions kept in the history", positive)
    alert_intervals: list[str] = setting([], "more bar intervals the built-in rules judge besides --interval "
                                             "(comma separated; ids get a '.<interval>' suffix)", _intervals)
    webhook_url: str = setting("", "generic JSON webhook receiving every notified transition and resolve", _url,
                               redact=redact.endpoint_url)
    alertmanager_url: str = setting("", "Alertmanager base URL (POST /api/v2/alerts)", _url,
                                    redact=redact.endpoint_url)
    alertmanager_resend_s: float = setting(60.0, "seconds between re-sends of firing alerts to Alertmanager; keep "
                                                 "it below Alertmanager's resolve_timeout (default 5m)", positive)
    notify_timeout_s: float = setting(5.0, "timeout of one notification request", positive)
    notify_backoff_s: float = setting(1.0, "first retry delay of a failed notification (doubles, capped)", positive)
    notify_max_backoff_s: float = setting(60.0, "longest retry delay of a failed notification", positive)
    fetch_timeout_s: float = setting(30.0, "deadline of fetch-through calls to the Fetch service", positive)
    shards: int = setting(16, "evaluation shards the replicas share through Redis leases", _whole)
    lease_ttl_s: float = setting(10.0, "seconds a shard or notify lease lasts without renewal (a dead "
                                       "replica's work moves after this)", positive)
    replica_id: str = setting("", "this replica's name in leases (default: host-pid-random)")

    service_name = "alerts"


def status_pb(state, rule) -> alerts_pb2.AlertStatus:
    message = alerts_pb2.AlertStatus(symbol=state.symbol, rule=state.rule_id, state=state.state, grade=state.grade,
                                     since=to_timestamp(state.since_ms), message=state.message or "",
                                     reason=state.reason or "")
    if state.last_value is not None:
        message.value = state.last_value
    threshold = {"WARNING": rule.warning, "ALERT": rule.alert}.get(state.grade) if rule else None
    if threshold is not None:
        message.threshold = threshold
    return message


def event_pb(event: dict) -> alerts_pb2.AlertEvent:
    message = alerts_pb2.AlertEvent(time=to_timestamp(event["time_ms"]), symbol=event["symbol"], rule=event["rule"],
                                    to=event["to"], grade=event["grade"], message=event["message"],
                                    notified=bool(event.get("notified")), id=event.get("id", ""),
                                    stream_id=event.get("stream_id", ""))
    setattr(message, "from", event["from"])  # `from` is a Python keyword
    for name in ("value", "threshold"):
        if event.get(name) is not None:
            setattr(message, name, event[name])
    return message


def _backtest_answer(rule, symbol: str, ts, close, interval: str, deadline: float | None
                     ) -> alerts_pb2.BacktestResponse:
    """The backtest and its answer, in a worker thread: a year of minutes makes thousands of events,
    and building them on the event loop held it ~100 ms (health checks waited that long)."""
    transitions = backtest(rule, symbol, ts, close, interval, deadline)
    return alerts_pb2.BacktestResponse(events=[event_pb(transition_event(t, interval)) for t in transitions],
                                       bars=len(ts))


def rule_pb(rule, builtin: bool) -> alerts_pb2.Rule:
    data = rules_mod.rule_to_dict(rule)
    message = alerts_pb2.Rule(builtin=builtin)
    for field in message.DESCRIPTOR.fields:
        if field.name in data and data[field.name] is not None:
            setattr(message, field.name, data[field.name])
    return message


def rule_from_pb(message: alerts_pb2.Rule):
    """Only the fields the caller set: unset ones take the rule defaults (enabled, cooldown, ...)."""
    data = {}
    for field in message.DESCRIPTOR.fields:
        if field.name == "builtin":
            continue
        value = getattr(message, field.name)
        if (message.HasField(field.name) if field.has_presence else value != field.default_value):
            data[field.name] = value
    return rules_mod.rule_from_dict(data)


class AlertsService(alerts_pb2_grpc.AlertsServiceServicer):
    full_names = (SERVICE_NAME,)

    def __init__(self, settings: AlertsSettings, redis: aioredis.Redis):
        self.settings = settings
        self.redis = redis
        self.replica_id = settings.replica_id or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.series = SeriesSource(PriceStore(redis), settings.fetch_addr, settings.fetch_timeout_s, 256 * 1024 * 1024,
                                   ClientTLS.from_settings(settings))
        self.ownership = Ownership(redis, self.replica_id, settings.shards, settings.lease_ttl_s)
        self.engine = AlertEngine(redis, self.series, settings.symbols, [], settings.rules_file,
                                  settings.history_limit, [settings.interval, *settings.alert_intervals],
                                  settings.stale_after_bars, self.ownership)
        for name, url in (("webhook", settings.webhook_url), ("alertmanager", settings.alertmanager_url)):
            if url:
                self.engine.receivers.append(Receiver(
                    name, url, redis, self.replica_id, settings.notify_timeout_s, settings.notify_backoff_s,
                    settings.notify_max_backoff_s, settings.lease_ttl_s, settings.alertmanager_resend_s,
                    self.engine.firing_events))
        self._tasks: list[asyncio.Task] = []
        self.engine.reload_rules_file()

    def register(self, server) -> None:
        alerts_pb2_grpc.add_AlertsServiceServicer_to_server(self, server)

    async def start(self) -> None:
        pass  # background work starts once Redis answers

    async def on_redis(self, up: bool) -> None:
        if up and not self._tasks:
            self._tasks = [asyncio.create_task(coro, name=name) for name, coro in (
                ("leases", self.ownership.run()), ("timer", self._timer()), ("updates", self._on_updates()),
                ("rules-file", self._watch_rules_file()),
                *((f"notify-{r.name}", r.run()) for r in self.engine.receivers))]

    async def stop(self) -> None:
        try:  # a delivery in flight finishes (and is acknowledged) before the worker goes
            await asyncio.gather(*(r.drain(self.settings.notify_timeout_s + 1) for r in self.engine.receivers))
        except Exception:  # noqa: BLE001 - Redis gone: the lease expires by itself
            pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.ownership.leave()
        except Exception:  # noqa: BLE001 - Redis gone: the leases expire by themselves
            pass
        await self.series.close()

    async def _timer(self) -> None:
        await asyncio.sleep(self.settings.lease_ttl_s / 4)  # let the first lease round settle
        while True:
            try:
                await self.engine.evaluate(owned_only=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one calm line; the next tick tries again
                log.warning("timed evaluation failed; retrying next tick", extra={"error": str(exc)[:200]})
            await asyncio.sleep(self.settings.eval_interval_s)

    async def _on_updates(self) -> None:
        """Event-driven evaluation: each Fetch write re-evaluates that series' pairs this replica owns."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(UPDATES_CHANNEL)
                async for message in pubsub.listen():
                    if message["type"] != "message":
                        continue
                    event = json.loads(message["data"])
                    # This subscription may hear of the write before the kept states' own one does.
                    self.series.forget_state(event["symbol"], event["interval"])
                    try:
                        await self.engine.evaluate([event["symbol"]], interval=event["interval"], owned_only=True)
                    except Exception as exc:  # noqa: BLE001 - the timer catches up; keep listening
                        log.warning("event-driven evaluation failed", extra={"error": str(exc)[:200]})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis went away: resubscribe shortly
                log.warning("update subscription lost; retrying", extra={"error": str(exc)[:200]})
                await asyncio.sleep(1.0)
            finally:
                await pubsub.aclose()

    async def _watch_rules_file(self) -> None:
        while True:
            await asyncio.sleep(self.settings.rules_reload_s)
            self.engine.reload_rules_file()

    async def _check_served(self, rule) -> None:
        """A rule on one symbol is accepted only if someone serves that symbol (stored, or Fetch finds it)."""
        if rule.symbol == "*":
            return
        try:
            await self.series.version(rule.symbol, rule.interval)
        except NotFound as exc:
            raise InvalidArgument("rule.symbol", f"{rule.symbol} at {rule.interval} is not served: "
                                                 f"{exc.message[:120]}") from None
        except Unavailable as exc:
            raise Unavailable(f"cannot check rule.symbol {rule.symbol} now: {exc.message[:120]}; retry") from None

    # --- RPCs ----------------------------------------------------------------------------
    async def Evaluate(self, request, context):
        symbols = [checked_symbol(s, "symbols") for s in request.symbols] or None
        result = await self.engine.evaluate(symbols, list(request.rules) or None)
        rules = await self.engine.rules()
        return alerts_pb2.EvaluateResponse(
            statuses=[status_pb(s, rules.get(s.rule_id)) for s in result.statuses],
            events=[event_pb(e) for e in result.events],
            skipped=[alerts_pb2.SkippedPair(symbol=k.symbol, rule=k.rule, reason=k.reason) for k in result.skipped])

    async def ListRules(self, request, context):
        engine = self.engine
        return alerts_pb2.ListRulesResponse(rules=[rule_pb(r, r.id in engine.builtin)
                                                   for r in (await engine.rules()).values()])

    async def CreateRule(self, request, context):
        if not request.HasField("rule"):
            raise InvalidArgument("rule", "missing")
        rule = rule_from_pb(request.rule)
        await self._check_served(rule)
        rule = await self.engine.create_rule(rule)
        return alerts_pb2.CreateRuleResponse(rule=rule_pb(rule, False))

    async def UpdateRule(self, request, context):
        if not request.HasField("rule"):
            raise InvalidArgument("rule", "missing")
        rule = rule_from_pb(request.rule)
        await self._check_served(rule)
        rule = await self.engine.update_rule(rule)
        return alerts_pb2.UpdateRuleResponse(rule=rule_pb(rule, False))

    async def DeleteRule(self, request, context):
        if not request.id:
            raise InvalidArgument("id", "missing")
        return alerts_pb2.DeleteRuleResponse(deleted=await self.engine.delete_rule(request.id))

    async def ListAlerts(self, request, context):
        symbol = checked_symbol(request.symbol) if request.symbol else ""
        if request.page_size < 0 or request.page_size > 1000:
            raise InvalidArgument("page_size", "must be between 0 and 1000")
        history, token = await self.engine.history(symbol, request.rule, request.page_size or 50, request.page_token)
        rules = await self.engine.rules()
        return alerts_pb2.ListAlertsResponse(
            active=[status_pb(s, rules.get(s.rule_id)) for s in await self.engine.active(symbol, request.rule)],
            history=[event_pb(e) for e in history], next_page_token=token)

    async def WatchAlerts(self, request, context):
        symbols = {checked_symbol(s, "symbols") for s in request.symbols}
        async for event in self.engine.watch(request.resume_from):
            if not symbols or event["symbol"] in symbols:
                yield alerts_pb2.WatchAlertsResponse(event=event_pb(event), stream_id=event["stream_id"])

    async def Backtest(self, request, context):
        rule = await self.engine.rule(request.rule)
        symbol = checked_symbol(request.symbol)
        interval = checked_interval(request.interval) if request.interval else rule.interval
        rule = self.engine.at_interval(rule, interval)
        start_ms = from_timestamp(request, "start")
        series = await self.series.get(symbol, interval, start_ms)
        ts, close = series.window(start_ms, from_timestamp(request, "end"))
        if len(ts) > MAX_WINDOW_BARS:
            raise ResourceExhausted(f"the range holds {len(ts):,} bars of {interval}, over the cap of "
                                    f"{MAX_WINDOW_BARS:,}; narrow start/end")
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        return await asyncio.to_thread(_backtest_answer, rule, symbol, ts, close, interval, deadline)
