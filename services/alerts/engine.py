"""The alert engine: rules in, graded states out, every transition recorded once and announced.

Values come from the shared analytics over the shared price store (the code and data Core
serves), read through the version-keyed series cache with fetch-through.

Redis keys (see docs/alerts.md):
    cl:v1:alerts:rules       HASH   rule id → JSON (rules created through the API; rules/stored.py)
    cl:v1:{alerts}:state     HASH   "SYMBOL|rule" → JSON AlertState
    cl:v1:{alerts}:rev       HASH   "SYMBOL|rule" → revision, bumped by every state change
    cl:v1:{alerts}:history   STREAM one entry per transition (capped at the retention setting)
    cl:v1:{alerts}:outbox:*  LIST   notifications waiting (notify.py)

The keys one commit script touches share the ``{alerts}`` hash tag, so it works on a Redis Cluster.

Nothing is trusted from memory: each cycle reads rules and states from Redis, judges in a worker
thread, and commits each changed pair with a script that checks the pair's revision and, in the
same step, writes the state, appends the history and fills the outboxes. A pair another replica
changed meanwhile is judged again from the new state, so no transition is ever judged twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field, replace

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge, Histogram

from services.alerts import rules as rules_mod
from services.alerts.leases import Ownership
from services.alerts.notify import Receiver
from services.alerts.rules import Rule
from services.alerts.rules.stored import RuleStore
from services.alerts.state import AlertState, Transition, retire, step, unjudged
from services.common.errors import AlreadyExists, InvalidArgument, NotFound, ServiceError, short
from services.common.freshness import is_stale
from services.common.intervals import periods_per_year
from services.common.series import SeriesSource

log = logging.getLogger("cryptolens.alerts")

STATE_KEY = "cl:v1:{alerts}:state"
REV_KEY = "cl:v1:{alerts}:rev"
HISTORY_KEY = "cl:v1:{alerts}:history"

GRADE_VALUE = {"OK": 0, "WARNING": 1, "ALERT": 2, "NO_DATA": -1, "ERROR": -2}
ALERT_STATE = Gauge("cryptolens_alert_state",
                    "Alert grade per symbol and rule: 0 OK, 1 WARNING, 2 ALERT, -1 NO_DATA, -2 ERROR "
                    "(every replica exports every pair, read from Redis)", ["symbol", "rule"])
PAIRS = Gauge("cryptolens_alert_pairs", "Judged (symbol, rule) pairs by grade", ["grade"])
EVALUATION_SECONDS = Histogram("cryptolens_alert_evaluation_seconds", "Time of one evaluation cycle",
                               buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
TRANSITIONS = Counter("cryptolens_alert_transitions_total", "State transitions by rule and new state", ["rule", "to"])
RULE_ERRORS = Counter("cryptolens_alert_rule_errors_total", "Rule evaluations that failed at run time", ["rule"])
NO_DATA = Counter("cryptolens_alert_no_data_total", "Pair evaluations with no or stale data", ["rule"])
COMMIT_CONFLICTS = Counter("cryptolens_alert_commit_conflicts_total",
                           "Pair commits refused because another replica changed the pair first")
RULES_FILE_ERRORS = Counter("cryptolens_alert_rules_file_errors_total", "Rules file loads that failed")

_COMMIT = """
local rev = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if rev ~= tonumber(ARGV[2]) then return false end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
redis.call('HSET', KEYS[2], ARGV[1], rev + 1)
local ids = {}
for i = 0, tonumber(ARGV[5]) - 1 do
  local event = ARGV[6 + 2 * i]
  local mask = ARGV[7 + 2 * i]
  ids[#ids + 1] = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'event', event)
  for j = 1, #mask do
    if string.sub(mask, j, j) == '1' then redis.call('LPUSH', KEYS[3 + j], event) end
  end
end
return ids
"""
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_MAX_RETRIES = 3


def transition_event(t: Transition, interval: str = "") -> dict:
    """The JSON form of a transition used for history, the stream and notifications."""
    return {"id": f"{t.symbol}|{t.rule}|{t.time_ms}|{t.to_state}", "time_ms": t.time_ms, "symbol": t.symbol,
            "rule": t.rule, "interval": interval, "from": t.from_state, "to": t.to_state, "from_grade": t.from_grade,
            "grade": t.grade, "value": t.value, "threshold": t.threshold, "message": t.message,
            "notified": t.notify, "sync": t.sync, "firing_since_ms": t.firing_since_ms}


@dataclass
class Skipped:
    symbol: str
    rule: str
    reason: str


@dataclass
class Evaluation:
    statuses: list[AlertState]
    events: list[dict]  # the transitions this evaluation recorded, with their stream ids
    skipped: list[Skipped] = field(default_factory=list)


def _field(symbol: str, rule_id: str) -> str:
    return f"{symbol}|{rule_id}"


class AlertEngine:
    def __init__(self, redis: aioredis.Redis, series: SeriesSource, watchlist: list[str],
                 receivers: list[Receiver], rules_file: str = "", history_limit: int = 10_000,
                 intervals: list[str] | None = None, stale_after_bars: int = 3, ownership: Ownership | None = None):
        self.redis = redis
        self.series = series
        self.watchlist = watchlist
        self.receivers = receivers
        self.rules_file = rules_file
        self.history_limit = history_limit
        self.intervals = list(dict.fromkeys(intervals or ["1h"]))
        self.stale_after_bars = stale_after_bars
        self.ownership = ownership
        self.store = RuleStore(redis)
        self._overrides: dict[str, dict] = {}
        self.builtin: dict[str, Rule] = self._builtins({})
        self.file_rules: dict[str, Rule] = {}
        self._file_mtime: float | None = None
        self._lock = asyncio.Lock()
        self._unjudged_summary = ""  # last "not judged" line logged: one line per change, not one per tick

    # --- rules ---------------------------------------------------------------------------
    def _builtins(self, overrides: dict[str, dict]) -> dict[str, Rule]:
        primary = self.intervals[0]
        return {r.id: r for interval in self.intervals
                for r in rules_mod.apply_overrides(interval, primary, overrides)}

    async def rules(self) -> dict[str, Rule]:
        """Built-ins (one set per watched interval, tuned by the file), file rules, then stored rules."""
        return {**self.builtin, **self.file_rules, **await self.store.all()}

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
            loaded = rules_mod.load_rules_file(self.rules_file, self.intervals[0])
            overrides = rules_mod.overrides_of(loaded)
            builtin = self._builtins(overrides)
        except (ValueError, InvalidArgument, OSError) as exc:
            RULES_FILE_ERRORS.inc()
            message = exc.message if isinstance(exc, InvalidArgument) else str(exc)
            log.error("rules file rejected; keeping the last good rules", extra={"path": self.rules_file,
                                                                                "error": message})
            return False
        self.builtin, self._overrides = builtin, overrides
        self.file_rules = {r.id: r for r in loaded if r.id not in rules_mod.BUILTIN_IDS}
        log.info("rules file loaded", extra={"path": self.rules_file, "rules": len(loaded)})
        return True

    def at_interval(self, rule: Rule, interval: str) -> Rule:
        """The rule judged at another interval: a built-in takes that interval's windows (and the
        file's overrides); any other rule keeps its windows, validated at the new interval."""
        if interval == rule.interval:
            return rule
        if rule.id in self.builtin:
            base = rule.id.split(".", 1)[0]
            try:
                moved = rules_mod.apply_overrides(interval, interval, self._overrides)
            except InvalidArgument as exc:
                raise InvalidArgument("interval", exc.message) from None
            return replace(next(r for r in moved if r.id == base), id=rule.id)
        return rules_mod.at_interval(rule, interval)

    def is_read_only(self, rule_id: str) -> bool:
        return rule_id in self.builtin or rule_id in self.file_rules

    async def create_rule(self, rule: Rule) -> Rule:
        rule = rules_mod.validate_rule(rule)
        if self.is_read_only(rule.id) or not await self.store.create(rule):
            raise AlreadyExists(f"a rule with id {rule.id!r} exists; use UpdateRule or another id")
        return rule

    async def update_rule(self, rule: Rule) -> Rule:
        rule = rules_mod.validate_rule(rule)
        if self.is_read_only(rule.id):
            raise InvalidArgument("rule.id", f"{rule.id!r} is built in or from the rules file; change it there")
        old = await self.store.get(rule.id)  # None as well when the stored one no longer validates
        if not await self.store.replace(rule):
            raise NotFound(f"no user rule with id {rule.id!r}")
        if not rule.enabled:
            await self.retire_rule(rule, "was disabled")
        elif old is None or (rule.symbol, rule.interval) != (old.symbol, old.interval):
            await self.sweep()
        return rule

    async def delete_rule(self, rule_id: str) -> bool:
        if self.is_read_only(rule_id):
            raise InvalidArgument("id", f"{rule_id!r} is built in or from the rules file; disable it there")
        old = await self.store.get(rule_id)
        if not await self.store.delete(rule_id):
            return False
        await self.retire_rule(old or Rule(id=rule_id, alert=0), "was deleted")
        return True

    async def rule(self, rule_id: str) -> Rule:
        rules = await self.rules()
        if rule_id not in rules:
            raise NotFound(f"unknown rule {rule_id[:64]!r}")
        return rules[rule_id]

    # --- pairs and states ----------------------------------------------------------------
    def _pairs(self, rules: dict[str, Rule], symbols: list[str] | None, rule_ids: list[str] | None,
               interval: str | None = None) -> list[tuple[str, Rule]]:
        unknown = [r for r in rule_ids or [] if r not in rules]
        if unknown:
            raise NotFound(f"unknown rule(s): {', '.join(r[:64] for r in unknown[:5])}")
        chosen = [rules[r] for r in rule_ids] if rule_ids else list(rules.values())
        out = []
        for rule in chosen:
            if not rule.enabled or (interval and rule.interval != interval):
                continue
            targets = self.watchlist if rule.symbol == "*" else [rule.symbol]
            out.extend((s, rule) for s in targets if not symbols or s in symbols)
        return out

    async def _read(self, fields: list[str]) -> tuple[dict[str, AlertState], dict[str, int]]:
        if not fields:
            return {}, {}
        async with self.redis.pipeline(transaction=True) as tx:
            tx.hmget(STATE_KEY, fields)
            tx.hmget(REV_KEY, fields)
            raw_states, raw_revs = await tx.execute()
        states = {f: AlertState.from_dict(json.loads(raw)) for f, raw in zip(fields, raw_states) if raw}
        revs = {f: int(raw or 0) for f, raw in zip(fields, raw_revs)}
        return states, revs

    async def states(self) -> dict[str, AlertState]:
        return {f.decode(): AlertState.from_dict(json.loads(raw))
                for f, raw in (await self.redis.hgetall(STATE_KEY)).items()}

    async def active(self, symbol: str = "", rule: str = "") -> list[AlertState]:
        return [s for _, s in sorted((await self.states()).items())
                if s.state != "OK" and (not symbol or s.symbol == symbol) and (not rule or s.rule_id == rule)]

    async def firing_events(self) -> list[dict]:
        """Every firing pair as an event (what Alertmanager gets re-sent)."""
        rules = await self.rules()
        out = []
        for s in (await self.states()).values():
            rule = rules.get(s.rule_id)
            if s.firing and rule is not None and rule.notify == "on":
                out.append({"time_ms": s.since_ms, "symbol": s.symbol, "rule": s.rule_id, "interval": rule.interval,
                            "grade": s.grade, "value": s.last_value, "message": s.message,
                            "firing_since_ms": s.firing_since_ms})
        return out

    async def refresh_gauges(self, states: dict[str, AlertState] | None = None) -> None:
        """Every replica exports every pair's grade from Redis (so max() across replicas is right)."""
        states = await self.states() if states is None else states
        seen = set()
        counts = dict.fromkeys(GRADE_VALUE, 0)
        for s in states.values():
            ALERT_STATE.labels(s.symbol, s.rule_id).set(GRADE_VALUE.get(s.grade, 0))
            counts[s.grade] = counts.get(s.grade, 0) + 1
            seen.add((s.symbol, s.rule_id))
        for labels in [tuple(m.labels.values()) for metric in ALERT_STATE.collect() for m in metric.samples]:
            if labels not in seen:
                ALERT_STATE.remove(*labels)
        for name, count in counts.items():
            PAIRS.labels(name).set(count)

    # --- evaluation ----------------------------------------------------------------------
    async def _load_series(self, keys: set[tuple[str, str]], now_ms: int) -> dict[tuple[str, str], object]:
        """Each series, or the reason it cannot be judged. One failing series never stops the others."""
        out: dict[tuple[str, str], object] = {}
        for symbol, interval in sorted(keys):
            try:
                series = await self.series.get(symbol, interval)
            except ServiceError as exc:  # NotFound, Unavailable: Fetch has nothing or is away
                out[(symbol, interval)] = f"no data ({exc.message[:160]})"
                continue
            newest = int(series.ts[-1]) if len(series.ts) else None
            if newest is None:
                out[(symbol, interval)] = "no data (empty series)"
            elif is_stale(newest, interval, self.stale_after_bars, now_ms):
                when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(newest / 1000))
                out[(symbol, interval)] = f"stale: the newest bar ({when}) is over {self.stale_after_bars} " \
                                          f"intervals old"
            else:
                out[(symbol, interval)] = series
        return out

    def _judge(self, pairs, states, loaded, now_ms) -> list[tuple[str, Rule, AlertState, list[Transition], str]]:
        """Pure and CPU-bound (runs in a worker thread): each pair's new state and transitions."""
        out = []
        caches: dict[tuple[str, str], dict] = {}
        for symbol, rule in pairs:
            f = _field(symbol, rule.id)
            state = states.get(f) or AlertState.initial(symbol, rule.id, now_ms)
            series = loaded[(symbol, rule.interval)]
            if isinstance(series, str):
                NO_DATA.labels(rule.id).inc()
                new, changes = unjudged(state, rule, "NO_DATA", series, now_ms)
                out.append((symbol, rule, new, changes, series))
                continue
            try:
                value = rules_mod.measure(rule, series.ts, series.close, periods_per_year(rule.interval),
                                          caches.setdefault((symbol, rule.interval), {}))
            except Exception as exc:  # noqa: BLE001 - isolate the rule: its pairs are ERROR, the rest go on
                RULE_ERRORS.labels(rule.id).inc()
                reason = f"{type(exc).__name__}: {str(exc)[:160]}"
                new, changes = unjudged(state, rule, "ERROR", reason, now_ms)
                out.append((symbol, rule, new, changes, reason))
                continue
            if value is None and state.last_value is None and state.state in ("OK", "NO_DATA", "ERROR"):
                # never had a value: too little history for the window is not OK, it is not judged yet
                reason = f"not enough data for the {rule.window} window yet"
                NO_DATA.labels(rule.id).inc()
                new, changes = unjudged(state, rule, "NO_DATA", reason, now_ms)
                out.append((symbol, rule, new, changes, reason))
                continue
            new, changes = step(state, rule, value, now_ms)
            out.append((symbol, rule, new, changes, ""))
        return out

    def _event_args(self, changes: list[Transition], interval: str) -> tuple[list[str], list[dict]]:
        args, events = [], []
        for t in changes:
            event = transition_event(t, interval)
            events.append(event)
            args += [json.dumps(event), "".join("1" if r.wants(event) else "0" for r in self.receivers)]
        return args, events

    async def _commit_all(self, items: list[tuple[str, AlertState | None, list[Transition], int, str]]
                          ) -> tuple[list[str], list[dict]]:
        """Compare-and-set each pair (field, new state or None to delete, transitions, expected rev,
        interval). Returns the fields that lost the race and the events recorded."""
        if not items:
            return [], []
        keys = [STATE_KEY, REV_KEY, HISTORY_KEY, *(r.key for r in self.receivers)]
        recorded: list[list[dict]] = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for f, new, changes, rev, interval in items:
                args, events = self._event_args(changes, interval)
                recorded.append(events)
                body = "" if new is None else json.dumps(new.to_dict())
                # EVAL, not a registered script: a Redis Cluster client refuses EVALSHA in a pipeline.
                pipe.eval(_COMMIT, len(keys), *keys, f, rev, body, self.history_limit, len(changes), *args)
            results = await pipe.execute()
        lost, events_out = [], []
        for (f, _, changes, _, _), result, events in zip(items, results, recorded):
            if result is None:
                lost.append(f)
                COMMIT_CONFLICTS.inc()
                continue
            for t, event, stream_id in zip(changes, events, result):
                event["stream_id"] = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
                events_out.append(event)
                TRANSITIONS.labels(t.rule, t.to_state).inc()
                log.info(t.message, extra={"symbol": t.symbol, "rule": t.rule, "from": t.from_state,
                                           "to": t.to_state, "value": t.value})
        if any(r.wants(e) for r in self.receivers for e in events_out):
            for receiver in self.receivers:
                receiver.wake()
        return lost, events_out

    async def evaluate(self, symbols: list[str] | None = None, rule_ids: list[str] | None = None,
                       interval: str | None = None, now_ms: int | None = None, owned_only: bool = False
                       ) -> Evaluation:
        async with self._lock:
            started = time.perf_counter()
            now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
            rules = await self.rules()
            pairs = self._pairs(rules, symbols, rule_ids, interval)
            if owned_only and self.ownership is not None:
                pairs = [(s, r) for s, r in pairs if self.ownership.owns(s, r.id)]
            loaded = await self._load_series({(s, r.interval) for s, r in pairs}, now_ms)
            final: dict[str, AlertState] = {}
            events, skipped = [], {}
            todo = pairs
            for _ in range(_MAX_RETRIES):
                states, revs = await self._read([_field(s, r.id) for s, r in todo])
                judged = await asyncio.to_thread(self._judge, todo, states, loaded, now_ms)
                items = []
                for symbol, rule, new, changes, reason in judged:
                    f = _field(symbol, rule.id)
                    final[f] = new
                    if reason:
                        skipped[f] = Skipped(symbol, rule.id, reason)
                    else:
                        skipped.pop(f, None)
                    if new != states.get(f):
                        items.append((f, new, changes, revs.get(f, 0), rule.interval))
                lost, recorded = await self._commit_all(items)
                events += recorded
                if not lost:
                    break
                todo = [(s, r) for s, r in todo if _field(s, r.id) in set(lost)]
            else:  # still losing races after the retries: report what Redis holds, not our guess
                final.update((await self._read(lost))[0])
            if symbols:
                judged_symbols = {s for s, _ in pairs}
                for symbol in symbols:
                    if symbol not in judged_symbols:
                        skipped[f"{symbol}|*"] = Skipped(symbol, "", "no enabled rule applies to this symbol")
            full = symbols is None and rule_ids is None and interval is None
            if full:  # a partial cycle (one symbol's update) says nothing about the whole
                self._log_unjudged(skipped.values())
            # The sweep reads states, then rules (never this cycle's older rules); its states feed the gauges.
            await self.refresh_gauges(await self.sweep() if full else None)
            EVALUATION_SECONDS.observe(time.perf_counter() - started)
            return Evaluation([final[_field(s, r.id)] for s, r in pairs], events, list(skipped.values()))

    def _log_unjudged(self, skipped) -> None:
        """One calm line when the set of unjudged causes changes (Fetch not up yet is not a traceback)."""
        by_cause: dict[str, int] = {}
        for s in skipped:
            cause = s.reason.split(" (", 1)[0]
            by_cause[cause] = by_cause.get(cause, 0) + 1
        summary = ", ".join(f"{n} {cause}" for cause, n in sorted(by_cause.items()))
        if summary != self._unjudged_summary:
            self._unjudged_summary = summary
            if summary:
                log.warning("some pairs are not judged", extra={"pairs": summary})
            else:
                log.info("every pair is judged again")

    # --- retiring pairs whose rule is gone ------------------------------------------------
    async def _retire(self, victims: list[tuple[str, AlertState, Rule, str]]) -> None:
        now_ms = int(time.time() * 1000)
        for _ in range(_MAX_RETRIES):
            if not victims:
                return
            fresh, revs = await self._read([f for f, _, _, _ in victims])
            items = [(f, None, [retire(fresh[f], rule, why, now_ms)], revs[f], rule.interval)
                     for f, _, rule, why in victims if f in fresh]
            lost, _ = await self._commit_all(items)
            victims = [v for v in victims if v[0] in set(lost)]

    async def retire_rule(self, rule: Rule, why: str) -> None:
        """Resolve and forget every pair of a deleted or disabled rule."""
        victims = [(f, s, rule, why) for f, s in (await self.states()).items() if s.rule_id == rule.id]
        await self._retire(victims)
        await self.refresh_gauges()

    async def sweep(self) -> dict[str, AlertState]:
        """Retire pairs no rule judges any more (a rule gone from the file, a symbol off the watch list).

        States are read before rules: a pair created meanwhile by another replica is never seen as orphaned."""
        states = await self.states()
        rules = await self.rules()
        live = {_field(s, r.id) for s, r in self._pairs(rules, None, None)}
        victims = []
        for f, s in states.items():
            if f in live or (self.ownership is not None and not self.ownership.owns(s.symbol, s.rule_id)):
                continue
            rule = rules.get(s.rule_id) or Rule(id=s.rule_id, alert=0)
            victims.append((f, s, rule, "is no longer evaluated for this symbol"))
        await self._retire(victims)
        return {f: s for f, s in states.items() if f not in {v[0] for v in victims}}

    # --- history ---------------------------------------------------------------------------
    async def history(self, symbol: str = "", rule: str = "", page_size: int = 50,
                      page_token: str = "") -> tuple[list[dict], str]:
        """Transitions newest first, filtered, paged by stream id."""
        if page_token and not _STREAM_ID.match(page_token):
            raise InvalidArgument("page_token", f"{short(page_token)} is not a token from a previous page")
        out: list[dict] = []
        cursor = page_token or "+"
        while len(out) < page_size:
            batch = await self.redis.xrevrange(HISTORY_KEY, max=cursor, min="-", count=page_size * 4 + 1)
            if page_token and batch and batch[0][0].decode() == cursor:
                batch = batch[1:]  # the token is the last entry of the previous page
            if not batch:
                return out, ""
            for entry_id, fields in batch:
                event = {**json.loads(fields[b"event"]), "stream_id": entry_id.decode()}
                if (not symbol or event["symbol"] == symbol) and (not rule or event["rule"] == rule):
                    out.append(event)
                    if len(out) == page_size:
                        return out, entry_id.decode()
            cursor = batch[-1][0].decode()
            page_token = cursor
        return out, ""

    async def watch(self, resume_from: str = "", block_ms: int = 1000):
        """Transitions after ``resume_from`` (a stream id), then live ones, forever (XREAD BLOCK)."""
        if resume_from and not _STREAM_ID.match(resume_from):
            raise InvalidArgument("resume_from", f"{short(resume_from)} is not a stream id from a previous event")
        if resume_from:
            cursor = resume_from
        else:
            last = await self.redis.xrevrange(HISTORY_KEY, count=1)
            cursor = last[0][0].decode() if last else "0-0"
        while True:
            reply = await self.redis.xread({HISTORY_KEY: cursor}, count=100, block=block_ms)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    cursor = entry_id.decode()
                    yield {**json.loads(fields[b"event"]), "stream_id": cursor}

