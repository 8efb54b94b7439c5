"""The write path: ask the provider chain for a range and store it whole, or not at all."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np

from services.common.bars import find_gaps
from services.common.errors import NotFound, Unavailable
from services.common.intervals import interval_ms
from services.common.store import PriceStore, WriteResult
from services.common.normalize import normalize_bars
from services.fetch.providers.base import Provider, ProviderError, Unsupported

log = logging.getLogger("cryptolens.fetch")


@dataclass(frozen=True)
class IngestResult:
    write: WriteResult
    source: str
    gaps: list[tuple[int, int]]


class Ingestor:
    """Fetches ranges through a provider chain into the store.

    ``chain`` is a list of providers tried in order; the first that supports the pair and
    answers wins. Concurrent requests for the same (symbol, interval) are serialised so one
    caller's fetch-through is not repeated by the next.
    """

    def __init__(self, store: PriceStore, chain: list[Provider], fallback: Provider | None = None,
                 provider_timeout_s: float = 120.0):
        self.store = store
        self.chain = chain
        self.fallback = fallback  # used (loudly) when no provider in the chain answers
        self.provider_timeout_s = provider_timeout_s  # one provider's whole range, retries included
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def lock(self, symbol: str, interval: str) -> asyncio.Lock:
        return self._locks.setdefault((symbol, interval), asyncio.Lock())

    def supports(self, symbol: str, interval: str) -> bool:
        providers = self.chain + ([self.fallback] if self.fallback else [])
        return any(p.supports(symbol, interval) for p in providers)

    async def fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> tuple[np.ndarray, str]:
        """Bars from the first provider that answers. NOT_FOUND if none knows the pair."""
        errors: list[str] = []
        candidates = [p for p in self.chain if p.supports(symbol, interval)]
        for provider in candidates:
            try:
                bars = await asyncio.wait_for(provider.fetch_bars(symbol, interval, start_ms, end_ms),
                                              self.provider_timeout_s)
                return bars, provider.name
            except asyncio.TimeoutError:
                errors.append(f"{provider.name}: no complete answer within {self.provider_timeout_s:g} s")
                log.warning("provider too slow, trying the next", extra={"provider": provider.name})
            except Unsupported as exc:
                errors.append(str(exc))
            except ProviderError as exc:
                errors.append(str(exc))
                log.warning("provider failed, trying the next", extra={"provider": provider.name, "error": str(exc)})
        if self.fallback and self.fallback.supports(symbol, interval):
            if candidates:
                log.warning("NO LIVE PROVIDER ANSWERED: serving simulated data",
                            extra={"symbol": symbol, "interval": interval, "errors": errors})
            return await self.fallback.fetch_bars(symbol, interval, start_ms, end_ms), self.fallback.name
        if not candidates:
            raise NotFound(f"no provider knows {symbol} at {interval}")
        raise Unavailable(f"every provider failed for {symbol} {interval}: {'; '.join(errors)}")

    async def ingest(self, symbol: str, interval: str, start_ms: int, end_ms: int | None = None) -> IngestResult:
        end_ms = end_ms if end_ms is not None else int(time.time() * 1000) + interval_ms(interval)
        bars, source = await self.fetch(symbol, interval, start_ms, end_ms)
        # One last pass of the shared rules, whatever the provider did: sorted, unique, valid, flagged.
        bars = normalize_bars(bars, interval_ms(interval), int(time.time() * 1000)).bars
        result = await self.store.write(symbol, interval, bars, source)
        gaps = find_gaps(bars["ts"], interval_ms(interval))
        log.info("stored", extra={"symbol": symbol, "interval": interval, "bars": len(bars), "source": source,
                                  "version": result.version, "gaps": len(gaps)})
        return IngestResult(result, source, gaps)
