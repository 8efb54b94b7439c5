"""Keeps every used series fresh: backfill on first sight, incremental refresh, gap repair.

The series it refreshes: the watch list at the watched interval, every csv file given, and every
series someone asked for recently (``PriceStore.used_series``, bounded), whatever its interval.
Each series is refreshed only by the replica that holds its lease in Redis, renewed while the
refresh runs, so several Fetch replicas on one Redis never poll the same series at the same time.
A replica takes a new lease only while it holds fewer than its quota (``Leases.quota``) and gives
back what it holds beyond it; the quotas of the live replicas add up to the series count, so the
series spread over them as evenly as whole numbers allow.
A refresh that fails writes nothing: the series gets older (the age gauge shows it), one log line
says so, and the next tick tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from prometheus_client import Counter, Gauge

from services.common.bars import find_gaps
from services.common.intervals import DAY_MS, interval_ms
from services.fetch.ingest import Ingestor
from services.fetch.lease import Leases

log = logging.getLogger("cryptolens.fetch.scheduler")

MAX_GAP_REPAIRS_PER_TICK = 5
USED_TTL_MS = 7 * DAY_MS  # a series nobody asked for in a week is no longer refreshed

SERIES_AGE = Gauge("cryptolens_series_newest_bar_age_seconds",
                   "Seconds since the newest stored bar of a series closed (open time + one interval)",
                   ["symbol", "interval"])
REFRESH_FAILURES = Counter("cryptolens_series_refresh_failures_total",
                           "Scheduled refreshes of a series that stored nothing because no provider answered",
                           ["symbol", "interval"])


def _now_ms() -> int:
    return int(time.time() * 1000)


def _stop_if_cancelled() -> None:
    """Raises the cancellation a stop asked for, even one that got lost: before Python 3.12,
    ``asyncio.wait_for`` (redis-py's socket writes use it) can swallow one that arrives as the
    awaited call completes, and the scheduler ran on, holding its leases, until the process was
    killed (1 SIGTERM in about 20). The request still shows in ``cancelling()``."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Scheduler:
    def __init__(self, ingestor: Ingestor, leases: Leases, watchlist: list[str], interval: str,
                 history_days: int, refresh_s: float, files: list[tuple[str, str]] = ()):
        self.ingestor = ingestor
        self.leases = leases
        self.watchlist = watchlist
        self.interval = interval
        self.history_days = history_days
        self.refresh_s = refresh_s
        self.files = list(files)
        self._unfillable: set[tuple[str, str, int]] = set()  # gaps no provider could fill
        self._failing: set[tuple[str, str]] = set()
        # Hook for the exchange streams: the open time from which a stream writes the series (None:
        # not streamed now). REST refreshes stop there, so one truth holds for the bars a stream owns.
        self.streamed_from: Callable[[str, str], int | None] = lambda symbol, interval: None
        self._contents_began: int | None = None  # the store contents' mark this process saw last

    async def run(self) -> None:
        # Files first, without waiting for leases: a replica that died without releasing them must
        # not leave another file's bars served for a lease period. Idempotent across replicas.
        for symbol, interval in self.files:
            await self._refresh_logged(symbol, interval)
        failing = False
        while True:
            try:
                await self.tick()
            except Exception as exc:  # noqa: BLE001 - a bad tick (Redis down) must not end the loop
                if not failing:  # one line while it lasts, not one per tick
                    log.warning("refresh ticks failing; retrying every tick", extra={"error": str(exc)[:300]})
                failing = True
            else:
                if failing:
                    log.info("refresh ticks work again")
                failing = False
            _stop_if_cancelled()
            await asyncio.sleep(self.refresh_s)

    async def targets(self) -> list[tuple[str, str]]:
        watched = [(s, self.interval) for s in self.watchlist]
        used = await self.ingestor.store.used_series(_now_ms() - USED_TTL_MS)
        series = dict.fromkeys([*self.files, *watched, *used])
        return [key for key in series if self.ingestor.supports(*key)]

    async def tick(self) -> None:
        await self._check_contents()
        targets = await self.targets()
        quota = await self.leases.quota(len(targets))
        mine = [key for key in targets if self.leases.holds(*key)]
        for key in mine[quota:]:  # above its quota (a replica joined): one below its own takes them
            await self.leases.release(*key)
        holding = len(mine[:quota])
        for symbol, interval in targets:
            _stop_if_cancelled()
            had = self.leases.holds(symbol, interval)
            if had or holding < quota:  # keeps what it holds; takes a free series only below its quota
                async with self.leases.hold(symbol, interval) as held:
                    holding += held - had
                    if held:
                        await self._refresh_logged(symbol, interval)
            await self._publish_age(symbol, interval)

    async def _check_contents(self) -> None:
        """Notice a Redis that restarted empty (the contents' mark is gone) and record it for the page."""
        contents = await self.ingestor.store.mark_contents(self._contents_began)
        if self._contents_began is not None and contents.began_ms != self._contents_began:
            log.warning("Redis restarted empty: every series is fetched again from the providers")
        self._contents_began = contents.began_ms

    async def _refresh_logged(self, symbol: str, interval: str) -> None:
        log.debug("poll start", extra={"symbol": symbol, "interval": interval, "owner": self.leases.owner,
                                       "t_ms": _now_ms()})
        key = (symbol, interval)
        try:
            await self.refresh(symbol, interval)
        except Exception as exc:  # noqa: BLE001 - one series failing must not starve the others
            REFRESH_FAILURES.labels(symbol, interval).inc()
            if key not in self._failing:  # one line when it starts failing, not one per tick
                self._failing.add(key)
                log.warning("series not refreshed: kept as stored, getting older until a provider answers",
                            extra={"symbol": symbol, "interval": interval, "error": str(exc)[:300]})
        else:
            if key in self._failing:
                self._failing.discard(key)
                log.info("series refreshed again", extra={"symbol": symbol, "interval": interval})
        finally:
            log.debug("poll end", extra={"symbol": symbol, "interval": interval, "owner": self.leases.owner,
                                         "t_ms": _now_ms()})

    async def _publish_age(self, symbol: str, interval: str) -> None:
        info = await self.ingestor.store.info(symbol, interval)
        if info is not None and info.last_ms is not None:
            age_ms = max(0, _now_ms() - (info.last_ms + interval_ms(interval)))
            SERIES_AGE.labels(symbol, interval).set(age_ms / 1000)

    async def refresh(self, symbol: str, interval: str) -> None:
        store = self.ingestor.store
        origin = self.ingestor.origin_of(symbol, interval)
        want_start, want_end = await self.ingestor.full_range(symbol, interval, self.history_days)
        streamed = self.streamed_from(symbol, interval)
        if streamed is not None:
            want_end = min(want_end, streamed)
        async with self.ingestor.lock(symbol, interval):
            info = await store.info(symbol, interval)
            if info is None or info.origin != origin:
                # First sight, or the series came from elsewhere (another file, a simulated run):
                # load it whole; the first write replaces what was stored.
                await self.ingestor.ingest(symbol, interval, want_start, want_end)
                return
            if origin.startswith("csv:"):
                return  # a file is loaded whole once; it has nothing newer
            if info.first_ms is not None and info.first_ms > want_start:
                await self.ingestor.ingest(symbol, interval, want_start, info.first_ms)
            # Incremental: from the newest stored bar (it may have been partial) up to now, but never
            # from further back than the history window (a series someone looked at for an old window
            # is kept fresh, not back-filled for years; the hole in between is a reported gap).
            await self.ingestor.ingest(symbol, interval, max(info.last_ms, want_start), want_end)
            await self._repair_gaps(symbol, interval, want_start, want_end)

    async def _repair_gaps(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> None:
        step = interval_ms(interval)
        data = await self.ingestor.store.read(symbol, interval, start_ms, end_ms, ("ts",))
        if data is None:
            return
        todo = [g for g in find_gaps(data.columns["ts"], step) if (symbol, interval, g[0]) not in self._unfillable]
        for first, last in todo[:MAX_GAP_REPAIRS_PER_TICK]:
            result = await self.ingestor.ingest(symbol, interval, first, last + step)
            if result.written == 0:
                self._unfillable.add((symbol, interval, first))  # the provider has no data there either
