"""Alerts service: rules over Core's numbers, graded without flapping, persisted and notified."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

from cryptolens.v1 import alerts_pb2, alerts_pb2_grpc
from services.alerts import rules as rules_mod
from services.alerts.backtest import backtest
from services.alerts.engine import EVENTS_CHANNEL, AlertEngine, transition_event
from services.alerts.notify import Receiver
from services.common.config import ServiceSettings, positive, setting
from services.common.convert import from_timestamp, to_timestamp
from services.common.events import subscribe
from services.common.errors import InvalidArgument
from services.common.intervals import check_interval, check_symbol
from services.common.store import UPDATES_CHANNEL, PriceStore
from services.common.series import SeriesSource

log = logging.getLogger("cryptolens.alerts")

SERVICE_NAME = "cryptolens.v1.AlertsService"


def _url(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


@dataclass
class AlertsSettings(ServiceSettings):
    rules_file: str = setting("", "YAML or JSON rules file, reloaded when it changes")
    eval_interval_s: float = setting(60.0, "seconds between timed evaluations of every rule", positive)
    rules_reload_s: float = setting(5.0, "seconds between checks of the rules file", positive)
    history_limit: int = setting(10_000, "transitions kept in the history", positive)
    webhook_url: str = setting("", "generic JSON webhook receiving every notified transition", _url)
    alertmanager_url: str = setting("", "Alertmanager base URL (POST /api/v2/alerts)", _url)
    notify_timeout_s: float = setting(5.0, "timeout of one notification request", positive)
    fetch_timeout_s: float = setting(30.0, "deadline of fetch-through calls to the Fetch service", positive)

    service_name = "alerts"


def status_pb(state, rule) -> alerts_pb2.AlertStatus:
    message = alerts_pb2.AlertStatus(symbol=state.symbol, rule=state.rule_id, state=state.state, grade=state.grade,
                                     since=to_timestamp(state.since_ms), message=state.message or "")
    if state.last_value is not None:
        message.value = state.last_value
    threshold = {"WARNING": rule.warning, "ALERT": rule.alert}.get(state.grade) if rule else None
    if threshold is not None:
        message.threshold = threshold
    return message


def event_pb(event: dict) -> alerts_pb2.AlertEvent:
    message = alerts_pb2.AlertEvent(time=to_timestamp(event["time_ms"]), symbol=event["symbol"], rule=event["rule"],
                                    to=event["to"], grade=event["grade"], message=event["message"],
                                    notified=bool(event.get("notified")))
    setattr(message, "from", event["from"])  # `from` is a Python keyword
    for name in ("value", "threshold"):
        if event.get(name) is not None:
            setattr(message, name, event[name])
    return message


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
        receivers = []
        if settings.webhook_url:
            receivers.append(Receiver("webhook", settings.webhook_url, redis, settings.notify_timeout_s))
        if settings.alertmanager_url:
            receivers.append(Receiver("alertmanager", settings.alertmanager_url, redis, settings.notify_timeout_s))
        self.series = SeriesSource(PriceStore(redis), settings.fetch_addr, settings.fetch_timeout_s, 256 * 1024 * 1024)
        self.engine = AlertEngine(redis, self.series, settings.symbols, receivers, settings.rules_file,
                                  settings.history_limit)
        self._tasks: list[asyncio.Task] = []
        self.engine.reload_rules_file()

    def register(self, server) -> None:
        alerts_pb2_grpc.add_AlertsServiceServicer_to_server(self, server)

    async def start(self) -> None:
        pass  # background work starts once Redis answers

    async def on_redis(self, up: bool) -> None:
        if up and not self._tasks:
            await self.engine.load()
            self._tasks = [asyncio.create_task(coro, name=name) for name, coro in (
                ("timer", self._timer()), ("updates", self._on_updates()), ("rules-file", self._watch_rules_file()),
                *((f"notify-{r.name}", r.run()) for r in self.engine.receivers))]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.series.close()

    async def _timer(self) -> None:
        while True:
            try:
                await self.engine.evaluate()
            except Exception:  # noqa: BLE001 - keep evaluating on the next tick
                log.exception("timed evaluation failed")
            await asyncio.sleep(self.settings.eval_interval_s)

    async def _on_updates(self) -> None:
        """Event-driven evaluation: each Fetch write re-evaluates that symbol's rules."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(UPDATES_CHANNEL)
                async for message in pubsub.listen():
                    if message["type"] != "message":
                        continue
                    event = json.loads(message["data"])
                    if event["symbol"] in self.settings.symbols:
                        await self.engine.evaluate([event["symbol"]], interval=event["interval"])
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis went away: resubscribe shortly
                log.warning("update subscription lost; retrying")
                await asyncio.sleep(1.0)
            finally:
                await pubsub.aclose()

    async def _watch_rules_file(self) -> None:
        while True:
            await asyncio.sleep(self.settings.rules_reload_s)
            self.engine.reload_rules_file()

    # --- RPCs ----------------------------------------------------------------------------
    async def Evaluate(self, request, context):
        symbols = [check_symbol(s, "symbols") for s in request.symbols] or None
        result = await self.engine.evaluate(symbols, list(request.rules) or None)
        rules = self.engine.rules
        return alerts_pb2.EvaluateResponse(
            statuses=[status_pb(s, rules.get(s.rule_id)) for s in result.statuses],
            events=[event_pb(transition_event(t)) for t in result.transitions])

    async def ListRules(self, request, context):
        engine = self.engine
        return alerts_pb2.ListRulesResponse(rules=[rule_pb(r, r.id in engine.builtin and r.id not in engine.user_rules)
                                                   for r in engine.rules.values()])

    async def CreateRule(self, request, context):
        if not request.HasField("rule"):
            raise InvalidArgument("rule", "missing")
        rule = await self.engine.create_rule(rule_from_pb(request.rule))
        return alerts_pb2.CreateRuleResponse(rule=rule_pb(rule, False))

    async def UpdateRule(self, request, context):
        if not request.HasField("rule"):
            raise InvalidArgument("rule", "missing")
        rule = await self.engine.update_rule(rule_from_pb(request.rule))
        return alerts_pb2.UpdateRuleResponse(rule=rule_pb(rule, False))

    async def DeleteRule(self, request, context):
        if not request.id:
            raise InvalidArgument("id", "missing")
        return alerts_pb2.DeleteRuleResponse(deleted=await self.engine.delete_rule(request.id))

    async def ListAlerts(self, request, context):
        symbol = check_symbol(request.symbol) if request.symbol else ""
        if request.page_size < 0 or request.page_size > 1000:
            raise InvalidArgument("page_size", "must be between 0 and 1000")
        history, token = await self.engine.history(symbol, request.rule, request.page_size or 50, request.page_token)
        rules = self.engine.rules
        return alerts_pb2.ListAlertsResponse(
            active=[status_pb(s, rules.get(s.rule_id)) for s in self.engine.active(symbol, request.rule)],
            history=[event_pb(e) for e in history], next_page_token=token)

    async def WatchAlerts(self, request, context):
        symbols = {check_symbol(s, "symbols") for s in request.symbols}
        async for event in subscribe(self.redis, EVENTS_CHANNEL):
            if not symbols or event["symbol"] in symbols:
                yield alerts_pb2.WatchAlertsResponse(event=event_pb(event))

    async def Backtest(self, request, context):
        rule = self.engine.rule(request.rule)
        symbol = check_symbol(request.symbol)
        interval = check_interval(request.interval) if request.interval else rule.interval
        series = await self.series.get(symbol, interval, from_timestamp(request, "start"))
        ts, close = series.window(from_timestamp(request, "start"), from_timestamp(request, "end"))
        transitions = backtest(self.engine.with_interval(rule, interval), symbol, ts, close, interval)
        return alerts_pb2.BacktestResponse(events=[event_pb(transition_event(t)) for t in transitions], bars=len(ts))
