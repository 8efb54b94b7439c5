"""Bars from a stream: 1-minute bars from trades (and Binance klines), every other interval rolled up.

One truth across intervals: a coarser bar is only ever the aggregate of its minutes (open = first
open, high = max, low = min, close = last close, volume = sum), so a 1h bar equals its 60 minutes.

Rules (docs/architecture.md, "Streams"):
- Clock: ``now`` is the later of the wall clock and the newest exchange time seen for the symbol.
  A bar whose end is after ``now`` is partial (FLAG_PARTIAL, as the REST providers mark it).
- Late trades: a trade stamped in a minute that ended more than ``grace_ms`` before the symbol's
  newest exchange time is dropped and counted (REST repair has it); within the grace it updates
  the closed minute and every bar containing it, which are written again, complete.
- Binance klines are the exchange's own minute: a kline replaces the minute as of its event time;
  trades stamped after that time extend it; an ``x:true`` kline is final and nothing changes it.
- Coverage: a bar is written only if the builder saw its whole span (``covered_from`` <= its
  open): the minutes seeded from REST at (re)connect plus the stream since. A bar only partly seen
  is never written: REST polling keeps it instead. A lost connection clears the coverage.
Writes are batched: ``take_dirty`` returns each changed bar once, however many frames changed it.
"""

from __future__ import annotations

import numpy as np

from services.common.bars import BAR_DTYPE, FLAG_PARTIAL
from services.common.intervals import MINUTE_MS, interval_ms


class _Bar:
    __slots__ = ("open", "high", "low", "close", "volume", "open_ts", "close_ts", "seen_to", "final")

    def __init__(self, o, h, l, c, v, open_ts, close_ts, seen_to=0, final=False):  # noqa: E741
        self.open, self.high, self.low, self.close, self.volume = o, h, l, c, v
        self.open_ts, self.close_ts = open_ts, close_ts  # exchange times of the open and close prints
        self.seen_to = seen_to  # minutes: trades up to this exchange time are already included
        self.final = final  # minutes: the exchange's closing kline; nothing changes it

    def add(self, ts: int, price: float, qty: float) -> None:
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price
        if ts >= self.close_ts:
            self.close, self.close_ts = price, ts
        if ts < self.open_ts:
            self.open, self.open_ts = price, ts
        self.volume += qty


def _rollup(minutes: list[_Bar]) -> _Bar:
    first, last = minutes[0], minutes[-1]
    return _Bar(first.open, max(m.high for m in minutes), min(m.low for m in minutes), last.close,
                sum(m.volume for m in minutes), first.open_ts, last.close_ts)


class _Symbol:
    __slots__ = ("minutes", "covered_from", "newest", "dirty", "redo")

    def __init__(self) -> None:
        self.minutes: dict[int, _Bar] = {}
        self.covered_from: int | None = None
        self.newest = 0  # newest exchange time seen
        self.dirty: set[int] = set()  # minute open times changed since the last take_dirty
        self.redo: set[tuple[str, int]] = set()  # (interval, open time) whose write failed


