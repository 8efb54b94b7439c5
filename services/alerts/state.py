"""The per (symbol, rule) state machine: alerts that do not flap.

    OK ──(condition holds)──▶ PENDING ──(held for pending_for_s)──▶ WARNING / ALERT
    WARNING ◀──▶ ALERT                   (escalate / de-escalate with the value)
    WARNING / ALERT ──(value past clear)──▶ RECOVERING ──(still clear after keep_firing_for_s)──▶ OK

With pending_for_s = 0 the PENDING step is skipped; with keep_firing_for_s = 0 the RECOVERING step
is. A value of None (metric undefined) changes nothing. Notifications: at most one per cooldown for
a (symbol, rule), except an escalation to a grade above the last one notified.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from services.alerts.rules import Rule, explain, grade, threshold_for

RANK = {"OK": 0, "WARNING": 1, "ALERT": 2}


@dataclass(frozen=True)
class AlertState:
    symbol: str
    rule_id: str
    state: str = "OK"  # OK, PENDING, WARNING, ALERT, RECOVERING
    grade: str = "OK"  # the grade in force: OK, WARNING or ALERT
    since_ms: int = 0
    pending_since_ms: int | None = None
    pending_grade: str | None = None
    recovering_since_ms: int | None = None
    last_value: float | None = None
    last_notified_ms: int | None = None
    last_notified_grade: str = "OK"
    message: str = ""

    @classmethod
    def initial(cls, symbol: str, rule_id: str, now_ms: int) -> "AlertState":
        return cls(symbol, rule_id, since_ms=now_ms)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AlertState":
        return cls(**data)


@dataclass(frozen=True)
class Transition:
    time_ms: int
    symbol: str
    rule: str
    from_state: str
    to_state: str
    grade: str
    value: float | None
    threshold: float | None
    message: str
    notify: bool


def _should_notify(state: AlertState, rule: Rule, new_grade: str, now_ms: int) -> bool:
    if rule.notify != "on":
        return False
    if state.last_notified_ms is None or now_ms - state.last_notified_ms >= rule.cooldown_s * 1000:
        return True
    return RANK[new_grade] > RANK[state.last_notified_grade]  # an escalation is never held back


def step(state: AlertState, rule: Rule, value: float | None, now_ms: int) -> tuple[AlertState, list[Transition]]:
    """Advance one evaluation. Pure: returns the new state and the transitions it made (0, 1 or 2)."""
    if value is None:
        return state, []
    target = grade(rule, value, state.grade, state.last_value)
    transitions: list[Transition] = []

    def move(current: AlertState, to_state: str, to_grade: str, notify_allowed: bool, **changes) -> AlertState:
        notify = notify_allowed and _should_notify(current, rule, to_grade, now_ms)
        message = explain(rule, state.symbol, value, to_grade)
        transitions.append(Transition(now_ms, state.symbol, rule.id, current.state, to_state, to_grade, value,
                                      threshold_for(rule, to_grade), message, notify))
        updated = replace(current, state=to_state, grade=to_grade, since_ms=now_ms, message=message, **changes)
        if notify:
            updated = replace(updated, last_notified_ms=now_ms, last_notified_grade=to_grade)
        return updated

    new = state
    if state.state in ("OK", "PENDING"):
        if target == "OK":
            if state.state == "PENDING":
                new = move(state, "OK", "OK", False, pending_since_ms=None, pending_grade=None)
        elif rule.pending_for_s == 0:
            new = move(state, target, target, True)
        elif state.state == "OK":
            new = move(state, "PENDING", "OK", False, pending_since_ms=now_ms, pending_grade=target)
            # a PENDING pair still grades OK: nothing has fired yet
        elif now_ms - state.pending_since_ms >= rule.pending_for_s * 1000:
            new = move(state, target, target, True, pending_since_ms=None, pending_grade=None)
        else:
            new = replace(state, pending_grade=target)
    elif state.state in ("WARNING", "ALERT"):
        if target == "OK":
            if rule.keep_firing_for_s > 0:
                new = move(state, "RECOVERING", state.grade, False, recovering_since_ms=now_ms)
            else:
                new = move(state, "OK", "OK", True)
        elif target != state.state:
            new = move(state, target, target, True)
    elif state.state == "RECOVERING":
        if target != "OK":
            escalated = RANK[target] > RANK[state.grade]
            new = move(state, target, target, escalated, recovering_since_ms=None)
        elif now_ms - state.recovering_since_ms >= rule.keep_firing_for_s * 1000:
            new = move(state, "OK", "OK", True, recovering_since_ms=None)
    return replace(new, last_value=value), transitions
