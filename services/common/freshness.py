"""Freshness and coverage of an answer: how old its newest bar is, and how much of the asked window it holds."""

from __future__ import annotations

from cryptolens.v1 import common_pb2
from services.common.convert import to_timestamp
from services.common.intervals import interval_ms


def freshness_pb(newest_ms: int | None, interval: str, stale_after_bars: int, now_ms: int,
                 out: common_pb2.Freshness | None = None) -> common_pb2.Freshness:
    """Age is counted from the newest bar's close (open + one interval); no bar at all is stale.
    ``out``: the field of a response to fill, instead of a new message to copy there."""
    out = common_pb2.Freshness() if out is None else out
    out.stale_after_bars = stale_after_bars
    if newest_ms is None:
        out.stale = True
        return out
    step = interval_ms(interval)
    age_ms = max(0, now_ms - (newest_ms + step))
    out.newest_bar.seconds, ms = divmod(newest_ms, 1000)
    out.newest_bar.nanos = ms * 1_000_000
    out.age_seconds = age_ms / 1000
    out.stale = age_ms > stale_after_bars * step
    return out


def is_stale(newest_ms: int | None, interval: str, stale_after_bars: int, now_ms: int) -> bool:
    return freshness_pb(newest_ms, interval, stale_after_bars, now_ms).stale


def coverage_pb(start_ms: int | None, end_ms: int, first_ms: int | None, last_ms: int | None, bars: int,
                interval: str, until_ms: int | None = None) -> common_pb2.Coverage:
    """``start_ms`` None means "from the first stored bar": the window is then whatever is stored.
    ``until_ms``: no bar can exist from then on (now), so a window reaching past it expects none there."""
    step = interval_ms(interval)
    out = common_pb2.Coverage(requested_end=to_timestamp(end_ms), bars=bars)
    if start_ms is not None:
        out.requested_start.CopyFrom(to_timestamp(start_ms))
    if first_ms is not None and last_ms is not None:
        out.first_bar.CopyFrom(to_timestamp(first_ms))
        out.last_bar.CopyFrom(to_timestamp(last_ms))
    begin = start_ms if start_ms is not None else first_ms
    end = end_ms if until_ms is None else min(end_ms, until_ms)
    expected = 0 if begin is None else max(0, -(-(end - begin) // step))
    out.expected_bars = expected
    out.fraction = min(1.0, bars / expected) if expected else 0.0
    return out
