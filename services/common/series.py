"""Core's read side: decoded (ts, close) arrays per series, cached in memory by data version,
with fetch-through to the Fetch service for series the store does not have yet."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

import grpc
import numpy as np

from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc
from services.common.errors import NotFound, Unavailable
from services.common.convert import to_timestamp
from services.common.store import PriceStore


@dataclass(frozen=True)
class Series:
    symbol: str
    interval: str
    ts: np.ndarray
    close: np.ndarray
    version: int
    source: str

    @property
    def nbytes(self) -> int:
        return self.ts.nbytes + self.close.nbytes

    def window(self, start_ms: int | None, end_ms: int | None) -> tuple[np.ndarray, np.ndarray]:
        i = 0 if start_ms is None else int(np.searchsorted(self.ts, start_ms, "left"))
        j = len(self.ts) if end_ms is None else int(np.searchsorted(self.ts, end_ms, "left"))
        return self.ts[i:j], self.close[i:j]


class SeriesSource:
    """Reads series through a bounded LRU of decoded arrays keyed by data version."""

    def __init__(self, store: PriceStore, fetch_addr: str, fetch_timeout_s: float, max_bytes: int):
        self.store = store
        self.fetch_addr = fetch_addr
        self.fetch_timeout_s = fetch_timeout_s
        self.max_bytes = max_bytes
        self._cache: OrderedDict[tuple[str, str], Series] = OrderedDict()
        self._channel: grpc.aio.Channel | None = None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Series whose history Fetch could not extend further back: asked once, not on every call.
        self._no_earlier: set[tuple[str, str]] = set()

    def _fetch_stub(self) -> fetch_pb2_grpc.FetchServiceStub:
        if self._channel is None:
            options = [("grpc.lb_policy_name", "round_robin")] if self.fetch_addr.startswith("dns:") else []
            self._channel = grpc.aio.insecure_channel(self.fetch_addr, options=options)
        return fetch_pb2_grpc.FetchServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def version(self, symbol: str, interval: str, start_ms: int | None = None) -> int:
        """Current data version, asking Fetch to fetch the series (or an earlier start) if missing."""
        info = await self.store.info(symbol, interval)
        wants_earlier = (info is not None and start_ms is not None and info.first_ms is not None
                         and start_ms < info.first_ms and (symbol, interval) not in self._no_earlier)
        if info is None or wants_earlier:
            await self._fetch_through(symbol, interval, start_ms, present=info is not None)
            info = await self.store.info(symbol, interval)
            if info is None:
                raise NotFound(f"no data for {symbol} at {interval}")
            if wants_earlier and info.first_ms is not None and start_ms < info.first_ms:
                self._no_earlier.add((symbol, interval))  # no provider has older data
        return info.version

    async def _fetch_through(self, symbol: str, interval: str, start_ms: int | None, present: bool) -> None:
        request = fetch_pb2.GetBarsRequest(symbol=symbol, interval=interval, limit=1)
        if start_ms is not None:
            request.start.CopyFrom(to_timestamp(start_ms))
        try:
            await self._fetch_stub().GetBars(request, timeout=self.fetch_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if present:
                self._no_earlier.add((symbol, interval))  # serve what we have
                return
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(exc.details()) from None
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise NotFound(f"{symbol}: {exc.details()}") from None
            raise Unavailable(f"Fetch service could not provide {symbol} {interval}: "
                              f"{exc.code().name} {exc.details()}") from None

    async def get(self, symbol: str, interval: str, start_ms: int | None = None) -> Series:
        version = await self.version(symbol, interval, start_ms)
        key = (symbol, interval)
        cached = self._cache.get(key)
        if cached is not None and cached.version == version:
            self._cache.move_to_end(key)
            return cached
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._cache.get(key)
            if cached is not None and cached.version >= version:
                return cached
            data = await self.store.read(symbol, interval, columns=("ts", "close"))
            if data is None:
                raise NotFound(f"no data for {symbol} at {interval}")
            series = Series(symbol, interval, data.columns["ts"], data.columns["close"], data.version, data.source)
            self._cache[key] = series
            self._cache.move_to_end(key)
            self._evict()
            return series

    def _evict(self) -> None:
        total = sum(s.nbytes for s in self._cache.values())
        while total > self.max_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            total -= dropped.nbytes
