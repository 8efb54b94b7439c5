"""The write path: ask the series' providers for a range and store it, piece by piece, each piece whole.

One origin per series: a series with a csv file is served by that file alone; otherwise by the
providers that support it, which are either all live (exchanges, CoinGecko) or the simulated one,
never a mix. When every provider fails nothing is written (the series gets older, not different)
and the caller gets UNAVAILABLE with the reasons.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Counter

from services.common.bars import find_gaps
from services.common.errors import NotFound, ResourceExhausted, Unavailable
from services.common.intervals import DAY_MS, interval_ms
from services.common.limits import MAX_FETCH_BARS
from services.common.normalize import normalize_bars
from services.common.store import PriceStore
from services.fetch.providers.base import Provider, ProviderError

log = logging.getLogger("cryptolens.fetch")

INGESTED_BARS = Counter("cryptolens_ingested_bars_total",
                        "Bars written to Redis (new or changed), by series and the provider that served them",
                        ["symbol", "interval", "provider"])

PIECE_BARS = 50_000  # bars fetched, normalised and written at once: bounds memory of a long backfill


@dataclass
class IngestResult:
    written: int = 0
    version: int = 0
    source: str = ""
    replaced: bool = False
    gaps: list[tuple[int, int]] = field(default_factory=list)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Ingestor:
    """Fetches ranges from a series' providers into the store.

    Concurrent requests for the same (symbol, interval) are serialised with ``lock`` so one
    caller's fetch-through is not repeated by the next.
    """

    def __init__(self, store: PriceStore, providers: list[Provider], provider_timeout_s: float = 120.0):
        self.store = store
        self.providers = providers
        self.provider_timeout_s = provider_timeout_s  # one provider's whole range, retries included
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def lock(self, symbol: str, interval: str) -> asyncio.Lock:
        return self._locks.setdefault((symbol, interval), asyncio.Lock())

    def providers_for(self, symbol: str, interval: str) -> list[Provider]:
        """A file given for the series wins alone; else every provider that serves it, in order."""
        serving = [p for p in self.providers if p.supports(symbol, interval)]
        files = [p for p in serving if p.origin == "csv"]
        return files[:1] or serving

    def supports(self, symbol: str, interval: str) -> bool:
        return bool(self.providers_for(symbol, interval))

    def origin_of(self, symbol: str, interval: str) -> str | None:
        providers = self.providers_for(symbol, interval)
        return providers[0].origin_of(symbol, interval) if providers else None

    async def full_range(self, symbol: str, interval: str, history_days: int) -> tuple[int, int]:
        """What a first load covers: a whole file, or the last ``history_days`` up to now."""
        providers = self.providers_for(symbol, interval)
        if providers and hasattr(providers[0], "extent"):
            try:
                return await providers[0].extent(symbol, interval)
            except ProviderError as exc:
                raise Unavailable(str(exc)) from None
        step, now = interval_ms(interval), _now_ms()
        return (now - history_days * DAY_MS) // step * step, now + 1  # every bar that has opened by now

    async def fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> tuple[np.ndarray, str]:
        """Bars from the first provider of the series that answers. NOT_FOUND if none knows the pair."""
        candidates = self.providers_for(symbol, interval)
        if not candidates:
            raise NotFound(f"no provider knows {symbol} at {interval}")
        errors: list[str] = []
        for provider in candidates:
            try:
                bars = await asyncio.wait_for(provider.fetch_bars(symbol, interval, start_ms, end_ms),
                                              self.provider_timeout_s)
                return bars, provider.name
            except asyncio.TimeoutError:
                errors.append(f"{provider.name}: no complete answer within {self.provider_timeout_s:g} s")
            except ProviderError as exc:
                errors.append(str(exc))
            log.debug("provider failed, trying the next", extra={"provider": provider.name, "error": errors[-1]})
        raise Unavailable(f"every provider failed for {symbol} {interval}: {'; '.join(errors)}")

    async def ingest(self, symbol: str, interval: str, start_ms: int, end_ms: int | None = None,
                     deadline: float | None = None) -> IngestResult:
        """Fetch [start_ms, end_ms) and store it, in pieces of PIECE_BARS bars (each stored whole).

        ``deadline`` (time.monotonic): no piece starts after it. Callers also cancel on it; this
        check holds even if a cancellation is lost (asyncio.wait_for can drop one before 3.12)."""
        step = interval_ms(interval)
        end_ms = end_ms if end_ms is not None else _now_ms() + 1
        origin = self.origin_of(symbol, interval)
        # The cap is on what providers are asked for; a replayed file is served whole, whatever its length.
        if (end_ms - start_ms) // step > MAX_FETCH_BARS and not (origin or "").startswith("csv:"):
            raise ResourceExhausted(f"a fetch of {(end_ms - start_ms) // step} {interval} bars exceeds "
                                    f"MAX_FETCH_BARS={MAX_FETCH_BARS}; ask for a shorter window")
        result = IngestResult()
        piece_start = start_ms
        while piece_start < end_ms:
            if deadline is not None and time.monotonic() > deadline:
                raise asyncio.TimeoutError(f"the caller's deadline passed; {result.written} bars stored so far")
            piece_end = min(end_ms, piece_start + PIECE_BARS * step)
            bars, source = await self.fetch(symbol, interval, piece_start, piece_end)
            # One last pass of the shared rules, whatever the provider did: sorted, unique, valid, flagged.
            bars = (await asyncio.to_thread(normalize_bars, bars, step, _now_ms())).bars
            written = await self.store.write(symbol, interval, bars, source, origin)
            INGESTED_BARS.labels(symbol, interval, source).inc(written.written)
            result.written += written.written
            result.version = written.version or result.version
            result.source = source
            result.replaced |= written.replaced
            result.gaps += find_gaps(bars["ts"], step)
            piece_start = piece_end
        log.info("stored", extra={"symbol": symbol, "interval": interval, "bars": result.written,
                                  "source": result.source, "origin": origin, "version": result.version,
                                  "replaced": result.replaced, "gaps": len(result.gaps)})
        return result
