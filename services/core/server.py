"""Core service: risk analytics over stored series.

Every RPC: check the request (no I/O), resolve its window against the stored series (asking
Fetch for what the store lacks), look the answer up in the bounded result cache under the exact
stamps of the series involved, else read just that window and compute in a worker thread.
Coverage and freshness are set on every answer as it leaves, so a cached answer's age is current.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from prometheus_client import Gauge

from cryptolens.v1 import core_pb2, core_pb2_grpc
from services.common import forecast as fc
from services.common.config import ServiceSettings, positive, setting
from services.common.convert import from_timestamp, now_ms
from services.common.errors import InvalidArgument, FailedPrecondition, NotFound, Unavailable, short
from services.common.events import last_id, read_stream, waiting_out_outages
from services.common.freshness import coverage_pb, freshness_pb
from services.common.intervals import Window, check_interval, check_symbol, interval_ms
from services.common.limits import MAX_PAGE_BARS, MAX_WINDOW_BARS
from services.common.runtime import decode_request, takes_bytes
from services.common.series import Series, SeriesSource, SeriesState
from services.common.store import UPDATES_LOG, PriceStore
from services.common.tls import ClientTLS
from services.core import answers, forecast_answer, forecast_live, prices
from services.core.result_cache import ResultCache, request_digest
from services.core.pair_returns import PairReturns
from services.core.window_stats import WindowStats, stats_values
from services.core.windows import WindowSpec

log = logging.getLogger("cryptolens.core")

SERVICE_NAME = "cryptolens.v1.CoreService"
MB = 1024 * 1024
MAX_SYMBOLS = 50  # per GetCorrelation / GetPortfolioRisk / WatchPrices request
MAX_ASKS, MAX_ASK_BYTES = 4096, 512  # checked GetStats requests (and coverages) kept by their bytes
_STREAM_ID_RE = re.compile(r"^\d{1,20}-\d{1,20}$")

SERIES_CACHE_BYTES = Gauge("cryptolens_core_series_cache_bytes", "Bytes of decoded price arrays held in memory")
KEPT_STATS_BYTES = Gauge("cryptolens_core_kept_stats_bytes", "Bytes of GetStats windows kept for incremental updates")


@dataclass
class CoreSettings(ServiceSettings):
    benchmark: str = setting("BTC-USD", "default benchmark symbol for beta")
    fetch_timeout_s: float = setting(30.0, "deadline of fetch-through calls to the Fetch service", positive)
    series_cache_mb: int = setting(128, "memory for decoded price arrays, in MB", positive)
    result_cache_mb: int = setting(32, "memory for cached answers, in MB", positive)
    kept_stats_mb: int = setting(32, "memory for GetStats windows kept to update bar by bar, in MB", positive)
    compute_threads: int = setting(2, "worker threads for analytics (off the event loop)", positive)

    service_name = "core"


def _fetch_from(window: Window, now: int) -> int | None:
    """The start to ask Fetch for: a window that starts in the future has nothing to fetch."""
    return window.start_ms if window.start_ms is not None and window.start_ms < now else None


class StatsAnswer(NamedTuple):
    """A GetStats answer but its tail (``cached`` and freshness), and the states it holds for: the
    series' and the benchmark's kept states, as the very objects (a write or a re-read replaces them)."""

    state: SeriesState
    bench: SeriesState | None
    window: Window
    key: tuple  # its result-cache key
    raw: bytes  # the stored answer's bytes and its coverage


@dataclass(eq=False)
class StatsAsk:
    """A GetStats request, checked: everything its answer depends on besides the stored data."""

    symbol: str
    interval: str
    benchmark: str
    rf: float
    spec: WindowSpec
    digest: str
    answered: StatsAnswer | None = field(default=None, repr=False)  # its last answer, for a repeat


class Loaded(NamedTuple):
    """One series as an answer uses it: its state, the resolved window and the bars in it."""

    state: SeriesState
    window: Window
    series: Series | None = None
    ts: np.ndarray | None = None
    close: np.ndarray | None = None


class CoreService(core_pb2_grpc.CoreServiceServicer):
    full_names = (SERVICE_NAME,)

    def __init__(self, settings: CoreSettings, redis: aioredis.Redis):
        self.settings = settings
        self.redis = redis
        self.series = SeriesSource(PriceStore(redis), settings.fetch_addr, settings.fetch_timeout_s,
                                   settings.series_cache_mb * MB, ClientTLS.from_settings(settings))
        self.results = ResultCache(settings.result_cache_mb * MB)
        self._asks: OrderedDict[bytes, StatsAsk] = OrderedDict()
        self._coverages: OrderedDict[tuple, bytes] = OrderedDict()
        self._tails_at, self._tails = 0, {}  # GetStats tails made in the millisecond ``_tails_at``
        self._pool = ThreadPoolExecutor(settings.compute_threads, thread_name_prefix="core-compute")
        # What GetStats keeps to answer the next version cheaply: per ("window", symbol, spec) and
        # per ("pair", symbol, benchmark, interval), least recently used out.
        self._kept: OrderedDict[tuple, WindowStats | PairReturns] = OrderedDict()
        self._kept_locks: weakref.WeakValueDictionary[tuple, asyncio.Lock] = weakref.WeakValueDictionary()

    def register(self, server) -> None:
        core_pb2_grpc.add_CoreServiceServicer_to_server(self, server)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        # The worker threads are left to interpreter exit: calls still draining may need them.
        await self.series.close()

    async def on_redis(self, up: bool) -> None:
        pass

    # --- helpers -------------------------------------------------------------------------
    async def _compute(self, fn, *args):
        """Run CPU-heavy work in a worker thread. A client that cancels or runs out of deadline cancels
        this await: queued work is dropped and nothing after it runs."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args))

    async def _resolve(self, symbol: str, spec: WindowSpec, now: int) -> Loaded:
        """The window against the stored series; Fetch is asked first for a series the store lacks or
        for the start of a window the store does not reach back to."""
        return await self._resolve_state(await self.series.state(symbol, spec.interval), symbol, spec, now)

    async def _resolve_state(self, state: SeriesState | None, symbol: str, spec: WindowSpec, now: int) -> Loaded:
        window = spec.resolve(state.info.last_ms if state else None, now)
        ensured = await self.series.ensure(symbol, spec.interval, _fetch_from(window, now), state)
        return Loaded(ensured, window if ensured is state else spec.resolve(ensured.info.last_ms, now))

    async def _read_series(self, symbol: str, spec: WindowSpec, loaded: Loaded) -> Loaded:
        window = loaded.window
        series = await self.series.get(symbol, spec.interval, window.start_ms, end_ms=window.end_ms,
                                       state=loaded.state)
        SERIES_CACHE_BYTES.set(self.series.cached_bytes)
        return Loaded(loaded.state, window, series)

    async def _read(self, symbol: str, spec: WindowSpec, loaded: Loaded) -> Loaded:
        loaded = await self._read_series(symbol, spec, loaded)
        ts, close = loaded.series.window(loaded.window.start_ms, loaded.window.end_ms)
        return Loaded(loaded.state, loaded.window, loaded.series, ts, close)

    async def _stats_kept(self, symbol: str, spec: WindowSpec, loaded: Loaded, i: int, j: int, rf: float,
                          benchmark: str, bench: Loaded | None):
        """GetStats from what is kept for this window (and benchmark), brought up to these versions."""
        lock_key = (symbol, spec.interval)
        lock = self._kept_locks.get(lock_key)
        if lock is None:
            lock = self._kept_locks[lock_key] = asyncio.Lock()
        window_key, pair_key = ("window", symbol, spec), ("pair", symbol, benchmark, spec.interval)
        async with lock:
            # Taken out while updated: a cancelled update leaves nothing half-done behind.
            kept, pair = self._kept.pop(window_key, None), self._kept.pop(pair_key, None) if bench else None
            values, kept, pair = await self._compute(stats_values, kept, pair, loaded.series,
                                                     bench.series if bench else None, i, j, spec.interval, rf)
            self._keep(window_key, kept)
            self._keep(pair_key, pair)
        series = loaded.series
        return answers.stats_response(symbol, spec.interval, benchmark if bench else "", values,
                                      int(series.span(i, i + 1)[0][0]), int(series.span(j - 1, j)[0][0]),
                                      series.version, series.source)

    def _keep(self, key: tuple, kept) -> None:
        budget = self.settings.kept_stats_mb * MB
        if kept is not None and kept.nbytes <= budget:
            self._kept[key] = kept
            while sum(k.nbytes for k in self._kept.values()) > budget:
                self._kept.popitem(last=False)
        KEPT_STATS_BYTES.set(sum(k.nbytes for k in self._kept.values()))

    @staticmethod
    def _coverage_span(loaded: Loaded, now: int) -> tuple[int | None, int, int]:
        """The window an answer's coverage is about: (start, end, until), no bar at or after until."""
        info = loaded.state.info
        newest_end = info.last_ms + 1 if info.last_ms is not None else now
        end = loaded.window.end_ms if loaded.window.end_ms is not None else newest_end
        return loaded.window.start_ms, end, max(newest_end, now)

    def _coverage(self, loaded: Loaded, interval: str, first_ms, last_ms, bars: int, now: int):
        start, end, until = self._coverage_span(loaded, now)
        return coverage_pb(start, end, first_ms, last_ms, bars, interval, until_ms=until)

    def _stats_coverage(self, loaded: Loaded, interval: str, first_ms, last_ms, bars: int, now: int) -> bytes:
        """The coverage of a GetStats answer as response bytes, kept by what it is made of (the clock
        only counts through ``until``, as the end of the window it cuts)."""
        start, end, until = self._coverage_span(loaded, now)
        key = (start, end, min(end, until), first_ms, last_ms, bars, interval)
        raw = self._coverages.get(key)
        if raw is None:
            coverage = coverage_pb(start, end, first_ms, last_ms, bars, interval, until_ms=until)
            raw = self._coverages[key] = core_pb2.GetStatsResponse(coverage=coverage).SerializeToString()
            if len(self._coverages) > MAX_ASKS:
                self._coverages.popitem(last=False)
        return raw

    def _freshness(self, loaded: Loaded, interval: str, now: int, out=None):
        return freshness_pb(loaded.state.info.last_ms, interval, self.settings.stale_after_bars, now, out)

    def _stats_tail(self, state: SeriesState, interval: str, now: int, cached: bool) -> bytes:
        """``cached`` and the freshness as response bytes. Under load many answers leave in the same
        millisecond: they share these bytes, kept until the clock moves on."""
        if now != self._tails_at:
            self._tails_at, self._tails = now, {}
        key = (state.info.last_ms, interval, cached)
        raw = self._tails.get(key)
        if raw is None:
            tail = core_pb2.GetStatsResponse(cached=cached)
            freshness_pb(state.info.last_ms, interval, self.settings.stale_after_bars, now, tail.freshness)
            raw = self._tails[key] = tail.SerializeToString()
        return raw

    async def _repeat(self, ask: StatsAsk, state: SeriesState | None, now: int) -> bytes | None:
        """The last answer to this request, if nothing it was made from changed: the same kept states
        and the same window at this time. Only answers whose checks and coverage the clock cannot
        change are kept (``_answered``)."""
        answered = ask.answered
        if answered is None or state is not answered.state:
            return None
        if ask.spec.resolve(state.info.last_ms, now) != answered.window:
            return None
        if answered.bench is not None:
            if await self.series.state(ask.benchmark, ask.interval, synced=True) is not answered.bench:
                return None
        self.results.repeated("GetStats", answered.key)
        return answered.raw + self._stats_tail(state, ask.interval, now, cached=True)

    def _answered(self, ask: StatsAsk, loaded: Loaded, bench: SeriesState | None, key: tuple, raw: bytes,
                  now: int) -> None:
        """Keep a cached answer for the next identical request, when only its states can change it:
        no Fetch could be asked for earlier bars, and its coverage already ends before now."""
        _, end, until = self._coverage_span(loaded, now)
        fetch_from = _fetch_from(loaded.window, now)
        if ask.benchmark == ask.symbol:
            bench_settled = True
        else:  # no benchmark data means asking Fetch for it on every call
            bench_settled = bench is not None and self.series.reaches_back(bench, fetch_from)
        if until >= end and bench_settled and self.series.reaches_back(loaded.state, fetch_from):
            ask.answered = StatsAnswer(loaded.state, bench, loaded.window, key, raw)

    async def _benchmark(self, benchmark: str, symbol: str, interval: str, fetch_from: int | None
                         ) -> SeriesState | None:
        """The benchmark's state, read after the symbol's in the same call (one sync for both)."""
        if benchmark == symbol:
            return None
        try:
            return await self.series.ensure(benchmark, interval, fetch_from, synced=True)
        except (NotFound, Unavailable):
            return None  # no benchmark data: beta stays unset

    @staticmethod
    def _fresh_read(*loaded: Loaded) -> bool:
        """True when every series read is exactly the state the cache key was made from."""
        return all(x.series.stamp == x.state.stamp for x in loaded)

    # --- RPCs ----------------------------------------------------------------------------
    def _stats_ask(self, raw: bytes, now: int) -> StatsAsk:
        """The GetStats request in ``raw``, checked. A check the clock cannot change (a lookback, or
        no start) is kept by the request's bytes, so a repeated request is not parsed or checked again."""
        ask = self._asks.get(raw)
        if ask is not None:
            return ask
        request = decode_request(raw, core_pb2.GetStatsRequest)
        symbol = check_symbol(request.symbol)
        interval = check_interval(request.interval or self.settings.interval)
        rf = request.risk_free_rate
        if not math.isfinite(rf) or rf <= -1:
            raise InvalidArgument("risk_free_rate", f"{rf:.6g} is not an annual rate above -1 (0.04 means 4 %)")
        benchmark = check_symbol(request.benchmark or self.settings.benchmark, "benchmark")
        spec = WindowSpec.parse(request, interval, now)
        ask = StatsAsk(symbol, interval, benchmark, rf, spec, request_digest(request))
        if len(raw) <= MAX_ASK_BYTES and (spec.lookback_ms is not None or spec.start_ms is None):
            self._asks[raw] = ask
            if len(self._asks) > MAX_ASKS:
                self._asks.popitem(last=False)
        return ask

    @takes_bytes
    async def GetStats(self, raw: bytes, context) -> bytes:
        """Answered as bytes: the cached answer as stored, then its coverage and freshness (fields
        the stored bytes do not hold, so the two parts parse as one message). A repeated request
        whose states did not change is answered from its last answer, with a new freshness."""
        now = now_ms()
        ask = self._stats_ask(raw, now)
        symbol, interval, spec, benchmark = ask.symbol, ask.interval, ask.spec, ask.benchmark
        state = await self.series.state(symbol, interval)
        if (repeat := await self._repeat(ask, state, now)) is not None:
            return repeat
        loaded = await self._resolve_state(state, symbol, spec, now)
        spec.check_stored(loaded.window, [loaded.state.info])
        bench_state = await self._benchmark(benchmark, symbol, interval, _fetch_from(loaded.window, now))
        key = ("GetStats", loaded.state.stamp, bench_state.stamp if bench_state else None, loaded.window, ask.digest)
        hit = self.results.get("GetStats", key)
        stored = hit is not None  # the answer is in the result cache (found, or put below)
        if stored:
            answer, (first, last, count) = hit
        else:
            loaded = await self._read_series(symbol, spec, loaded)
            i, j = loaded.series.bounds(loaded.window.start_ms, loaded.window.end_ms)
            if j - i < 2:
                raise FailedPrecondition(f"{symbol} {interval} has {j - i} bar(s) in the window; need at least 2")
            bench = None
            if bench_state is not None:
                span = Window(int(loaded.series.span(i, i + 1)[0][0]), int(loaded.series.span(j - 1, j)[0][0]) + 1)
                bench = await self._read_series(benchmark, spec, Loaded(bench_state, span))
            response = await self._stats_kept(symbol, spec, loaded, i, j, ask.rf, benchmark, bench)
            answer = response.SerializeToString()
            first = response.start.ToMilliseconds() if response.HasField("start") else None
            last = response.end.ToMilliseconds() if response.HasField("end") else None
            count = response.count
            stored = self._fresh_read(loaded, *([bench] if bench else []))
            if stored:
                self.results.put(key, answer, (first, last, count))
        answer += self._stats_coverage(loaded, interval, first, last, count, now)
        if stored:
            self._answered(ask, loaded, bench_state, key, answer, now)
        return answer + self._stats_tail(loaded.state, interval, now, cached=hit is not None)

    async def GetTimeseries(self, request, context):
        now = now_ms()
        symbol = check_symbol(request.symbol)
        interval = check_interval(request.interval or self.settings.interval)
        if request.max_points < 0 or request.rolling_window < 0:
            raise InvalidArgument("max_points" if request.max_points < 0 else "rolling_window", "must not be negative")
        max_points = request.max_points or 1000
        if not 2 <= max_points <= MAX_PAGE_BARS:
            raise InvalidArgument("max_points", f"must be between 2 and MAX_PAGE_BARS = {MAX_PAGE_BARS:,}")
        if request.rolling_window > MAX_WINDOW_BARS:
            raise InvalidArgument("rolling_window", f"must be at most MAX_WINDOW_BARS = {MAX_WINDOW_BARS:,}")
        spec = WindowSpec.parse(request, interval, now)

        loaded = await self._resolve(symbol, spec, now)
        spec.check_stored(loaded.window, [loaded.state.info])
        key = ("GetTimeseries", loaded.state.stamp, loaded.window, request_digest(request))
        hit = self.results.get("GetTimeseries", key)
        if hit is not None:
            response = core_pb2.GetTimeseriesResponse.FromString(hit[0])
        else:
            loaded = await self._read(symbol, spec, loaded)
            if len(loaded.ts) == 0:
                raise FailedPrecondition(f"{symbol} {interval} has no bars in the window")
            response = await self._compute(answers.timeseries, symbol, interval, loaded.ts, loaded.close,
                                           max_points, request.rolling_window, loaded.series.version,
                                           loaded.series.source)
            if self._fresh_read(loaded):
                self.results.put(key, response.SerializeToString())
        points = response.points
        first = points[0].time.ToMilliseconds() if points else None
        last = points[-1].time.ToMilliseconds() if points else None
        response.coverage.CopyFrom(self._coverage(loaded, interval, first, last, response.total_points, now))
        response.freshness.CopyFrom(self._freshness(loaded, interval, now))
        return response

    async def _load_all(self, symbols: list[str], spec: WindowSpec, now: int) -> list[Loaded]:
        resolved = [await self._resolve(symbol, spec, now) for symbol in symbols]
        spec.check_stored(resolved[0].window, [x.state.info for x in resolved])
        return [await self._read(symbol, spec, x) for symbol, x in zip(symbols, resolved)]

    def _per_symbol(self, response, symbols: list[str], loaded: list[Loaded], interval: str, now: int) -> None:
        for symbol, x in zip(symbols, loaded):
            first, last = (int(x.ts[0]), int(x.ts[-1])) if len(x.ts) else (None, None)
            response.coverage[symbol].CopyFrom(self._coverage(x, interval, first, last, len(x.ts), now))
            response.freshness[symbol].CopyFrom(self._freshness(x, interval, now))

    @staticmethod
    def _symbols(values, field: str) -> list[str]:
        if len(values) > MAX_SYMBOLS:
            raise InvalidArgument(field, f"at most {MAX_SYMBOLS} symbols per request")
        symbols = [check_symbol(s, field) for s in values]
        if len(set(symbols)) != len(symbols):
            raise InvalidArgument(field, "each symbol may appear only once")
        return symbols

    async def GetCorrelation(self, request, context):
        now = now_ms()
        symbols = self._symbols(request.symbols, "symbols")
        if len(symbols) < 2:
            raise InvalidArgument("symbols", "give at least two symbols")
        interval = check_interval(request.interval or self.settings.interval)
        if request.method not in core_pb2.CorrelationMethod.values():
            raise InvalidArgument("method", f"{request.method} is not a CorrelationMethod")
        method = request.method or core_pb2.CORRELATION_METHOD_PEARSON
        spec = WindowSpec.parse(request, interval, now, symbols=len(symbols))
        loaded = await self._load_all(symbols, spec, now)
        response = await self._compute(answers.correlation, symbols, [(x.ts, x.close) for x in loaded], method)
        self._per_symbol(response, symbols, loaded, interval, now)
        return response

    async def GetPortfolioRisk(self, request, context):
        now = now_ms()
        if not request.holdings:
            raise InvalidArgument("holdings", "give at least one holding")
        symbols = self._symbols([h.symbol for h in request.holdings], "holdings.symbol")
        weights = np.array([h.weight for h in request.holdings], dtype=float)
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise InvalidArgument("holdings.weight", "weights must be finite and non-negative (no short positions)")
        total = float(weights.sum())
        if not math.isfinite(total):
            raise InvalidArgument("holdings.weight", "weights are too large to add up")
        if total <= 0:
            raise InvalidArgument("holdings.weight", "weights must not all be zero")
        if abs(total - 1.0) > 1e-6:
            if not request.normalize:
                raise InvalidArgument("holdings.weight", f"weights sum to {total:g}, not 1; set normalize to rescale")
            weights = weights / total
        interval = check_interval(request.interval or self.settings.interval)
        spec = WindowSpec.parse(request, interval, now, symbols=len(symbols))
        loaded = await self._load_all(symbols, spec, now)
        response = await self._compute(answers.portfolio_risk, symbols, [(x.ts, x.close) for x in loaded], weights,
                                       interval)
        self._per_symbol(response, symbols, loaded, interval, now)
        return response

    async def GetForecast(self, request, context):
        now = now_ms()
        symbol = check_symbol(request.symbol)
        interval = check_interval(request.interval or self.settings.interval)
        model = request.model or "garch_t"
        if model not in fc.MODELS:
            raise InvalidArgument("model", f"{short(model)} is not a model; use one of {', '.join(fc.MODELS)}")
        as_of = from_timestamp(request, "as_of")
        if as_of is not None and as_of <= 0:
            raise InvalidArgument("as_of", "must be after 1970-01-01")

        state = await self.series.ensure(symbol, interval)
        last = state.info.last_ms
        if last is None:
            raise FailedPrecondition(f"{symbol} {interval} has no bars; a forecast needs at least "
                                     f"MIN_HISTORY_BARS = {fc.MIN_HISTORY_BARS}")
        end = min(as_of, last + 1) if as_of is not None else last + 1  # bars strictly before as_of
        start = max(0, end - fc.MAX_HISTORY_BARS * interval_ms(interval))
        key = ("GetForecast", state.stamp, start, end, model)
        hit = self.results.get("GetForecast", key)
        if hit is not None:
            response = core_pb2.GetForecastResponse.FromString(hit[0])
            response.cached = True
        else:
            series = await self.series.get(symbol, interval, start, end_ms=end, state=state)
            SERIES_CACHE_BYTES.set(self.series.cached_bytes)
            ts, close = series.window(start, end)
            if len(ts) < fc.MIN_HISTORY_BARS:
                raise FailedPrecondition(f"{symbol} {interval} has {len(ts)} bar(s) before as_of; a forecast needs "
                                         f"at least MIN_HISTORY_BARS = {fc.MIN_HISTORY_BARS}")
            response = await self._compute(forecast_answer.forecast, symbol, interval, model, ts, close,
                                           series.version, series.source)
            if series.stamp == state.stamp:
                self.results.put(key, response.SerializeToString())
        if as_of is None:
            await self._live_record(response, symbol, interval, start, state, now)
        response.freshness.CopyFrom(freshness_pb(last, interval, self.settings.stale_after_bars, now))
        return response

    async def WatchPrices(self, request, context):
        symbols = self._symbols(request.symbols, "symbols")
        if not symbols:
            raise InvalidArgument("symbols", "give at least one symbol to watch")
        interval = check_interval(request.interval or self.settings.interval)
        if request.after and not _STREAM_ID_RE.match(request.after):
            raise InvalidArgument("after", f"{short(request.after)} is not a resume_token from WatchPrices")
        after = request.after
        if not after:
            # The log position first, then the snapshot: a write in between is sent (again), never missed.
            after = await last_id(self.redis, UPDATES_LOG)
            for symbol in symbols:
                try:
                    yield await prices.read_price(self.series, symbol, interval, self.settings.stale_after_bars,
                                                  after, snapshot=True)
                except Unavailable:
                    yield prices.unavailable_message(symbol, interval, self.settings.stale_after_bars, after)
        wanted = set(symbols)
        async for entry_id, fields in read_stream(self.redis, UPDATES_LOG, after):
            event = json.loads(fields["event"])
            if event["symbol"] in wanted and event["interval"] == interval:
                message = await waiting_out_outages(lambda e=event, i=entry_id: prices.read_price(
                    self.series, e["symbol"], interval, self.settings.stale_after_bars, i, snapshot=False),
                    also=(Unavailable,))
                message.write_version = event["version"]
                yield message

    async def _live_record(self, response, symbol: str, interval: str, start: int, state: SeriesState,
                           now: int) -> None:
        """Store this live forecast (first issue wins), score the stored ones whose bar has closed, and
        attach the live record. Redis failing here leaves the live record out, never the forecast."""
        try:
            series = await self.series.get(symbol, interval, start, state=state)
            ts, close = series.window(start, None)
            records = await forecast_live.update(
                self.redis, symbol, interval, ts, close, [response.forecast, *response.baselines],
                response.last_bar.ToMilliseconds(), response.target.ToMilliseconds(), now)
        except (RedisError, Unavailable) as exc:
            log.warning("live forecast record of %s %s unavailable: %s", symbol, interval, exc)
            return
        response.live_record.extend(records)
