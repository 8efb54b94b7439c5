"""The Redis price store: columnar binary chunks, a data version per series, update events.

Key schema (version ``v1``; see docs/storage.md). ``{SYM:INT}`` is a hash tag, so one series
lives in one cluster slot and its transaction stays single-slot:

    cl:v1:series                      SET   "BTC-USD|1h" for every stored series
    cl:v1:s:{BTC-USD:1h}:meta         HASH  version, count, first, last, source, origin, provenance, updated
    cl:v1:s:{BTC-USD:1h}:idx          ZSET  chunk ids (score = chunk id)
    cl:v1:s:{BTC-USD:1h}:c:<chunk>    HASH  one field per column: raw little-endian arrays
    cl:v1:updates                     pub/sub channel, JSON {"symbol","interval","version",...}
    cl:v1:updates:log                 STREAM the same events, trimmed (~UPDATES_LOG_LEN): resumable
    cl:v1:used                        ZSET  "BTC-USD|1d" → last time someone asked for it (bounded)
    cl:v1:store                       HASH  began (ms), lost: when the contents began, and whether
                                            earlier ones vanished (a Redis restarted empty)

A chunk holds the bars whose open time falls in [chunk * span, (chunk + 1) * span) with
span = CHUNK_BARS bars of the interval, so a year of 1-minute bars is ~64 chunks and all daily
history fits in one. Columns are separate fields so Core reads only ``ts`` and ``close``.
Every write is one MULTI/EXEC guarded by WATCH on the meta key: a page is stored whole or
not at all, and the version changes on every write. That transaction touches only the series' own
keys (one hash tag, so one cluster slot); the keys shared by all series (``series``, ``used``,
``updates:log``) are written in their own commands around it, never inside it. A series has one origin (``live``,
``simulated``, ``csv:<hash>``): a write of another origin replaces the series in the same
transaction instead of merging into it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from services.common.bars import BAR_DTYPE, COLUMNS, FLAG_PARTIAL, empty_bars
from services.common.intervals import interval_ms

SCHEMA = "cl:v1"
SERIES_SET = f"{SCHEMA}:series"
CONTENTS_KEY = f"{SCHEMA}:store"
UPDATES_CHANNEL = f"{SCHEMA}:updates"
UPDATES_LOG = f"{SCHEMA}:updates:log"
UPDATES_LOG_LEN = 10_000  # events kept for resuming watchers (approximate trim)
USED_SET = f"{SCHEMA}:used"
MAX_USED_SERIES = 64
MAX_PROVENANCE_RANGES = 200
CHUNK_BARS = 8192
_WRITE_RETRIES = 20
_PAGE_CHUNKS = 4  # chunks read per round trip by read_page


def series_key(symbol: str, interval: str, suffix: str) -> str:
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
    origin: str = ""
    provenance: list[tuple[int, int, str]] = field(default_factory=list)  # (first_ms, last_ms, provider)


@dataclass(frozen=True)
class WriteResult:
    version: int
    written: int  # bars in the page that were stored (new or changed)
    first_ms: int | None
    last_ms: int | None
    replaced: bool = False  # the write replaced a series of another origin


def merge_provenance(ranges: list[tuple[int, int, str]], first: int, last: int, source: str,
                     step: int) -> list[tuple[int, int, str]]:
    """Ranges after a write of [first, last] by ``source``: the write wins where it overlaps."""
    out: list[tuple[int, int, str]] = []
    for a, b, p in ranges:
        if b < first or a > last:
            out.append((a, b, p))
            continue
        if a < first:
            out.append((a, first - step, p))
        if b > last:
            out.append((last + step, b, p))
    out.append((first, last, source))
    out.sort()
    merged: list[tuple[int, int, str]] = []
    for a, b, p in out:
        if merged and merged[-1][2] == p:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]), p)
        else:
            merged.append((a, b, p))
    while len(merged) > MAX_PROVENANCE_RANGES:  # bounded: the oldest runs fold into one
        (a, _, p1), (_, b, p2) = merged[0], merged[1]
        merged[:2] = [(a, b, p1 if p1 == p2 else "mixed")]
    return merged


@dataclass(frozen=True)
class Contents:
    """The store's contents as a whole: when they began, and whether earlier ones were lost."""

    began_ms: int
    lost: bool


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

    async def write(self, symbol: str, interval: str, bars: np.ndarray, source: str,
                    origin: str | None = None) -> WriteResult:
        """Store normalised bars (sorted, unique ts) atomically.

        Same origin (or ``origin`` None): merged into the series. Another origin than the stored
        series': the series is replaced by these bars in the same transaction, never mixed.
        """
        meta_key = series_key(symbol, interval, "meta")
        idx_key = series_key(symbol, interval, "idx")
        if len(bars) == 0:
            info = await self.info(symbol, interval)
            return WriteResult(info.version if info else 0, 0, None, None)
        step = interval_ms(interval)
        span = step * CHUNK_BARS
        chunk_ids = bars["ts"] // span
        bounds = np.flatnonzero(np.diff(chunk_ids)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(bars)]])
        ids = [int(chunk_ids[s]) for s in starts]
        keys = [series_key(symbol, interval, f"c:{cid}") for cid in ids]
        first_new, last_new = int(bars["ts"][0]), int(bars["ts"][-1])

        for _ in range(_WRITE_RETRIES):
            async with self.redis.pipeline(transaction=True) as tx:
                await tx.watch(meta_key)
                async with self.redis.pipeline(transaction=False) as reads:
                    reads.hmget(meta_key, ["count", "first", "last", "origin", "provenance", "version"])
                    reads.zrange(idx_key, 0, -1)
                    for key in keys:
                        reads.hmget(key, COLUMNS)
                    found = await reads.execute()
                meta, old_ids, chunks = found[0], found[1], found[2:]
                stored_origin = (meta[3] or b"").decode()
                exists = meta[5] is not None
                replace = exists and origin is not None and stored_origin != origin
                effective_origin = origin if origin is not None else (stored_origin or source)
                if not exists:  # listed before it exists (another cluster slot, so not in the transaction):
                    # list_series skips a name without meta, and a writer dying in between leaves none unlisted
                    await self.redis.sadd(SERIES_SET, f"{symbol}|{interval}")
                tx.multi()
                if replace:
                    tx.delete(idx_key, *(series_key(symbol, interval, f"c:{int(c)}") for c in old_ids))
                    count, first, last, ranges = 0, first_new, last_new, []
                else:
                    count = int(meta[0] or 0)
                    first = first_new if meta[1] is None else min(int(meta[1]), first_new)
                    last = last_new if meta[2] is None else max(int(meta[2]), last_new)
                    ranges = [tuple(r) for r in json.loads(meta[4])] if meta[4] else []
                for key, s, e, fields in zip(keys, starts, ends, chunks):
                    page = bars[s:e]
                    old = None if replace else _decode_chunk(fields, COLUMNS)
                    if old is not None:
                        old_bars = np.zeros(len(old["ts"]), dtype=BAR_DTYPE)
                        for c in COLUMNS:
                            old_bars[c] = old[c]
                        page = _merge(old_bars, page)
                        count -= len(old_bars)
                    count += len(page)
                    tx.hset(key, mapping={c: np.ascontiguousarray(page[c]).tobytes() for c in COLUMNS})
                tx.zadd(idx_key, {str(cid): cid for cid in ids})
                ranges = merge_provenance(ranges, first_new, last_new, source, step)
                tx.hset(meta_key, mapping={"count": int(count), "first": first, "last": last, "source": source,
                                           "origin": effective_origin, "provenance": json.dumps(ranges),
                                           "updated": int(time.time() * 1000)})
                tx.hincrby(meta_key, "version", 1)
                try:
                    results = await tx.execute()
                except WatchError:
                    continue  # another writer got in between: re-read and merge again
            version = int(results[-1])
            await self._announce({"symbol": symbol, "interval": interval, "version": version, "source": source,
                                  "first": first_new, "last": last_new, "bars": len(bars),
                                  "origin": effective_origin, "replaced": replace})
            return WriteResult(version, len(bars), first_new, last_new, replace)
        raise RuntimeError(f"write to {symbol} {interval} kept conflicting; gave up after {_WRITE_RETRIES} tries")

    async def _announce(self, event: dict) -> None:
        """The update event, on pub/sub (live listeners) and in the trimmed stream (resumable).

        Sent after the write's EXEC: the stream is one key for all series, so it cannot share the
        series' cluster slot. A process dying between EXEC and this call loses the event, not the bars.
        Two commands, not a pipeline: a Redis Cluster client refuses PUBLISH inside one. Published
        first: whoever learns of the write from the stream has then been sent the pub/sub event
        already, which the states kept in memory rely on (services/common/kept_states.py).
        """
        body = json.dumps(event)
        await self.redis.publish(UPDATES_CHANNEL, body)
        await self.redis.xadd(UPDATES_LOG, {"event": body}, maxlen=UPDATES_LOG_LEN, approximate=True)

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
        meta_key = series_key(symbol, interval, "meta")
        for _ in range(_WRITE_RETRIES):
            version, chunk_ids = await self._chunk_ids(symbol, interval, start_ms, end_ms)
            if version is None:
                return None
            async with self.redis.pipeline(transaction=True) as tx:  # MULTI: one consistent snapshot
                tx.hmget(meta_key, ["version", "source"])
                for cid in chunk_ids:
                    tx.hmget(series_key(symbol, interval, f"c:{int(cid)}"), columns)
                found = await tx.execute()
            snap_version, source = found[0]
            if snap_version != version:
                continue  # a write landed between the two round trips; chunk list may be stale
            return SeriesData(self._assemble(found[1:], columns, start_ms, end_ms), int(version),
                              (source or b"").decode())
        raise RuntimeError(f"read of {symbol} {interval} kept racing with writes")

    async def _chunk_ids(self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None):
        """(version, ids of the chunks that may hold bars of [start_ms, end_ms)); version None if unknown."""
        span = interval_ms(interval) * CHUNK_BARS
        lo = "-inf" if start_ms is None else int(start_ms) // span
        hi = "+inf" if end_ms is None else (int(end_ms) - 1) // span
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(series_key(symbol, interval, "meta"), "version")
            pipe.zrangebyscore(series_key(symbol, interval, "idx"), lo, hi)
            return tuple(await pipe.execute())

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

    async def read_page(self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None,
                        max_bars: int, newest: bool = False,
                        columns: tuple[str, ...] = COLUMNS) -> tuple[np.ndarray, bool]:
        """At most ``max_bars`` bars of [start_ms, end_ms): the oldest ones, or the newest with
        ``newest``. Reads a few chunks per round trip and stops once it has enough, so the cost
        is bounded by the page, not the window. Returns (bars, more bars in the window)."""
        if "ts" not in columns:
            columns = ("ts", *columns)
        meta_key = series_key(symbol, interval, "meta")
        for _ in range(_WRITE_RETRIES):
            version, chunk_ids = await self._chunk_ids(symbol, interval, start_ms, end_ms)
            if version is None:
                return _empty(columns), False
            order = [int(c) for c in chunk_ids][::-1 if newest else 1]
            parts: list[dict[str, np.ndarray]] = []
            have = 0
            raced = False
            for i in range(0, len(order), _PAGE_CHUNKS):
                batch = order[i:i + _PAGE_CHUNKS]
                async with self.redis.pipeline(transaction=True) as tx:
                    tx.hget(meta_key, "version")
                    for cid in batch:
                        tx.hmget(series_key(symbol, interval, f"c:{cid}"), columns)
                    found = await tx.execute()
                if found[0] != version:
                    raced = True
                    break
                for fields in found[1:]:
                    cut = self._assemble([fields], columns, start_ms, end_ms)
                    parts.append(cut)
                    have += len(cut["ts"])
                if have > max_bars:
                    break
            if raced:
                continue
            if newest:
                parts.reverse()
            out = np.zeros(have, dtype=[(c, BAR_DTYPE[c]) for c in columns])
            pos = 0
            for part in parts:
                n = len(part["ts"])
                for c in columns:
                    out[c][pos:pos + n] = part[c]
                pos += n
            more = have > max_bars
            return (out[-max_bars:] if newest else out[:max_bars]) if more else out, more
        raise RuntimeError(f"read of {symbol} {interval} kept racing with writes")

    async def mark_used(self, symbol: str, interval: str) -> None:
        """Remember that someone asked for this series (the scheduler keeps used series fresh)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(USED_SET, {f"{symbol}|{interval}": int(time.time() * 1000)})
            pipe.zremrangebyrank(USED_SET, 0, -(MAX_USED_SERIES + 1))  # keep the most recently used
            await pipe.execute()

    async def used_series(self, since_ms: int) -> list[tuple[str, str]]:
        names = await self.redis.zrangebyscore(USED_SET, since_ms, "+inf")
        return [tuple(n.decode().split("|", 1)) for n in names]

    async def info(self, symbol: str, interval: str) -> SeriesInfo | None:
        meta = await self.redis.hgetall(series_key(symbol, interval, "meta"))
        if not meta:
            return None
        return info_from_meta(symbol, interval, meta)

    async def version(self, symbol: str, interval: str) -> int:
        value = await self.redis.hget(series_key(symbol, interval, "meta"), "version")
        return int(value) if value is not None else 0

    async def contents(self) -> Contents | None:
        raw = await self.redis.hgetall(CONTENTS_KEY)
        if b"began" not in raw:
            return None
        return Contents(int(raw[b"began"]), raw.get(b"lost") == b"1")

    async def mark_contents(self, seen_began_ms: int | None) -> Contents:
        """The mark of the contents, made at the first look at an empty store. A caller that saw
        another mark before (``seen_began_ms``) knows the earlier contents vanished (Redis restarted
        empty) and records that for every reader."""
        await self.redis.hsetnx(CONTENTS_KEY, "began", int(time.time() * 1000))
        current = await self.contents()
        if current is None:  # emptied again in between: the next look marks it
            raise RuntimeError("the store's contents mark vanished while being made")
        if seen_began_ms is not None and current.began_ms != seen_began_ms and not current.lost:
            await self.redis.hset(CONTENTS_KEY, "lost", 1)
            current = Contents(current.began_ms, True)
        return current

    async def list_series(self) -> list[SeriesInfo]:
        names = sorted(m.decode() for m in await self.redis.smembers(SERIES_SET))
        pairs = [n.split("|", 1) for n in names]
        async with self.redis.pipeline(transaction=False) as pipe:
            for symbol, interval in pairs:
                pipe.hgetall(series_key(symbol, interval, "meta"))
            metas = await pipe.execute()
        return [info_from_meta(s, i, m) for (s, i), m in zip(pairs, metas) if m]


def info_from_meta(symbol: str, interval: str, meta: dict[bytes, bytes]) -> SeriesInfo:
    def num(key: bytes) -> int | None:
        return int(meta[key]) if key in meta else None

    provenance = [(int(a), int(b), str(p)) for a, b, p in json.loads(meta[b"provenance"])] \
        if meta.get(b"provenance") else []
    return SeriesInfo(symbol, interval, num(b"count") or 0, num(b"first"), num(b"last"), num(b"version") or 0,
                      meta.get(b"source", b"").decode(), meta.get(b"origin", b"").decode(), provenance)


def _empty(columns: tuple[str, ...]) -> np.ndarray:
    return np.zeros(0, dtype=[(c, BAR_DTYPE[c]) for c in columns])
