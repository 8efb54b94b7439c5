"""The alert engine: rules in, graded states out, every transition persisted and announced.

Values come from the shared analytics library over the shared price store (the very code and
data Core serves), read through Core's version-keyed series cache with fetch-through. One
evaluation cycle of 50 rules over 20 symbols would otherwise be 1,000 GetStats round trips.

Redis keys (see docs/alerts.md):
    cl:v1:alerts:rules     HASH   rule id → JSON (rules created through the API)
    cl:v1:alerts:state     HASH   "SYMBOL|rule" → JSON AlertState
    cl:v1:alerts:history   STREAM one entry per transition (capped at the retention setting)
    cl:v1:alerts:events    pub/sub JSON transitions, for WatchAlerts in every replica
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, replace

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge, Histogram

from services.alerts import rules as rules_mod
from services.alerts.notify import Receiver
from services.alerts.rules import Rule
from services.alerts.state import AlertState, Transition, step
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.intervals import periods_per_year
from services.common.series import SeriesSource

log = logging.getLogger("cryptolens.alerts")

RULES_KEY = "cl:v1:alerts:rules"
STATE_KEY = "cl:v1:alerts:state"
HISTORY_KEY = "cl:v1:alerts:history"
EVENTS_CHANNEL = "cl:v1:alerts:events"

GRADE_VALUE = {"OK": 0, "WARNING": 1, "ALERT": 2}
ALERT_STATE = Gauge("cryptolens_alert_state", "Alert grade per symbol and rule: 0 OK, 1 WARNING, 2 ALERT",
                    ["symbol", "rule"])
EVALUATION_SECONDS = Histogram("cryptolens_alert_evaluation_seconds", "Time of one evaluation cycle",
                               buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
TRANSITIONS = Counter("cryptolens_alert_transitions_total", "State transitions by rule and new state", ["rule", "to"])
RULES_FILE_ERRORS = Counter("cryptolens_alert_rules_file_errors_total", "Rules file loads that failed")


@dataclass
class Evaluation:
    statuses: list[AlertState]
    transitions: list[Transition]


def transition_event(t: Transition) -> dict:
    """The JSON form of a transition used for history, pub/sub and notifications."""
    return {"id": f"{t.symbol}|{t.rule}|{t.time_ms}|{t.to_state}", "time_ms": t.time_ms, "symbol": t.symbol,
            "rule": t.rule, "from": t.from_state, "to": t.to_state, "grade": t.grade, "value": t.value,
            "threshold": t.threshold, "message": t.message, "notified": t.notify,
            "since_ms": t.time_ms}


class AlertEngine:
    def __init__(self, redis: aioredis.Redis, series: SeriesSource, watchlist: list[str],
                 receivers: list[Receiver], rules_file: str = "", history_limit: int = 10_000):
        self.redis = redis
        self.series = series
        self.watchlist = watchlist
        self.receivers = receivers
        self.rules_file = rules_file
        self.history_limit = history_limit
        self.builtin: dict[str, Rule] = {r.id: r for r in rules_mod.builtin_rules()}
        self.file_rules: dict[str, Rule] = {}
        self.user_rules: dict[str, Rule] = {}
        self.states: dict[tuple[str, str], AlertState] = {}
        self._file_mtime: float | None = None
        self._lock = asyncio.Lock()

    # --- rules ---------------------------------------------------------------------------
    @property
    def rules(self) -> dict[str, Rule]:
        """Built-ins, overridden by the rules file, then rules created through the API."""
        return {**self.builtin, **self.file_rules, **self.user_rules}

    def reload_rules_file(self) -> bool:
        """Load the rules file if it changed. A bad file keeps the last good rules. True if reloaded."""
        if not self.rules_file:
            return False
        try:
            mtime = os.stat(self.rules_file).st_mtime
        except OSError as exc:
            if self._file_mtime is not None or not self.file_rules:
                log.warning("rules file unreadable; keeping the last good rules",
                            extra={"path": self.rules_file, "error": str(exc)})
            return False
        if mtime == self._file_mtime:
            return False
        self._file_mtime = mtime
        try:
            loaded = rules_mod.load_rules_file(self.rules_file)
        except (ValueError, InvalidArgument, OSError) as exc:
            RULES_FILE_ERRORS.inc()
            log.error("rules file rejected; keeping the last good rules", extra={"path": self.rules_file,
                                                                                "error": str(exc)})
            return False
        self.file_rules = {r.id: r for r in loaded}
        log.info("rules file loaded", extra={"path": self.rules_file, "rules": len(loaded)})
        return True

    async def load(self) -> None:
        """Read user rules and states from Redis (after a restart: nothing re-fires, nothing is forgotten)."""
        raw_rules = await self.redis.hgetall(RULES_KEY)
        self.user_rules = {}
        for rule_id, raw in raw_rules.items():
            try:
                self.user_rules[rule_id.decode()] = rules_mod.rule_from_dict(json.loads(raw))
            except (ValueError, InvalidArgument) as exc:
                log.error("stored rule is invalid; ignored", extra={"rule": rule_id.decode(), "error": str(exc)})
        raw_states = await self.redis.hgetall(STATE_KEY)
        self.states = {}
        for raw in raw_states.values():
            state = AlertState.from_dict(json.loads(raw))
            self.states[(state.symbol, state.rule_id)] = state
            ALERT_STATE.labels(state.symbol, state.rule_id).set(GRADE_VALUE.get(state.grade, 0))

    async def create_rule(self, rule: Rule) -> Rule:
        rule = rules_mod.validate_rule(rule)
        if rule.id in self.rules:
            raise AlreadyExists(f"a rule with id {rule.id!r} exists; use UpdateRule or another id")
        return await self._save_rule(rule)

    async def update_rule(self, rule: Rule) -> Rule:
        rule = rules_mod.validate_rule(rule)
        if rule.id not in self.user_rules:
            if rule.id in self.rules:
                raise InvalidArgument("rule.id", f"{rule.id!r} is built in or from the rules file; change it there")
            raise NotFound(f"no user rule with id {rule.id!r}")
        return await self._save_rule(rule)

    async def _save_rule(self, rule: Rule) -> Rule:
        await self.redis.hset(RULES_KEY, rule.id, json.dumps(rules_mod.rule_to_dict(rule)))
        self.user_rules[rule.id] = rule
        return rule

    async def delete_rule(self, rule_id: str) -> bool:
        if rule_id not in self.user_rules:
            if rule_id in self.rules:
                raise InvalidArgument("id", f"{rule_id!r} is built in or from the rules file; disable it there")
            return False
        del self.user_rules[rule_id]
        await self.redis.hdel(RULES_KEY, rule_id)
        return True

    # --- evaluation ----------------------------------------------------------------------
    def _pairs(self, symbols: list[str] | None, rule_ids: list[str] | None, interval: str | None = None):
        rules = self.rules
        unknown = [r for r in rule_ids or [] if r not in rules]
        if unknown:
            raise NotFound(f"unknown rule(s): {', '.join(unknown)}")
        chosen = [rules[r] for r in rule_ids] if rule_ids else [r for r in rules.values() if r.enabled]
        for rule in chosen:
            if interval and rule.interval != interval:
                continue
            targets = symbols or self.watchlist
            for symbol in targets:
                if rule.symbol in ("*", symbol):
                    yield symbol, rule

    async def evaluate(self, symbols: list[str] | None = None, rule_ids: list[str] | None = None,
                       interval: str | None = None, now_ms: int | None = None) -> Evaluation:
        async with self._lock:
            started = time.perf_counter()
            now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
            statuses, transitions = [], []
            # Per series, this cycle only: one read (version check) and one stats pass per window.
            loaded: dict[tuple[str, str], object] = {}
            stats_caches: dict[tuple[str, str], dict] = {}
            for symbol, rule in list(self._pairs(symbols, rule_ids, interval)):
                series_key = (symbol, rule.interval)
                if series_key not in loaded:
                    try:
                        loaded[series_key] = await self.series.get(symbol, rule.interval)
                    except NotFound:
                        loaded[series_key] = None
                series = loaded[series_key]
                if series is None:
                    continue  # no data for this symbol at this interval: nothing to judge
                value = rules_mod.measure(rule, series.ts, series.close, periods_per_year(rule.interval),
                                          stats_caches.setdefault(series_key, {}))
                key = (symbol, rule.id)
                state = self.states.get(key) or AlertState.initial(symbol, rule.id, now_ms)
                new_state, changes = step(state, rule, value, now_ms)
                self.states[key] = new_state
                statuses.append(new_state)
                transitions.extend(changes)
                ALERT_STATE.labels(symbol, rule.id).set(GRADE_VALUE.get(new_state.grade, 0))
            await self._persist(statuses, transitions)
            EVALUATION_SECONDS.observe(time.perf_counter() - started)
            return Evaluation(statuses, transitions)

    async def _persist(self, statuses: list[AlertState], transitions: list[Transition]) -> None:
        """States, history, outbox and events in one transaction: a transition is recorded whole or not at all."""
        if not statuses:
            return
        async with self.redis.pipeline(transaction=True) as tx:
            tx.hset(STATE_KEY, mapping={f"{s.symbol}|{s.rule_id}": json.dumps(s.to_dict()) for s in statuses})
            for t in transitions:
                event = transition_event(t)
                TRANSITIONS.labels(t.rule, t.to_state).inc()
                tx.xadd(HISTORY_KEY, {"event": json.dumps(event)}, maxlen=self.history_limit, approximate=True)
                if t.notify:
                    for receiver in self.receivers:
                        receiver.enqueue(tx, event)
                tx.publish(EVENTS_CHANNEL, json.dumps(event))
            await tx.execute()
        for t in transitions:
            log.info(t.message, extra={"symbol": t.symbol, "rule": t.rule, "from": t.from_state, "to": t.to_state,
                                       "value": t.value})
        if any(t.notify for t in transitions):
            for receiver in self.receivers:
                receiver.wake()

    async def history(self, symbol: str = "", rule: str = "", page_size: int = 50,
                      page_token: str = "") -> tuple[list[dict], str]:
        """Transitions newest first, filtered, paged by stream id."""
        out: list[dict] = []
        cursor = page_token or "+"
        while len(out) < page_size:
            batch = await self.redis.xrevrange(HISTORY_KEY, max=cursor, min="-", count=page_size * 4 + 1)
            if page_token and batch and batch[0][0].decode() == cursor:
                batch = batch[1:]  # the token is the last entry of the previous page
            if not batch:
                return out, ""
            for entry_id, fields in batch:
                event = json.loads(fields[b"event"])
                if (not symbol or event["symbol"] == symbol) and (not rule or event["rule"] == rule):
                    out.append(event)
                    if len(out) == page_size:
                        return out, entry_id.decode()
            cursor = batch[-1][0].decode()
            page_token = cursor
        return out, ""

    def active(self, symbol: str = "", rule: str = "") -> list[AlertState]:
        return [s for (sym, rid), s in sorted(self.states.items())
                if s.state != "OK" and (not symbol or sym == symbol) and (not rule or rid == rule)]

    def rule(self, rule_id: str) -> Rule:
        try:
            return self.rules[rule_id]
        except KeyError:
            raise NotFound(f"unknown rule {rule_id!r}") from None

    @staticmethod
    def with_interval(rule: Rule, interval: str) -> Rule:
        return replace(rule, interval=interval) if interval else rule