class BarBuilder:
    def __init__(self, symbols: list[str], intervals: list[str], grace_ms: int = 5_000):
        self.intervals = list(dict.fromkeys(intervals))
        self.steps = {i: interval_ms(i) for i in self.intervals}
        self.coarsest = max(self.steps.values())
        self.grace_ms = grace_ms
        self.state = {s: _Symbol() for s in symbols}
        self.late_dropped = 0
        self._partial: set[tuple[str, str, int]] = set()  # bars last written partial

    # --- coverage ------------------------------------------------------------------------
    def seed(self, symbol: str, bars: np.ndarray, from_ms: int, as_of_ms: int) -> None:
        """Minutes from REST covering [from_ms, as_of_ms): the stream goes on from there.

        The open minute keeps counting trades stamped after ``as_of_ms``."""
        st = self.state[symbol]
        for b in bars[bars["ts"] >= from_ms]:
            ts = int(b["ts"])
            complete = not (int(b["flags"]) & FLAG_PARTIAL)
            old = st.minutes.get(ts)
            if old is not None and old.final:
                continue
            st.minutes[ts] = _Bar(float(b["open"]), float(b["high"]), float(b["low"]), float(b["close"]),
                                  float(b["volume"]), ts, ts + MINUTE_MS - 1 if complete else as_of_ms,
                                  ts + MINUTE_MS if complete else as_of_ms)
            st.dirty.add(ts)
        st.covered_from = from_ms
        st.newest = max(st.newest, as_of_ms)

    def cover_from_next_minute(self, symbol: str, now_ms: int) -> None:
        """No REST seed (it failed): trades count from the next whole minute on."""
        st = self.state[symbol]
        st.covered_from = (now_ms // MINUTE_MS + 1) * MINUTE_MS

    def uncover(self, symbol: str) -> None:
        self.state[symbol].covered_from = None

    def seed_start(self, now_ms: int) -> int:
        """Where a seed must begin so every open bar of every interval is covered whole."""
        return (now_ms - self.grace_ms) // self.coarsest * self.coarsest

    # --- events --------------------------------------------------------------------------
    def add_trade(self, symbol: str, ts: int, price: float, qty: float) -> bool:
        st = self.state[symbol]
        if ts > st.newest:
            st.newest = ts
        minute = ts - ts % MINUTE_MS
        if minute + MINUTE_MS + self.grace_ms <= st.newest:
            self.late_dropped += 1
            return False
        bar = st.minutes.get(minute)
        if bar is None:
            st.minutes[minute] = _Bar(price, price, price, price, qty, ts, ts)
        elif bar.final or ts <= bar.seen_to:
            return False  # already in the exchange's own minute
        else:
            bar.add(ts, price, qty)
        st.dirty.add(minute)
        return True

    def add_kline(self, symbol: str, open_ms: int, o: float, h: float, l: float, c: float,  # noqa: E741
                  v: float, event_ms: int, closed: bool) -> bool:
        st = self.state[symbol]
        if event_ms > st.newest:
            st.newest = event_ms
        old = st.minutes.get(open_ms)
        if old is not None and (old.final or old.seen_to > event_ms):
            return False
        end = open_ms + MINUTE_MS
        st.minutes[open_ms] = _Bar(o, h, l, c, v, open_ms, end - 1 if closed else event_ms,
                                   end if closed else event_ms, closed)
        st.dirty.add(open_ms)
        return True

    # --- output --------------------------------------------------------------------------
    def take_dirty(self, wall_ms: int) -> dict[tuple[str, str], np.ndarray]:
        """Every bar changed since the last call (and every partial bar that has since closed),
        per (symbol, interval), sorted; then forgets minutes no open bar needs any more."""
        out: dict[tuple[str, str], list[tuple]] = {}
        due = {(s, i, t) for s, i, t in self._partial
               if t + self.steps[i] <= max(wall_ms, self.state[s].newest)}
        for symbol, st in self.state.items():
            now = max(wall_ms, st.newest)
            wanted = {(i, t) for s, i, t in due if s == symbol} | st.redo
            st.redo = set()
            for minute in st.dirty:
                for interval, step in self.steps.items():
                    wanted.add((interval, minute - minute % step))
            st.dirty.clear()
            for interval, start in sorted(wanted, key=lambda k: k[1]):
                step = self.steps[interval]
                self._partial.discard((symbol, interval, start))
                if st.covered_from is None or start < st.covered_from:
                    continue  # not seen whole: REST keeps this bar
                minutes = [st.minutes[t] for t in range(start, start + step, MINUTE_MS) if t in st.minutes]
                if not minutes:
                    continue
                bar = _rollup(minutes) if len(minutes) > 1 or step != MINUTE_MS else minutes[0]
                partial = start + step > now
                if partial:
                    self._partial.add((symbol, interval, start))
                out.setdefault((symbol, interval), []).append(
                    (start, bar.open, bar.high, bar.low, bar.close, bar.volume, FLAG_PARTIAL if partial else 0))
            keep_from = (now - self.grace_ms - MINUTE_MS) // self.coarsest * self.coarsest
            for t in [t for t in st.minutes if t < keep_from]:
                del st.minutes[t]
        return {key: np.array(rows, dtype=BAR_DTYPE) for key, rows in out.items()}

    def mark_dirty(self, symbol: str, bars: np.ndarray, interval: str) -> None:
        """Put bars back for the next ``take_dirty`` (their write failed)."""
        self.state[symbol].redo.update((interval, int(ts)) for ts in bars["ts"])
