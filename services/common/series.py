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
import json
import secrets
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import grpc
import numpy as np
from prometheus_client import Counter

from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc
from services.common.convert import to_timestamp
from services.common.errors import NotFound, ResourceExhausted, Unavailable
from services.common.events import last_id
from services.common.kept_states import MISSING, KeptStates
from services.common.store import UPDATES_LOG, PriceStore, SeriesInfo, info_from_meta, series_key
from services.common.tls import ClientTLS, aio_channel

# How long "Fetch has nothing older than the first stored bar" is believed before asking again:
# long after Fetch answered, short after it failed (a blip must not make a window short for long).
NO_EARLIER_S = 300.0
NO_EARLIER_AFTER_ERROR_S = 5.0
_READ_RETRIES = 5
# Deltas: at most this many log entries are scanned and bars re-read, else the series is read whole.
MAX_DELTA_EVENTS = 2000
MAX_DELTA_BARS = 8192
# The newest bars live in a small tail of their own; past FOLD_BARS the older part of it joins the
# shared head buffer (the newest KEEP_OPEN_BARS stay in the tail, where rewrites cost nothing).
FOLD_BARS = 4096
KEEP_OPEN_BARS = 64
_LINEAGE = 8

Stamp = tuple[str, int, int]  # (epoch, version, updated ms)

SERIES_READS = Counter("cryptolens_series_reads_total",
                       "Series read from Redis: whole or for a window (full), or only the bars that changed (delta)",
                       ["kind"])


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


class _Buffer:
    """Growable arrays shared by the versions of one series. Positions below ``used`` are written
    once and never changed, so every Series holding a view of them stays valid."""

    def __init__(self, ts: np.ndarray, close: np.ndarray, slack: int):
        n = len(ts)
        self.ts = np.empty(n + slack, dtype=np.int64)
        self.close = np.empty(n + slack, dtype=np.float64)
        self.ts[:n], self.close[:n] = ts, close
        self.used = n

    def extend(self, ts: np.ndarray, close: np.ndarray) -> bool:
        end = self.used + len(ts)
        if end > len(self.ts):
            return False
        self.ts[self.used:end], self.close[self.used:end] = ts, close
        self.used = end
        return True


