"""Alert rules, the state machine and backtests: on real history and on made-up series."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from services.alerts.backtest import backtest, transition_to_json
from services.alerts.rules import (Rule, builtin_rules, explain, grade, load_rules_file, measure, rule_from_dict,
                                   series_values)
from services.alerts.state import AlertState, step
from services.common.errors import InvalidArgument

DAY = 86_400_000
HOUR = 3_600_000


def daily(shared_data, name: str) -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(shared_data / "prices" / name).sort_values("timestamp").drop_duplicates("timestamp")
    return df["timestamp"].to_numpy("int64"), df["close"].to_numpy(float)


def states_by_day(transitions) -> pd.Series:
    """The state in force on each day, from the transitions."""
    return pd.Series({pd.Timestamp(t.time_ms, unit="ms"): t.to_state for t in transitions}).sort_index()


def state_on(transitions, day: str) -> str:
    states = states_by_day(transitions)
    before = states[states.index <= pd.Timestamp(day)]
    return before.iloc[-1] if len(before) else "OK"


def rules_1d() -> dict[str, Rule]:
    return {r.id: r for r in builtin_rules("1d")}


def test_price_drop_alerts_on_real_crashes(shared_data):
    rule = rules_1d()["price_drop"]
    for name, symbol, day, fall in (("BTCUSDT_1d_cdd-binance.csv", "BTC-USD", "2020-03-12", 0.395),
                                    ("SOLUSDT_1d_cdd-binance.csv", "SOL-USD", "2022-11-09", 0.422)):
        ts, close = daily(shared_data, name)
        transitions = backtest(rule, symbol, ts, close, "1d")
        assert state_on(transitions, day) == "ALERT", symbol
        values = series_values(rule, ts, close, 365)
        on_day = int(np.searchsorted(ts, pd.Timestamp(day).value // 10**6))
        assert values[on_day] == pytest.approx(fall, abs=0.001)
        assert explain(rule, symbol, values[on_day], "ALERT") == (
            f"{symbol} fell {fall * 100:.1f} % in 1d, above the 10.0 % ALERT line")


def test_drawdown_is_in_alert_through_the_2018_bear_market(shared_data):
    ts, close = daily(shared_data, "BTCUSDT_1d_cdd-binance.csv")
    transitions = backtest(rules_1d()["drawdown"], "BTC-USD", ts, close, "1d")
    assert state_on(transitions, "2018-12-15") == "ALERT"
    days = pd.date_range("2018-06-01", "2019-01-31", freq="D")
    in_alert = sum(state_on(transitions, str(d.date())) == "ALERT" for d in days)
    assert in_alert / len(days) > 0.9


def test_volatility_spike_on_march_2020(shared_data):
    ts, close = daily(shared_data, "BTCUSDT_1d_cdd-binance.csv")
    transitions = backtest(rules_1d()["volatility_spike"], "BTC-USD", ts, close, "1d")
    assert state_on(transitions, "2020-03-14") == "ALERT"


def oscillating(n: int = 200, level: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    ts = np.arange(n, dtype=np.int64) * HOUR
    return ts, level + np.where(np.arange(n) % 2, 1.0, -1.0)  # flips across 100 every bar


def test_oscillation_fires_at_most_once_per_cooldown_and_every_fire_is_resolved():
    rule = Rule(id="osc", metric="price", condition="below", warning=100, alert=99, clear=100, interval="1h",
                window="1h", cooldown_s=24 * 3600)
    ts, close = oscillating()
    transitions = backtest(rule, "X-USD", ts, close, "1h")
    assert len(transitions) > 50  # it really does flap between states...
    fired = [t.time_ms for t in transitions if t.notify and t.grade in ("WARNING", "ALERT")]
    assert len(fired) <= 200 // 24 + 1 and (np.diff(fired) >= 24 * HOUR).all()  # ...but fires once a day at most
    # The cooldown never swallows a resolve: each notified fire is followed by a notified resolve.
    told = [t.grade for t in transitions if t.notify]
    assert told[::2] == ["ALERT"] * len(fired) and set(told[1::2]) == {"OK"} and len(told) >= 2 * len(fired) - 1
    # Alertmanager follows every change of the firing grade, whatever the cooldown.
    assert sum(t.sync for t in transitions) == sum(t.grade != t.from_grade for t in transitions)


def test_hysteresis_holds_between_enter_and_clear():
    rule = Rule(id="h", metric="price", condition="above", warning=110, alert=120, clear=100, interval="1h",
                window="1h", cooldown_s=0)
    assert grade(rule, 121) == "ALERT"
    assert grade(rule, 105, current="ALERT") == "ALERT"  # below warning, not yet past clear: hold
    assert grade(rule, 115, current="ALERT") == "WARNING"  # back in the warning band
    assert grade(rule, 99, current="WARNING") == "OK"
    assert grade(rule, 105, current="OK") == "OK"


def test_pending_period_ignores_one_bar_blips():
    rule = Rule(id="p", metric="price", condition="above", alert=120, clear=110, interval="1h", window="1h",
                pending_for_s=2 * 3600)
    state = AlertState.initial("X-USD", "p", 0)
    state, t1 = step(state, rule, 130, 0)
    assert state.state == "PENDING" and state.grade == "OK" and not any(t.notify for t in t1)
    state, t2 = step(state, rule, 100, HOUR)  # the blip is over before the pending period
    assert state.state == "OK" and [t.to_state for t in t2] == ["OK"] and not t2[0].notify
    for hour, value in ((2, 130), (3, 130)):
        state, _ = step(state, rule, value, hour * HOUR)
    assert state.state == "PENDING"
    state, t3 = step(state, rule, 130, 4 * HOUR)
    assert state.state == "ALERT" and t3[0].notify


def test_keep_firing_then_recover():
    rule = Rule(id="k", metric="price", condition="above", alert=120, clear=110, interval="1h", window="1h",
                keep_firing_for_s=3600, cooldown_s=0)
    state = AlertState.initial("X-USD", "k", 0)
    state, _ = step(state, rule, 130, 0)
    state, t = step(state, rule, 100, HOUR)
    assert state.state == "RECOVERING" and state.grade == "ALERT" and not t[0].notify
    state, t = step(state, rule, 100, 2 * HOUR)
    assert state.state == "OK" and t[0].notify and "back inside" in t[0].message


def test_undefined_value_changes_nothing():
    rule = Rule(id="u", metric="sharpe", condition="below", alert=-1, clear=0)
    state = AlertState.initial("X-USD", "u", 0)
    assert step(state, rule, None, HOUR) == (state, [])


def test_state_round_trips_through_json():
    rule = Rule(id="r", metric="price", condition="above", alert=120, clear=110)
    state, _ = step(AlertState.initial("X-USD", "r", 0), rule, 130, 5)
    assert AlertState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


@pytest.mark.parametrize("data, field", [
    ({"id": "a", "metric": "happiness", "alert": 1}, "metric"),
    ({"id": "a", "window": "ten days", "alert": 1}, "window"),
    ({"id": "a", "interval": "2h", "alert": 1}, "interval"),
    ({"id": "a", "symbol": "BTCUSD", "alert": 1}, "symbol"),
    ({"id": "a", "condition": "above", "warning": 3, "alert": 2}, "alert"),
    ({"id": "a", "condition": "below", "warning": 2, "alert": 3}, "alert"),
    ({"id": "a", "condition": "above", "warning": 2, "alert": 3, "clear": 4}, "clear"),
    ({"id": "a", "cooldown_s": -1, "alert": 1}, "cooldown_s"),
    ({"id": "Bad Id", "alert": 1}, "id"),
    ({"id": "a"}, "alert"),
    ({"id": "a", "alert": 1, "colour": "red"}, "colour"),
    ({"id": "a", "kind": "volatility_spike", "window": "30d", "baseline_window": "7d", "alert": 2}, "baseline_window"),
])
def test_invalid_rules_are_refused_naming_the_field(data, field):
    with pytest.raises(InvalidArgument) as exc:
        rule_from_dict(data)
    assert exc.value.field == field


def test_rules_file_loads_overrides_builtins_and_reports_errors(tmp_path):
    good = tmp_path / "rules.yaml"
    good.write_text("rules:\n"
                    "  - {id: price_drop, warning: 0.03, alert: 0.06}\n"
                    "  - {id: eth-sharpe, symbol: ETH-USD, metric: sharpe, window: 30d, condition: below,"
                    " warning: 0, alert: -1, clear: 0.5}\n")
    rules = {r.id: r for r in load_rules_file(good)}
    assert rules["price_drop"].kind == "price_drop" and rules["price_drop"].alert == 0.06
    assert rules["eth-sharpe"].clear == 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {id: ok-rule, alert: 1}\n  - {id: broken, metric: nope, alert: 1}\n")
    with pytest.raises(ValueError, match=r"rules\[1\] \(broken\): metric: unknown metric 'nope'"):
        load_rules_file(bad)
    (tmp_path / "junk.yaml").write_text("rules: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_rules_file(tmp_path / "junk.yaml")


def test_measure_matches_the_last_value_of_the_series():
    ts = np.arange(100, dtype=np.int64) * HOUR
    close = 100 * np.cumprod(1 + np.sin(np.arange(100)) * 0.01)
    for rule in builtin_rules("1h") + [Rule(id="s", metric="sharpe", window="24h", condition="below", alert=-1)]:
        rule = replace(rule, window="24h", baseline_window="48h" if rule.kind == "volatility_spike" else "")
        assert measure(rule, ts, close, 8760) == pytest.approx(series_values(rule, ts, close, 8760)[-1])


def test_explanations_read_like_sentences():
    rule = rules_1d()["price_drop"]
    assert explain(rule, "BTC-USD", 0.112, "ALERT") == "BTC-USD fell 11.2 % in 1d, above the 10.0 % ALERT line"
    transition = backtest(rule, "BTC-USD", np.array([0, DAY], dtype=np.int64), np.array([100.0, 88.0]), "1d")[0]
    line = transition_to_json(transition)
    assert line["time"] == "1970-01-02T00:00:00Z" and line["from"] == "OK" and line["to"] == "ALERT"


def test_no_data_is_its_own_grade_and_resolves_a_firing_pair():
    from services.alerts.state import unjudged

    rule = Rule(id="n", metric="price", condition="above", alert=120, clear=110, interval="1h", window="1h")
    state, _ = step(AlertState.initial("X-USD", "n", 0), rule, 130, 0)
    assert state.grade == "ALERT"
    state, t = unjudged(state, rule, "NO_DATA", "stale: no bar in the last 3 intervals", HOUR)
    assert (state.state, state.grade, t[0].from_grade, t[0].grade) == ("NO_DATA", "NO_DATA", "ALERT", "NO_DATA")
    assert t[0].notify and t[0].sync  # people and Alertmanager hear that the alert no longer stands
    assert "not judged: stale" in t[0].message
    again, t = unjudged(state, rule, "NO_DATA", "no data (Fetch is away)", 2 * HOUR)
    assert t == [] and again.reason == "no data (Fetch is away)"  # a new reason is no new transition
    state, t = step(again, rule, 130, 3 * HOUR)  # data again: judged afresh, fires again
    assert [(x.from_state, x.to_state, x.notify) for x in t] == [("NO_DATA", "ALERT", True)]
    state, t = step(state, rule, 100, 4 * HOUR)
    assert [(x.to_state, x.notify, x.sync) for x in t] == [("OK", True, True)]


def test_back_from_error_to_ok_is_recorded_without_notifying():
    from services.alerts.state import unjudged

    rule = Rule(id="e", metric="price", condition="above", alert=120, clear=110, interval="1h", window="1h")
    state, t = unjudged(AlertState.initial("X-USD", "e", 0), rule, "ERROR", "ValueError: boom", 0)
    assert state.grade == "ERROR" and not t[0].notify and not t[0].sync and "failed: ValueError" in t[0].message
    state, t = step(state, rule, 100, HOUR)
    assert [(x.from_state, x.to_state, x.notify) for x in t] == [("ERROR", "OK", False)] and state.state == "OK"


def test_escalation_and_de_escalation_follow_one_alert():
    rule = Rule(id="x", metric="price", condition="above", warning=110, alert=120, clear=100, interval="1h",
                window="1h")  # default cooldown: one hour
    state = AlertState.initial("X-USD", "x", 0)
    grades = []
    for hour, value in enumerate((115, 125, 115, 95)):
        state, t = step(state, rule, value, hour * 60_000)  # all within the cooldown
        grades += [(x.grade, x.notify, x.sync, x.firing_since_ms) for x in t]
    # WARNING fires, ALERT is an escalation (never held back), the step back to WARNING is held by the
    # cooldown for people but not for Alertmanager, and the resolve always goes out.
    assert grades == [("WARNING", True, True, 0), ("ALERT", True, True, 0), ("WARNING", False, True, 0),
                      ("OK", True, True, 0)]


def test_retiring_a_firing_pair_resolves_it():
    from services.alerts.state import retire

    rule = Rule(id="r", metric="price", condition="above", alert=120, clear=110, interval="1h", window="1h")
    state, _ = step(AlertState.initial("X-USD", "r", 0), rule, 130, 0)
    t = retire(state, rule, "was deleted", HOUR)
    assert (t.from_grade, t.grade, t.notify, t.sync) == ("ALERT", "OK", True, True)
    assert t.message == "X-USD: r was deleted; no longer judged"


@pytest.mark.parametrize("data, field", [
    ({"id": "a", "kind": "volatility_spike", "window": "1m", "baseline_window": "30d", "alert": 2}, "window"),
    ({"id": "a", "kind": "drawdown", "window": "10000000000000000000d", "alert": -1, "condition": "below"}, "window"),
    ({"id": "a", "metric": "sharpe", "window": "1h", "alert": 1}, "window"),  # one return: no std
    ({"id": "a", "interval": "1m", "window": "3y", "alert": 1}, "window"),  # over MAX_WINDOW_BARS
    ({"id": "a", "kind": "volatility_spike", "window": "24h", "baseline_window": "5y", "interval": "1m",
      "alert": 2}, "baseline_window"),
    ({"id": "a", "window": 24, "alert": 1}, "window"),
    ({"id": "a", "alert": "high"}, "alert"),
    ({"id": "a", "enabled": "yes", "alert": 1}, "enabled"),
    ({"id": "a", "symbol": "B" * 500, "alert": 1}, "symbol"),
])
def test_windows_are_bounded_per_interval_and_types_checked(data, field):
    with pytest.raises(InvalidArgument) as exc:
        rule_from_dict(data)
    assert exc.value.field == field and len(exc.value.message) < 200


def test_a_rule_moved_to_another_interval_is_validated_there():
    from services.alerts.rules import at_interval

    rule = rule_from_dict({"id": "a", "metric": "volatility", "window": "6h", "alert": 1})
    assert at_interval(rule, "1m").interval == "1m"
    with pytest.raises(InvalidArgument) as exc:
        at_interval(rule, "1d")
    assert exc.value.field == "interval" and "needs at least 2" in exc.value.message
