"""Property tests of the state machine: whatever the values, transitions chain, the cooldown only
holds back repeated fires, and every fire people heard of is followed by its resolve."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.alerts.rules import FIRING, Rule
from services.alerts.state import AlertState, step, unjudged

HOUR = 3_600_000


@st.composite
def scenarios(draw):
    condition = draw(st.sampled_from(["above", "below", "crosses_above", "crosses_below"]))
    lines = sorted(draw(st.lists(st.integers(0, 20), min_size=3, max_size=3)))
    clear, warning, alert = lines if condition.endswith("above") else lines[::-1]
    rule = Rule(id="p", metric="price", interval="1h", window="1h", condition=condition, warning=warning, alert=alert,
                clear=clear, pending_for_s=draw(st.sampled_from([0, 0, 3600, 7200])),
                keep_firing_for_s=draw(st.sampled_from([0, 0, 3600])), cooldown_s=draw(st.sampled_from([0, 3600, 86400])))
    steps = draw(st.lists(st.one_of(st.integers(-2, 22), st.none(), st.just("NO_DATA"), st.just("ERROR")),
                          min_size=1, max_size=80))
    return rule, steps


@settings(max_examples=600, deadline=None)
@given(scenario=scenarios())
def test_transitions_chain_and_resolves_are_never_swallowed(scenario):
    rule, steps = scenario
    state = AlertState.initial("X-USD", "p", 0)
    transitions = []
    for i, value in enumerate(steps):
        now = i * HOUR
        if isinstance(value, str):
            state, t = unjudged(state, rule, value, "reason", now)
        else:
            state, t = step(state, rule, None if value is None else float(value), now)
        transitions += t
    # 1. Each transition starts where the previous one ended.
    previous = ("OK", "OK")
    for t in transitions:
        assert (t.from_state, t.from_grade) == previous, (previous, t)
        previous = (t.to_state, t.grade)
    assert previous == (state.state, state.grade)
    # 2. Fires people hear of are a cooldown apart, unless each is an escalation over the one before.
    fired = [t for t in transitions if t.notify and t.grade in FIRING]
    for a, b in zip(fired, fired[1:]):
        gap = b.time_ms - a.time_ms
        assert gap >= rule.cooldown_s * 1000 or (a.grade, b.grade) == ("WARNING", "ALERT"), (a, b)
    # 3. When a pair stops firing, people are told if and only if they were last told it fired, and
    #    Alertmanager always; so people never stay believing a pair fires that does not.
    told = "OK"
    for t in transitions:
        if t.from_grade in FIRING and t.grade not in FIRING:
            assert t.sync and t.notify == (told in FIRING), (told, t)
        if t.notify:
            told = t.grade
    if state.grade not in FIRING:
        assert told not in FIRING
    assert all(t.sync == ((t.grade in FIRING or t.from_grade in FIRING) and t.grade != t.from_grade)
               for t in transitions)
