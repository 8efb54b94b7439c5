"""Calm logs: repeats held back, outages in one line."""

from __future__ import annotations

import json
import logging

import redis.exceptions

from services.common.errors import Unavailable
from services.common.logs import JsonFormatter, QuietRepeats


def record(msg: str, level: int = logging.ERROR, at: float = 0.0, name: str = "cryptolens.fetch.scheduler",
           exc: BaseException | None = None) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, (), (type(exc), exc, exc.__traceback__) if exc else None)
    rec.created = at
    return rec


def test_the_same_line_passes_once_per_window_and_says_how_many_were_held():
    quiet = QuietRepeats(window_s=60)
    assert quiet.filter(record("refresh tick failed", at=0))
    assert not any(quiet.filter(record("refresh tick failed", at=t)) for t in range(2, 60, 2))
    assert quiet.filter(record("another reason", at=30))  # other text: never held back by the first
    assert quiet.filter(record("refresh tick failed", level=logging.INFO, at=31))  # info always passes
    later = record("refresh tick failed", at=61)
    assert quiet.filter(later) and later.repeated == 29
    assert quiet.filter(record("redis lost", name="cryptolens.runtime", at=62))
    assert quiet.filter(record("redis lost", name="cryptolens.runtime", at=63))  # the runtime logs changes only


def test_an_outage_is_one_line_a_bug_keeps_its_traceback():
    formatter = JsonFormatter("fetch")
    outage = json.loads(formatter.format(record("tick failed", exc=redis.exceptions.ConnectionError(
        "Error 111 connecting to 127.0.0.1:6379.\nConnection refused."))))
    assert outage["error"] == "ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused."
    assert "exc" not in outage
    peer_down = json.loads(formatter.format(record("evaluation failed", exc=Unavailable("Fetch service is down"))))
    assert peer_down["error"] == "Unavailable: Fetch service is down"
    try:
        raise KeyError("bug")
    except KeyError as exc:
        bug = json.loads(formatter.format(record("tick failed", exc=exc)))
    assert "Traceback" in bug["exc"] and "error" not in bug
