"""The Redis price store: columnar binary chunks, a data version per series, update events.

Key schema (version ``v1``; see docs/storage.md). ``{SYM:INT}`` is a hash tag, so one series
lives in one cluster slot and its transaction stays single-slot:

    cl:v1:series                      SET   "BTC-USD|1h" for every stored series
    cl:v1:s:{BTC-USD:1h}:meta         HASH  version, count, first, last, source, updated
    cl:v1:s:{BTC-USD:1h}:idx          ZSET  chunk ids (score = chunk id)
    cl:v1:s:{BTC-USD:1h}:c:<chunk>    HASH  one field per column: raw little-endian arrays
    cl:v1:updates                     pub/sub channel, JSON {"symbol","interval","version",...}

A chunk holds the bars whose open time falls in [chunk * span, (chunk + 1) * span) with
span = CHUNK_BARS bars of the interval, so a year of 1-minute bars is ~64 chunks and all daily
history fits in one. Columns are separate fields so Core reads only ``ts`` and ``close``.
Every write is one MULTI/EXEC guarded by WATCH on the meta key: a page is stored whole or
not at all, and the version changes on every write.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from services.common.bars import BAR_DTYPE, COLUMNS, FLAG_PARTIAL, empty_bars
from services.common.intervals import interval_ms

SCHEMA = "cl:v1"
SERIES_SET = f"{SCHEMA}:series"
UPDATES_CHANNEL = f"{SCHEMA}:updates"
CHUNK_BARS = 8192
_WRITE_RETRIES = 20


def _series_key(symbol: str, interval: str, suffix: str) -> str:
    return f"{SCHEMA}:s:{{{symbol}:{interval}}}:{suffix}"


@dataclass(frozen=True)
class SeriesInfo:
    symbol: str
    interval: str
    count: int
    first_ms: int | None
    last_ms: int | None
    version: int
    source: str


@dataclass(frozen=True)
class WriteResult:
    version: int
    written: int  # bars in the page that were stored (new or changed)
    first_ms: int | None
    last_ms: int | None


@dataclass(frozen=True)
class SeriesData:
    """Columns read for a window, plus the version and source of the series they came from."""

    columns: dict[str, np.ndarray]
    version: int
    source: str

    def __len__(self) -> int:
        return len(self.columns["ts"])


def _decode_chunk(fields: list[bytes | None], columns: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    if fields[0] is None:
        return None
    return {c: np.frombuffer(raw, dtype=BAR_DTYPE[c]) for c, raw in zip(columns, fields)}


def _merge(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Union by timestamp. The newer copy wins, except a partial bar never replaces a complete one."""
    both = np.concatenate([old, new])
    order = np.argsort(both["ts"], kind="stable")  # old copies stay before new ones
    both = both[order]
    is_last = np.ones(len(both), dtype=bool)
    is_last[:-1] = both["ts"][1:] != both["ts"][:-1]
    merged = both[is_last]
    # A partial newcomer over a complete stored bar: keep the stored one.
    dup_new = np.nonzero(~is_last)[0] + 1  # positions of the winning copies that had a predecessor
    keep_old = dup_new[(both["flags"][dup_new] & FLAG_PARTIAL).astype(bool)
                       & ~(both["flags"][dup_new - 1] & FLAG_PARTIAL).astype(bool)]
    if len(keep_old):
        merged_pos = np.searchsorted(merged["ts"], both["ts"][keep_old])
        merged[merged_pos] = both[keep_old - 1]
    return merged