@dataclass(frozen=True)
class Series:
    """Bars of one series as ``head`` (a view of a shared buffer) followed by a small ``tail``.

    ``lineage`` lists earlier versions this one was derived from as deltas, each with how many
    leading bars are identical to it, so analytics can reuse what they computed on those bars."""

    symbol: str
    interval: str
    head_ts: np.ndarray
    head_close: np.ndarray
    version: int
    source: str
    stamp: Stamp | None = None
    # The range of open times the arrays hold, [start_ms, end_ms); None is unbounded on that side.
    start_ms: int | None = None
    end_ms: int | None = None
    tail_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tail_close: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    origin: str = ""
    log_id: str | None = None  # the updates log's newest id, read before these bars were
    lineage: tuple[tuple[Stamp, int], ...] = ()
    buffer: _Buffer | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.head_ts) + len(self.tail_ts)

    @property
    def nbytes(self) -> int:
        return 16 * len(self)

    # Whole arrays: a copy when there is a tail (not kept, so the cache's size stays what it says).
    @property
    def ts(self) -> np.ndarray:
        return self.span(0, len(self))[0]

    @property
    def close(self) -> np.ndarray:
        return self.span(0, len(self))[1]

    def unchanged_since(self, stamp: Stamp) -> int:
        """How many leading bars are identical to the version with ``stamp`` (0 if not derived from it)."""
        if stamp == self.stamp:
            return len(self)
        return next((n for s, n in self.lineage if s == stamp), 0)

    def index(self, ms: int) -> int:
        """Position of the first bar with open time >= ms."""
        h = len(self.head_ts)
        if h and ms <= self.head_ts[-1]:
            return int(np.searchsorted(self.head_ts, ms, "left"))
        return h + int(np.searchsorted(self.tail_ts, ms, "left"))

    def span(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(ts, close) of positions [i, j): views when they lie in one part, else a copy."""
        h = len(self.head_ts)
        if j <= h:
            return self.head_ts[i:j], self.head_close[i:j]
        if i >= h:
            return self.tail_ts[i - h:j - h], self.tail_close[i - h:j - h]
        return (np.concatenate([self.head_ts[i:], self.tail_ts[:j - h]]),
                np.concatenate([self.head_close[i:], self.tail_close[:j - h]]))

    def bounds(self, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
        """Positions [i, j) of the bars in [start_ms, end_ms)."""
        return (0 if start_ms is None else self.index(start_ms),
                len(self) if end_ms is None else self.index(end_ms))

    def covers(self, start_ms: int | None, end_ms: int | None) -> bool:
        return ((self.start_ms is None or (start_ms is not None and start_ms >= self.start_ms))
                and (self.end_ms is None or (end_ms is not None and end_ms <= self.end_ms)))

    def window(self, start_ms: int | None, end_ms: int | None) -> tuple[np.ndarray, np.ndarray]:
        return self.span(*self.bounds(start_ms, end_ms))


@dataclass(frozen=True)
class _NoEarlier:
    """Fetch was asked for bars from ``asked_ms`` and the series still began at ``first_ms``."""

    epoch: str
    first_ms: int
    asked_ms: int
    until: float  # time.monotonic()


class SeriesSource:
    """Series through a bounded LRU of decoded arrays; reads only the asked window of a large series."""

    def __init__(self, store: PriceStore, fetch_addr: str, fetch_timeout_s: float, max_bytes: int,
                 tls: ClientTLS = ClientTLS()):
        self.store = store
        self.fetch_addr = fetch_addr
        self.tls = tls
        self._credentials = tls.credentials()  # files read (and checked) once, at start
        self.fetch_timeout_s = fetch_timeout_s
        self.max_bytes = max_bytes
        # A series up to this size is read whole (later windows of it are then memory hits).
        self.whole_read_bytes = max_bytes // 8
        self._cache: OrderedDict[tuple[str, str], Series] = OrderedDict()
        self._cached_bytes = 0
        self._channel: grpc.aio.Channel | None = None
        self._locks: weakref.WeakValueDictionary[tuple, asyncio.Lock] = weakref.WeakValueDictionary()
        self._no_earlier: dict[tuple[str, str], _NoEarlier] = {}
        self._kept = KeptStates(store.redis)

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
            self._channel = aio_channel(self.fetch_addr, self.tls, options, self._credentials)
        return fetch_pb2_grpc.FetchServiceStub(self._channel)

    async def close(self) -> None:
        await self._kept.close()
        if self._channel is not None:
            await self._channel.close()

    # --- state and stamps -------------------------------------------------------------------
    async def state(self, symbol: str, interval: str, fresh: bool = False, synced: bool = False
                    ) -> SeriesState | None:
        """The series' meta and epoch in one snapshot; None if the store does not have the series.
        Kept in memory between writes (services/common/kept_states.py) unless ``fresh``; ``synced``:
        a second series of the same call (``KeptStates.get``)."""
        key = (symbol, interval)
        if not fresh and (kept := await self._kept.get(key, synced)) is not MISSING:
            return kept
        mark = self._kept.mark(key)
        state = await self._read_state(symbol, interval)
        self._kept.put(key, state, mark)
        return state

    def forget_state(self, symbol: str, interval: str) -> None:
        """The series was written (an event from elsewhere says so): its next state is read from Redis."""
        self._kept.forget((symbol, interval))

    async def _read_state(self, symbol: str, interval: str) -> SeriesState | None:
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
                     state: SeriesState | None = None, synced: bool = False) -> SeriesState:
        """The series' state, asking Fetch first for a series the store lacks or for an earlier start."""
        state = state or await self.state(symbol, interval, synced=synced)
        if state is not None and not self._wants_earlier(state, start_ms):
            return state
        async with self._lock("fetch", symbol, interval):
            state = await self.state(symbol, interval, fresh=True)  # another request may have fetched it meanwhile
            if state is not None and not self._wants_earlier(state, start_ms):
                return state
            answered = await self._fetch_through(symbol, interval, start_ms, present=state is not None)
            state = await self.state(symbol, interval, fresh=True)
            if state is None:
                raise NotFound(f"no data for {symbol} at {interval}")
            if self._wants_earlier(state, start_ms):
                self._no_earlier[(symbol, interval)] = _NoEarlier(
                    state.epoch, state.info.first_ms, start_ms,
                    time.monotonic() + (NO_EARLIER_S if answered else NO_EARLIER_AFTER_ERROR_S))
            return state

    @staticmethod
    def reaches_back(state: SeriesState, start_ms: int | None) -> bool:
        """The stored series holds everything from ``start_ms`` on: Fetch has nothing earlier to give."""
        first = state.info.first_ms
        return start_ms is None or first is None or start_ms >= first

    def _wants_earlier(self, state: SeriesState, start_ms: int | None) -> bool:
        if self.reaches_back(state, start_ms):
            return False
        first = state.info.first_ms
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
            cached = self._cache.get(key)
            series = None
            if cached is not None and cached.version < state.info.version:
                series = await self._delta(cached, state)
                if series is not None and not series.covers(start_ms, end_ms):
                    series = None
            if series is None:
                series = await self._read(symbol, interval, start_ms, end_ms, state)
            SERIES_READS.labels("full" if series.lineage == () else "delta").inc()
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
            log_id = await last_id(self.store.redis, UPDATES_LOG)  # before the bars: see _delta
            data = await self.store.read(symbol, interval, lo, hi, columns=("ts", "close"))
            if data is None:
                raise NotFound(f"no data for {symbol} at {interval}")
            if data.version == state.info.version:
                return Series(symbol, interval, data.columns["ts"], data.columns["close"], data.version,
                              data.source, state.stamp, lo, hi, origin=state.info.origin, log_id=log_id)
            state = await self.state(symbol, interval, fresh=True)  # a write landed in between: read that one
            if state is None:
                raise NotFound(f"no data for {symbol} at {interval}")
        raise Unavailable(f"{symbol} {interval} kept changing while being read; retry")

    async def _delta(self, cached: Series, state: SeriesState) -> Series | None:
        """``cached`` brought to ``state`` by re-reading only the bars the writes since touched, or
        None when that cannot be proven. Proof: the log holds one event for every version after
        the cached one, none replaced the series, and each says the oldest bar it wrote. Bars
        before the oldest of those are unchanged (a write only merges bars of its own range).
        The log id was read before the cached bars, so no event of a later version precedes it;
        a series written again from scratch shows as an event whose version is not after ours."""
        if (cached.log_id is None or cached.end_ms is not None or cached.stamp is None
                or cached.stamp[0] != state.epoch or cached.origin != state.info.origin):
            return None
        symbol, interval = cached.symbol, cached.interval
        # The cached id itself must still be there: else the log was trimmed, deleted or restored
        # from a snapshot since, and the events after it may be incomplete.
        entries = await self.store.redis.xrange(UPDATES_LOG, min=cached.log_id, count=MAX_DELTA_EVENTS + 1)
        if not entries or entries[0][0].decode() != cached.log_id:
            return None
        entries = entries[1:]
        tag = json.dumps({"symbol": symbol, "interval": interval})[1:-1].encode()  # cheap filter before parsing
        versions, oldest = set(), None
        for _, fields in entries:
            raw = fields.get(b"event", b"")
            if tag not in raw:
                continue
            event = json.loads(raw)
            if event["symbol"] != symbol or event["interval"] != interval:
                continue
            # A version not after the cached one: the series was written again from scratch (or a
            # write's event came late); either way nothing can be proven about the older bars.
            if event["version"] <= cached.version or event.get("replaced") or event.get("origin") != cached.origin:
                return None
            versions.add(event["version"])
            oldest = event["first"] if oldest is None else min(oldest, event["first"])
        if oldest is None or versions != set(range(cached.version + 1, state.info.version + 1)):
            return None
        if cached.start_ms is not None:
            oldest = max(oldest, cached.start_ms)
        keep = cached.index(oldest)
        if len(cached) - keep > MAX_DELTA_BARS:
            return None
        data = await self.store.read(symbol, interval, oldest, None, columns=("ts", "close"))
        if data is None or data.version != state.info.version:
            return None  # another write landed meanwhile: the full read sorts it out
        new_ts, new_close = data.columns["ts"], data.columns["close"]
        if len(new_ts) + keep > len(cached) + MAX_DELTA_BARS:
            return None
        h = len(cached.head_ts)
        if keep >= h:
            tail_ts = np.concatenate([cached.tail_ts[:keep - h], new_ts])
            tail_close = np.concatenate([cached.tail_close[:keep - h], new_close])
            head_ts, head_close = cached.head_ts, cached.head_close
        else:
            tail_ts, tail_close = new_ts, new_close
            head_ts, head_close = cached.head_ts[:keep], cached.head_close[:keep]
        buffer = cached.buffer
        if len(tail_ts) > FOLD_BARS:
            head_ts, head_close, buffer = _fold(head_ts, head_close, buffer, tail_ts[:-KEEP_OPEN_BARS],
                                                tail_close[:-KEEP_OPEN_BARS])
            tail_ts, tail_close = tail_ts[-KEEP_OPEN_BARS:].copy(), tail_close[-KEEP_OPEN_BARS:].copy()
        lineage = ((cached.stamp, keep),) + tuple((s, min(n, keep)) for s, n in cached.lineage[:_LINEAGE - 1])
        return Series(symbol, interval, head_ts, head_close, data.version, data.source, state.stamp,
                      cached.start_ms, None, tail_ts, tail_close, cached.origin,
                      entries[-1][0].decode(), lineage, buffer)

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


def _fold(head_ts, head_close, buffer: _Buffer | None, ts, close):
    """The head with ``ts``/``close`` appended: in place when the head ends where the buffer's
    written part does (nobody else extended it), else in a new buffer with room to grow."""
    h = len(head_ts)
    shared = buffer is not None and buffer.used == h and head_ts.base is buffer.ts
    if not (shared and buffer.extend(ts, close)):
        buffer = _Buffer(head_ts, head_close, slack=max(len(ts), 16 * FOLD_BARS, h // 8))
        buffer.extend(ts, close)
    return buffer.ts[:buffer.used], buffer.close[:buffer.used], buffer
