"""Request checks that run before any I/O, and the window a request asks for.

A window wider than MAX_WINDOW_BARS bars of its interval is refused with RESOURCE_EXHAUSTED
before anything is read or fetched. A lookback counts back from ``end`` if given, else from the
newest stored bar (so a replayed file still has a "last 30d"), else from now; a stored bar later
than now + MAX_FUTURE_MS never anchors a window.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.convert import from_timestamp
from services.common.errors import InvalidArgument, ResourceExhausted, short
from services.common.intervals import Window, interval_ms, parse_lookback
from services.common.limits import MAX_FUTURE_MS, MAX_WINDOW_BARS
from services.common.store import SeriesInfo

def _refuse_wide(bars: int, interval: str, what: str) -> None:
    if bars > MAX_WINDOW_BARS:
        raise ResourceExhausted(
            f"{what} spans {bars:,} bars of {interval}, more than MAX_WINDOW_BARS = {MAX_WINDOW_BARS:,} "
            f"(see docs/provenance.md, 'Caps'); ask for a shorter window or a coarser interval")


@dataclass(frozen=True)
class WindowSpec:
    """The window fields of a request, checked; ``resolve`` turns them into times."""

    interval: str
    lookback: str
    lookback_ms: int | None
    start_ms: int | None
    end_ms: int | None

    @classmethod
    def parse(cls, request, interval: str, now_ms: int, symbols: int = 1) -> WindowSpec:
        """Check lookback/start/end and the window cap (``symbols`` series share one cap)."""
        start, end = from_timestamp(request, "start"), from_timestamp(request, "end")
        lookback_ms = None
        if request.lookback:
            if start is not None:
                raise InvalidArgument("lookback", "give either lookback or start, not both")
            if len(request.lookback) > 16:
                raise InvalidArgument("lookback", f"{short(request.lookback)} is not a lookback such as '24h', "
                                                  "'30d' or '1y'")
            lookback_ms = parse_lookback(request.lookback)
        if start is not None and end is not None and start >= end:
            raise InvalidArgument("end", "end must be after start (the window is empty or inverted)")
        spec = cls(interval, request.lookback, lookback_ms, start, end)
        step = interval_ms(interval)
        if lookback_ms is not None:
            _refuse_wide(-(-lookback_ms // step) * symbols, interval, f"lookback {request.lookback}"
                         + (f" for {symbols} symbols" if symbols > 1 else ""))
        elif start is not None:
            # Bars cannot exist after now (plus the clock skew Fetch accepts): a far end is fine.
            until = min(end if end is not None else now_ms, now_ms + MAX_FUTURE_MS)
            _refuse_wide(max(0, -(-(until - start) // step)) * symbols, interval, "the window from start"
                         + (f" for {symbols} symbols" if symbols > 1 else ""))
        return spec

    @property
    def bounded(self) -> bool:
        """False for "the whole stored history" (no lookback, no start): capped by what is stored."""
        return self.lookback_ms is not None or self.start_ms is not None

    def resolve(self, latest_ms: int | None, now_ms: int) -> Window:
        if self.lookback_ms is None:
            return Window(self.start_ms, self.end_ms)
        if self.end_ms is not None:
            anchor = self.end_ms
        elif latest_ms is not None:
            anchor = min(latest_ms + 1, now_ms + MAX_FUTURE_MS)
        else:
            anchor = now_ms
        return Window(max(0, anchor - self.lookback_ms), anchor)  # no bar is older than 1970

    def check_stored(self, window: Window, infos: list[SeriesInfo]) -> None:
        """The cap for a window without a start: the stored bars it would take, over all series."""
        if self.bounded:
            return
        step = interval_ms(self.interval)
        bars = 0
        for info in infos:
            if info.first_ms is None or info.last_ms is None:
                continue
            end = info.last_ms + 1 if window.end_ms is None else min(window.end_ms, info.last_ms + 1)
            bars += max(0, -(-(end - info.first_ms) // step))
        _refuse_wide(bars, self.interval, "the stored history asked for (no lookback or start)")