class PriceStore:
    def __init__(self, redis: aioredis.Redis):
        self.redis = redis

    async def write(self, symbol: str, interval: str, bars: np.ndarray, source: str) -> WriteResult:
        """Merge normalised bars (sorted, unique ts) into the series atomically."""
        meta_key = _series_key(symbol, interval, "meta")
        if len(bars) == 0:
            info = await self.info(symbol, interval)
            return WriteResult(info.version if info else 0, 0, None, None)
        span = interval_ms(interval) * CHUNK_BARS
        chunk_ids = bars["ts"] // span
        bounds = np.flatnonzero(np.diff(chunk_ids)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(bars)]])
        ids = [int(chunk_ids[s]) for s in starts]
        keys = [_series_key(symbol, interval, f"c:{cid}") for cid in ids]

        for _ in range(_WRITE_RETRIES):
            async with self.redis.pipeline(transaction=True) as tx:
                await tx.watch(meta_key)
                async with self.redis.pipeline(transaction=False) as reads:
                    for key in keys:
                        reads.hmget(key, COLUMNS)
                    reads.hmget(meta_key, ["count", "first", "last"])
                    found = await reads.execute()
                old_count, old_first, old_last = (int(v) if v is not None else None for v in found[-1])
                count = old_count or 0
                tx.multi()
                for key, s, e, fields in zip(keys, starts, ends, found[:-1]):
                    page = bars[s:e]
                    old = _decode_chunk(fields, COLUMNS)
                    if old is not None:
                        old_bars = np.zeros(len(old["ts"]), dtype=BAR_DTYPE)
                        for c in COLUMNS:
                            old_bars[c] = old[c]
                        page = _merge(old_bars, page)
                        count -= len(old_bars)
                    count += len(page)
                    tx.hset(key, mapping={c: np.ascontiguousarray(page[c]).tobytes() for c in COLUMNS})
                tx.zadd(_series_key(symbol, interval, "idx"), {str(cid): cid for cid in ids})
                first = int(bars["ts"][0]) if old_first is None else min(old_first, int(bars["ts"][0]))
                last = int(bars["ts"][-1]) if old_last is None else max(old_last, int(bars["ts"][-1]))
                tx.hset(meta_key, mapping={"count": int(count), "first": first, "last": last, "source": source,
                                           "updated": int(time.time() * 1000)})
                tx.hincrby(meta_key, "version", 1)
                tx.sadd(SERIES_SET, f"{symbol}|{interval}")
                try:
                    results = await tx.execute()
                except WatchError:
                    continue  # another writer got in between: re-read and merge again
            version = int(results[-2])
            await self.redis.publish(UPDATES_CHANNEL, json.dumps({
                "symbol": symbol, "interval": interval, "version": version, "source": source,
                "first": int(bars["ts"][0]), "last": int(bars["ts"][-1]), "bars": len(bars)}))
            return WriteResult(version, len(bars), int(bars["ts"][0]), int(bars["ts"][-1]))
        raise RuntimeError(f"write to {symbol} {interval} kept conflicting; gave up after {_WRITE_RETRIES} tries")

    async def read(
        self,
        symbol: str,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        columns: tuple[str, ...] = ("ts", "close"),
    ) -> SeriesData | None:
        """Bars with open time in [start_ms, end_ms), only the columns asked for. None if unknown."""
        if "ts" not in columns:
            columns = ("ts", *columns)
        meta_key = _series_key(symbol, interval, "meta")
        span = interval_ms(interval) * CHUNK_BARS
        lo = "-inf" if start_ms is None else int(start_ms) // span
        hi = "+inf" if end_ms is None else (int(end_ms) - 1) // span
        for _ in range(_WRITE_RETRIES):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hget(meta_key, "version")
                pipe.zrangebyscore(_series_key(symbol, interval, "idx"), lo, hi)
                version, chunk_ids = await pipe.execute()
            if version is None:
                return None
            async with self.redis.pipeline(transaction=True) as tx:  # MULTI: one consistent snapshot
                tx.hmget(meta_key, ["version", "source"])
                for cid in chunk_ids:
                    tx.hmget(_series_key(symbol, interval, f"c:{int(cid)}"), columns)
                found = await tx.execute()
            snap_version, source = found[0]
            if snap_version != version:
                continue  # a write landed between the two round trips; chunk list may be stale
            return SeriesData(self._assemble(found[1:], columns, start_ms, end_ms), int(version),
                              (source or b"").decode())
        raise RuntimeError(f"read of {symbol} {interval} kept racing with writes")

    @staticmethod
    def _assemble(chunks, columns, start_ms, end_ms) -> dict[str, np.ndarray]:
        decoded = [d for d in (_decode_chunk(f, columns) for f in chunks) if d is not None]
        if not decoded:
            return {c: np.zeros(0, dtype=BAR_DTYPE[c]) for c in columns}
        if len(decoded) == 1:
            out = dict(decoded[0])
        else:
            out = {c: np.concatenate([d[c] for d in decoded]) for c in columns}
        ts = out["ts"]
        i = 0 if start_ms is None else int(np.searchsorted(ts, start_ms, "left"))
        j = len(ts) if end_ms is None else int(np.searchsorted(ts, end_ms, "left"))
        if i or j != len(ts):
            out = {c: v[i:j] for c, v in out.items()}
        return out

    async def read_bars(self, symbol: str, interval: str, start_ms=None, end_ms=None) -> np.ndarray:
        """Full bar records (all columns) for a window, as a BAR_DTYPE array."""
        data = await self.read(symbol, interval, start_ms, end_ms, COLUMNS)
        if data is None:
            return empty_bars()
        out = np.zeros(len(data), dtype=BAR_DTYPE)
        for c in COLUMNS:
            out[c] = data.columns[c]
        return out

    async def info(self, symbol: str, interval: str) -> SeriesInfo | None:
        meta = await self.redis.hgetall(_series_key(symbol, interval, "meta"))
        if not meta:
            return None
        return _info(symbol, interval, meta)

    async def version(self, symbol: str, interval: str) -> int:
        value = await self.redis.hget(_series_key(symbol, interval, "meta"), "version")
        return int(value) if value is not None else 0

    async def list_series(self) -> list[SeriesInfo]:
        names = sorted(m.decode() for m in await self.redis.smembers(SERIES_SET))
        pairs = [n.split("|", 1) for n in names]
        async with self.redis.pipeline(transaction=False) as pipe:
            for symbol, interval in pairs:
                pipe.hgetall(_series_key(symbol, interval, "meta"))
            metas = await pipe.execute()
        return [_info(s, i, m) for (s, i), m in zip(pairs, metas) if m]

    async def symbols(self) -> set[str]:
        return {m.decode().split("|", 1)[0] for m in await self.redis.smembers(SERIES_SET)}


def _info(symbol: str, interval: str, meta: dict[bytes, bytes]) -> SeriesInfo:
    def num(key: bytes) -> int | None:
        return int(meta[key]) if key in meta else None

    return SeriesInfo(symbol, interval, num(b"count") or 0, num(b"first"), num(b"last"), num(b"version") or 0,
                      meta.get(b"source", b"").decode())
