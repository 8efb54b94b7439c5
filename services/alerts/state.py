"""The per (symbol, rule) state machine: alerts that do not flap, and pairs never judged say so.

    OK ──(condition holds)──▶ PENDING ──(held for pending_for_s)──▶ WARNING / ALERT
    WARNING ◀──▶ ALERT                   (escalate / de-escalate with the value)
    WARNING / ALERT ──(value past clear)──▶ RECOVERING ──(still clear after keep_firing_for_s)──▶ OK
    any ──(no or stale data)──▶ NO_DATA      any ──(the rule fails at run time)──▶ ERROR
    NO_DATA / ERROR ──(a value again)──▶ judged afresh from OK

With pending_for_s = 0 the PENDING step is skipped; with keep_firing_for_s = 0 the RECOVERING step
is. A value of None on fresh data (metric undefined, e.g. zero variance) changes nothing.

Two kinds of announcement ride on a transition:

- ``notify`` (people: the webhook): a firing notification at most once per cooldown for a pair,
  except an escalation above the last grade fired; a resolve (leaving WARNING/ALERT) is always
  notified when its firing was. The cooldown never swallows a resolve.
- ``sync`` (Alertmanager): every change of the firing grade (start, escalation, de-escalation,
  resolve), whatever the cooldown: Alertmanager keeps its own repeat interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from services.alerts.rules import FIRING, Rule, explain, grade, threshold_for

RANK = {"OK": 0, "NO_DATA": 0, "ERROR": 0, "WARNING": 1, "ALERT": 2}


@dataclass(frozen=True)
class AlertState:
    symbol: str
    rule_id: str
    state: str = "OK"  # OK, PENDING, WARNING, ALERT, RECOVERING, NO_DATA, ERROR
    grade: str = "OK"  # the grade in force: OK, WARNING, ALERT, NO_DATA or ERROR
    since_ms: int = 0
    pending_since_ms: int | None = None
    pending_grade: str | None = None
    recovering_since_ms: int | None = None
    firing_since_ms: int | None = None  # start of the current WARNING/ALERT episode (Alertmanager startsAt)
    last_value: float | None = None
    last_fired_ms: int | None = None  # last firing notification to people
    last_fired_grade: str = "OK"
    notified_grade: str = "OK"  # what people were last told: a firing grade until its resolve went out
    reason: str = ""  # why NO_DATA or ERROR
    message: str = ""

    @classmethod
    def initial(cls, symbol: str, rule_id: str, now_ms: int) -> "AlertState":
        return cls(symbol, rule_id, since_ms=now_ms)

    @property
    def firing(self) -> bool:
        return self.grade in FIRING

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AlertState":
        return cls(**{k: v for k, v in data.items() if k in _STATE_FIELDS})


_STATE_FIELDS = frozenset(f.name for f in fields(AlertState))


@dataclass(frozen=True)
class Transition:
    time_ms: int
    symbol: str
    rule: str
    from_state: str
    to_state: str
    from_grade: str
    grade: str
    value: float | None
    threshold: float | None
    message: str
    notify: bool  # people are told (webhook)
    sync: bool = False  # the firing grade changed (Alertmanager)
    firing_since_ms: int | None = None


def _may_fire(state: AlertState, rule: Rule, new_grade: str, now_ms: int) -> bool:
    if rule.notify != "on":
        return False
    if state.last_fired_ms is None or now_ms - state.last_fired_ms >= rule.cooldown_s * 1000:
        return True
    return RANK[new_grade] > RANK[state.last_fired_grade]  # an escalation is never held back


def _move(state: AlertState, rule: Rule, to_state: str, to_grade: str, value: float | None, now_ms: int,
          people: bool, reason: str = "", **changes) -> tuple[AlertState, Transition]:
    """One transition, with the notification decisions and the bookkeeping they need."""
    fires = to_grade in FIRING
    if fires:
        notify = people and state.grade != to_grade and _may_fire(state, rule, to_grade, now_ms)
    else:  # a resolve goes out whenever people were told it fired
        notify = rule.notify == "on" and state.notified_grade in FIRING
    sync = rule.notify == "on" and (state.firing or fires) and state.grade != to_grade
    firing_since = (state.firing_since_ms if state.firing else now_ms) if fires else None
    message = explain(rule, state.symbol, value, to_grade, reason)
    t = Transition(now_ms, state.symbol, rule.id, state.state, to_state, state.grade, to_grade, value,
                   threshold_for(rule, to_grade), message, notify, sync,
                   firing_since if fires else state.firing_since_ms)
    new = replace(state, state=to_state, grade=to_grade, since_ms=now_ms, message=message, reason=reason,
                  firing_since_ms=firing_since, **changes)
    if notify:
        new = replace(new, notified_grade=to_grade)
        if fires:
            new = replace(new, last_fired_ms=now_ms, last_fired_grade=to_grade)
    return new, t


def step(state: AlertState, rule: Rule, value: float | None, now_ms: int) -> tuple[AlertState, list[Transition]]:
    """Advance one evaluation on fresh data. Pure: returns the new state and its transitions (0 or 1)."""
    if value is None:
        return state, []
    before = state
    fresh = state.state in ("NO_DATA", "ERROR")
    if fresh:  # judged afresh from OK; the transition below records the way out of NO_DATA/ERROR
        state = replace(state, state="OK", grade="OK", pending_since_ms=None, pending_grade=None,
                        recovering_since_ms=None, last_value=None)
    target = grade(rule, value, state.grade, state.last_value)
    out: list[Transition] = []
    new = state

    def move(to_state: str, to_grade: str, people: bool, **changes) -> AlertState:
        moved, t = _move(state, rule, to_state, to_grade, value, now_ms, people, **changes)
        out.append(t)
        return moved

    if state.state in ("OK", "PENDING"):
        if target == "OK":
            if state.state == "PENDING":
                new = move("OK", "OK", False, pending_since_ms=None, pending_grade=None)
        elif rule.pending_for_s == 0:
            new = move(target, target, True)
        elif state.state == "OK":
            new = move("PENDING", "OK", False, pending_since_ms=now_ms, pending_grade=target)
            # a PENDING pair still grades OK: nothing has fired yet
        elif now_ms - state.pending_since_ms >= rule.pending_for_s * 1000:
            new = move(target, target, True, pending_since_ms=None, pending_grade=None)
        else:
            new = replace(state, pending_grade=target)
    elif state.state in ("WARNING", "ALERT"):
        if target == "OK":
            if rule.keep_firing_for_s > 0:
                new = move("RECOVERING", state.grade, False, recovering_since_ms=now_ms)
            else:
                new = move("OK", "OK", True)
        elif target != state.state:
            new = move(target, target, True)
    elif state.state == "RECOVERING":
        if target != "OK":
            new = move(target, target, True, recovering_since_ms=None)
        elif now_ms - state.recovering_since_ms >= rule.keep_firing_for_s * 1000:
            new = move("OK", "OK", True, recovering_since_ms=None)
    if fresh and not out:  # back from NO_DATA/ERROR straight to OK: still a transition worth recording
        new = move("OK", "OK", False)
    if fresh:
        out = [replace(t, from_state=before.state, from_grade=before.grade) for t in out]
    return replace(new, last_value=value), out


def unjudged(state: AlertState, rule: Rule, grade_: str, reason: str, now_ms: int
             ) -> tuple[AlertState, list[Transition]]:
    """NO_DATA (no or stale series) or ERROR (the rule failed): a state of its own, never OK."""
    if state.state == grade_:  # still not judged: the reason may change, without a transition each time
        return replace(state, reason=reason, message=explain(rule, state.symbol, None, grade_, reason)), []
    new, t = _move(state, rule, grade_, grade_, None, now_ms, False, reason, pending_since_ms=None,
                   pending_grade=None, recovering_since_ms=None, last_value=None)
    return new, [t]


def retire(state: AlertState, rule: Rule, reason: str, now_ms: int) -> Transition:
    """The last transition of a pair whose rule was deleted or disabled: its alert is resolved."""
    _, t = _move(state, rule, "OK", "OK", None, now_ms, False)
    return replace(t, message=f"{state.symbol}: {rule.name or rule.id} {reason}; no longer judged")
