"""The page's background calls: a slow call is never queued twice, a finished one is refreshed,
and the last answer is served while its refresh runs (the panel never blanks)."""

from __future__ import annotations

import threading

from ui.background import BackgroundCalls


def test_a_running_call_is_never_started_again_and_a_done_one_is_refreshed_after_its_ttl():
    now = [0.0]
    calls = BackgroundCalls(workers=1, clock=lambda: now[0])
    release, runs = threading.Event(), []

    def slow():
        runs.append(1)
        release.wait(10)
        return len(runs)

    first = calls.get("forecast", slow, ttl_s=60)
    now[0] = 600.0  # long past the ttl, still running (the reported case: a queue of stale repeats)
    assert calls.get("forecast", slow, ttl_s=60) is first
    release.set()
    assert first.result(timeout=10) == 1
    release.clear()
    now[0] = 630.0
    assert calls.get("forecast", slow, ttl_s=60) is first  # done and older than 60 s: refreshed, and
    for _ in range(1000):  # the refresh is running (blocked on release) ...
        if len(runs) == 2:
            break
        threading.Event().wait(0.01)
    assert len(runs) == 2 and calls.get("forecast", slow, ttl_s=60) is first  # ... meanwhile the last answer
    release.set()
    for _ in range(1000):  # the refresh ends
        fresh = calls.get("forecast", slow, ttl_s=60)
        if fresh is not first:
            break
        threading.Event().wait(0.01)
    assert fresh.result(timeout=10) == 2 and len(runs) == 2
    now[0] = 650.0
    assert calls.get("forecast", slow, ttl_s=60) is fresh  # done but young: kept


def test_keys_are_independent():
    calls = BackgroundCalls(workers=2)
    a, b = calls.get("a", lambda: "A", 60), calls.get("b", lambda: "B", 60)
    assert (a.result(timeout=10), b.result(timeout=10)) == ("A", "B")
