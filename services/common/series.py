"""The read side shared by Core and Alerts: decoded (ts, close) arrays per series, cached in memory
under an exact stamp, with fetch-through to the Fetch service for data the store does not have yet.

A stamp is (epoch, version, updated) of a series, read in one MULTI with nothing else. The epoch is
a random token kept in Redis beside the series (same hash tag) and created on first read; a Redis
that restarted empty, or a series deleted and rewritten, has no epoch or another one and another
``updated`` time, so versions that start again at 1 never match anything cached before. Cached
arrays are used only when the stamp matches exactly (see docs/caching.md).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import grpc
import numpy as np

from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc
from services.common.convert import to_timestamp
from services.common.errors import NotFound, ResourceExhausted, Unavailable
from services.common.store import PriceStore, SeriesInfo, info_from_meta, series_key

# How long "Fetch has nothing older than the first stored bar" is believed before asking again:
# long after Fetch answered, short after it failed (a blip must not make a window short for long).
NO_EARLIER_S = 300.0
NO_EARLIER_AFTER_ERROR_S = 5.0
_READ_RETRIES = 5

Stamp = tuple[str, int, int]  # (epoch, version, updated ms)


def epoch_key(symbol: str, interval: str) -> str:
    return series_key(symbol, interval, "epoch")


@dataclass(frozen=True)
class SeriesState:
    """What the store says about a series right now, and the stamp that identifies its content."""

    info: SeriesInfo
    epoch: str
    updated_ms: int

    @property
    def stamp(self) -> Stamp:
        return (self.epoch, self.info.version, self.updated_ms)


@dataclass(frozen=True)
class Series:
    symbol: str
    interval: str
    ts: np.ndarray
    close: np.ndarray
    version: int
    source: str
    stamp: Stamp | None = None
    # The range of open times the arrays hold, [start_ms, end_ms); None is unbounded on that side.
    start_ms: int | None = None
    end_ms: int | None = None

    @property
    def nbytes(self) -> int:
        return self.ts.nbytes + self.close.nbytes

    def covers(self, start_ms: int | None, end_ms: int | None) -> bool:
        return ((self.start_ms is None or (start_ms is not None and start_ms >= self.start_ms))
                and (self.end_ms is None or (end_ms is not None and end_ms <= self.end_ms)))

    def window(self, start_ms: int | None, end_ms: int | None) -> tuple[np.ndarray, np.ndarray]:
        i = 0 if start_ms is None else int(np.searchsorted(self.ts, start_ms, "left"))
        j = len(self.ts) if end_ms is None else int(np.searchsorted(self.ts, end_ms, "left"))
        return self.ts[i:j], self.close[i:j]


@dataclass(frozen=True)
class _NoEarlier:
    """Fetch was asked for bars from ``asked_ms`` and the series still began at ``first_ms``."""

    epoch: str
    first_ms: int
    asked_ms: int
    until: float  # time.monotonic()


class SeriesSource:
    """Series through a bounded LRU of decoded arrays; reads only the asked window of a large series."""

    def __init__(self, store: PriceStore, fetch_addr: str, fetch_timeout_s: float, max_bytes: int):
        self.store = store
        self.fetch_addr = fetch_addr
        self.fetch_timeout_s = fetch_timeout_s
        self.max_bytes = max_bytes
        # A series up to this size is read whole (later windows of it are then memory hits).
        self.whole_read_bytes = max_bytes // 8
        self._cache: OrderedDict[tuple[str, str], Series] = OrderedDict()
        self._cached_bytes = 0
        self._channel: grpc.aio.Channel | None = None
        self._locks: weakref.WeakValueDictionary[tuple, asyncio.Lock] = weakref.WeakValueDictionary()
        self._no_earlier: dict[tuple[str, str], _NoEarlier] = {}

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

    def _lock(self, *key) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _fetch_stub(self) -> fetch_pb2_grpc.FetchServiceStub:
        if self._channel is None:
            # round_robin over every address the target names (dns:/// on a headless Service, ipv4:a,b)
            options = [("grpc.lb_policy_name", "round_robin")]
            self._channel = grpc.aio.insecure_channel(self.fetch_addr, options=options)
        return fetch_pb2_grpc.FetchServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    # --- state and stamps -------------------------------------------------------------------
    async def state(self, symbol: str, interval: str) -> SeriesState | None:
        """The series' meta and epoch in one snapshot; None if the store does not have the series."""
        meta_key, key = series_key(symbol, interval, "meta"), epoch_key(symbol, interval)
        for _ in range(_READ_RETRIES):
            async with self.store.redis.pipeline(transaction=True) as tx:
                tx.get(key)
                tx.hgetall(meta_key)
                epoch, meta = await tx.execute()
            if not meta:
                return None
            if epoch is not None:
                return SeriesState(info_from_meta(symbol, interval, meta), epoch.decode(), int(meta.get(b"updated", 0)))
            # First reader since this Redis (or this series) began: mint the epoch, then read again.
            await self.store.redis.set(key, secrets.token_hex(8), nx=True)
        raise Unavailable(f"the epoch of {symbol} {interval} keeps disappearing; is Redis restarting?")

    async def ensure(self, symbol: str, interval: str, start_ms: int | None = None,
                     state: SeriesState | None = None) -> SeriesState:
        """The series' state, asking Fetch first for a series the store lacks or for an earlier start."""
        state = state or await self.state(symbol, interval)
        if state is not None and not self._wants_earlier(state, start_ms):
            return state
        async with self._lock("fetch", symbol, interval):
            state = await self.state(symbol, interval)  # another request may have fetched it meanwhile
            if state is not None and not self._wants_earlier(state, start_ms):
                return state
            answered = await self._fetch_through(symbol, interval, start_ms, present=state is not None)
            state = await self.state(symbol, interval)
            if state is None:
                raise NotFound(f"no data for {symbol} at {interval}")
            if self._wants_earlier(state, start_ms):
                self._no_earlier[(symbol, interval)] = _NoEarlier(
                    state.epoch, state.info.first_ms, start_ms,
                    time.monotonic() + (NO_EARLIER_S if answered else NO_EARLIER_AFTER_ERROR_S))
            return state

    def _wants_earlier(self, state: SeriesState, start_ms: int | None) -> bool:
        first = state.info.first_ms
        if start_ms is None or first is None or start_ms >= first:
            return False
        known = self._no_earlier.get((state.info.symbol, state.info.interval))
        return not (known is not None and known.epoch == state.epoch and known.first_ms == first
                    and start_ms >= known.asked_ms and time.monotonic() < known.until)

    async def version(self, symbol: str, interval: str, start_ms: int | None = None) -> int:
        """Current data version, asking Fetch to fetch the series (or an earlier start) if missing."""
        return (await self.ensure(symbol, interval, start_ms)).info.version

    async def _fetch_through(self, symbol: str, interval: str, start_ms: int | None, present: bool) -> bool:
        """Ask Fetch for the series from ``start_ms``; False when it failed but we have data to serve."""
        request = fetch_pb2.GetBarsRequest(symbol=symbol, interval=interval, limit=1)
        if start_ms is not None:
            request.start.CopyFrom(to_timestamp(start_ms))
        try:
            await self._fetch_stub().GetBars(request, timeout=self.fetch_timeout_s)
            return True
        except grpc.aio.AioRpcError as exc:
            if present:
                return False  # serve what we have; the answer's coverage says what is missing
            details = (exc.details() or "")[:200]
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise NotFound(f"no data for {symbol} at {interval}: {details}") from None
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise ResourceExhausted(f"Fetch refused {symbol} {interval}: {details}") from None
            raise Unavailable(f"Fetch service could not provide {symbol} {interval}: "
                              f"{exc.code().name} {details}") from None

    # --- arrays ----------------------------------------------------------------------------
    async def get(self, symbol: str, interval: str, start_ms: int | None = None, *, end_ms: int | None = None,
                  state: SeriesState | None = None) -> Series:
        """Bars of [start_ms, end_ms) at least (the whole series when it is small), fetching through
        when needed. ``state`` skips the fetch-through step for a caller that already did it."""
        if state is None:
            state = await self.ensure(symbol, interval, start_ms)
        key = (symbol, interval)
        hit = self._hit(key, state, start_ms, end_ms)
        if hit is not None:
            return hit
        async with self._lock("read", symbol, interval):
            hit = self._hit(key, state, start_ms, end_ms)
            if hit is not None:
                return hit
            series = await self._read(symbol, interval, start_ms, end_ms, state)
            self._put(key, series)
            return series

    def _hit(self, key, state: SeriesState, start_ms, end_ms) -> Series | None:
        cached = self._cache.get(key)
        if cached is None or cached.stamp != state.stamp or not cached.covers(start_ms, end_ms):
            return None
        self._cache.move_to_end(key)
        return cached

    async def _read(self, symbol, interval, start_ms, end_ms, state: SeriesState) -> Series:
        for _ in range(_READ_RETRIES):
            whole = state.info.count * 16 <= self.whole_read_bytes
            lo, hi = (None, None) if whole else (start_ms, end_ms)
            data = await self.store.read(symbol, interval, lo, hi, columns=("ts", "close"))
            if data is None:
                raise NotFound(f"no data for {symbol} at {interval}")
            if data.version == state.info.version:
                return Series(symbol, interval, data.columns["ts"], data.columns["close"], data.version,
                              data.source, state.stamp, lo, hi)
            state = await self.state(symbol, interval)  # a write landed in between: read that one
            if state is None:
                raise NotFound(f"no data for {symbol} at {interval}")
        raise Unavailable(f"{symbol} {interval} kept changing while being read; retry")

    def _put(self, key, series: Series) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached_bytes -= old.nbytes
        if series.nbytes > self.max_bytes:
            return  # larger than the whole budget: used for this answer, not kept
        self._cache[key] = series
        self._cached_bytes += series.nbytes
        while self._cached_bytes > self.max_bytes:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= dropped.nbytes
