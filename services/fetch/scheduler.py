"""Keeps the watch list fresh: backfill on first sight, incremental refresh, gap repair.

Each (symbol, interval) is refreshed only by the replica that holds its lease in Redis, so
several Fetch replicas on one Redis never poll the same series at the same time.
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.common.bars import find_gaps
from services.common.intervals import DAY_MS, interval_ms
from services.fetch.ingest import Ingestor
from services.fetch.lease import Leases

log = logging.getLogger("cryptolens.fetch.scheduler")

MAX_GAP_REPAIRS_PER_TICK = 5


def _now_ms() -> int:
    return int(time.time() * 1000)


class Scheduler:
    def __init__(self, ingestor: Ingestor, leases: Leases, watchlist: list[str], interval: str,
                 history_days: int, refresh_s: float):
        self.ingestor = ingestor
        self.leases = leases
        self.watchlist = watchlist
        self.interval = interval
        self.history_days = history_days
        self.refresh_s = refresh_s
        self._unfillable: set[tuple[str, int]] = set()  # gaps no provider could fill

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - a bad tick must not end the loop
                log.exception("refresh tick failed")
            await asyncio.sleep(self.refresh_s)

    async def tick(self) -> None:
        for symbol in self.watchlist:
            if not await self.leases.acquire(symbol, self.interval):
                continue  # another replica owns this series
            log.debug("poll start", extra={"symbol": symbol, "owner": self.leases.owner, "t_ms": _now_ms()})
            try:
                await self.refresh(symbol)
            except Exception as exc:  # noqa: BLE001 - one symbol failing must not starve the others
                log.warning("refresh failed", extra={"symbol": symbol, "error": str(exc)})
            finally:
                log.debug("poll end", extra={"symbol": symbol, "owner": self.leases.owner, "t_ms": _now_ms()})

    async def refresh(self, symbol: str) -> None:
        interval, step = self.interval, interval_ms(self.interval)
        store = self.ingestor.store
        now = _now_ms()
        want_start = (now - self.history_days * DAY_MS) // step * step
        async with self.ingestor.lock(symbol, interval):
            info = await store.info(symbol, interval)
            fallback = self.ingestor.fallback
            if info is None or (fallback and info.source == fallback.name and self.ingestor.chain):
                # First sight, or only simulated data so far: (re)load the whole history window.
                await self.ingestor.ingest(symbol, interval, want_start, now + step)
                return
            if info.first_ms is not None and info.first_ms > want_start:
                await self.ingestor.ingest(symbol, interval, want_start, info.first_ms)
            # Incremental: from the newest stored bar (it may have been partial) up to now.
            await self.ingestor.ingest(symbol, interval, info.last_ms, now + step)
            await self._repair_gaps(symbol, want_start, now)

    async def _repair_gaps(self, symbol: str, start_ms: int, end_ms: int) -> None:
        step = interval_ms(self.interval)
        data = await self.ingestor.store.read(symbol, self.interval, start_ms, end_ms, ("ts",))
        if data is None:
            return
        todo = [g for g in find_gaps(data.columns["ts"], step) if (symbol, g[0]) not in self._unfillable]
        for first, last in todo[:MAX_GAP_REPAIRS_PER_TICK]:
            result = await self.ingestor.ingest(symbol, self.interval, first, last + step)
            if result.write.written == 0:
                self._unfillable.add((symbol, first))  # the provider has no data there either
