"""Core service: risk analytics over stored series, with a result cache keyed by data version."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis
from prometheus_client import Counter

from cryptolens.v1 import core_pb2, core_pb2_grpc
from services.common.bars import find_gaps
from services.common.config import ServiceSettings, positive, setting
from services.common.convert import from_timestamp, gaps_to_pb, now_ms, to_timestamp
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.intervals import (DAY_MS, check_interval, check_symbol, interval_ms, periods_per_year,
                                       resolve_window)
from services.common.store import PriceStore
from services.common import analytics
from services.common.series import Series, SeriesSource

SERVICE_NAME = "cryptolens.v1.CoreService"
CACHE_PREFIX = "cl:v1:cache"

CACHE_LOOKUPS = Counter("cryptolens_core_cache_total", "Result cache lookups", ["method", "result"])


@dataclass
class CoreSettings(ServiceSettings):
    benchmark: str = setting("BTC-USD", "default benchmark symbol for beta")
    cache_ttl_s: int = setting(3600, "seconds a cached result lives (it is also keyed by data version)", positive)
    fetch_timeout_s: float = setting(30.0, "deadline of fetch-through calls to the Fetch service", positive)
    series_cache_mb: int = setting(256, "memory for decoded price arrays, in MB", positive)

    service_name = "core"


class CoreService(core_pb2_grpc.CoreServiceServicer):
    full_names = (SERVICE_NAME,)

    def __init__(self, settings: CoreSettings, redis: aioredis.Redis):
        self.settings = settings
        self.redis = redis
        self.series = SeriesSource(PriceStore(redis), settings.fetch_addr, settings.fetch_timeout_s,
                                   settings.series_cache_mb * 1024 * 1024)

    def register(self, server) -> None:
        core_pb2_grpc.add_CoreServiceServicer_to_server(self, server)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self.series.close()

    async def on_redis(self, up: bool) -> None:
        pass

    # --- helpers -------------------------------------------------------------------------
    def _interval(self, request) -> str:
        return check_interval(request.interval or self.settings.interval)

    @staticmethod
    def _window(request, series: Series):
        start, end = from_timestamp(request, "start"), from_timestamp(request, "end")
        latest = int(series.ts[-1]) if len(series.ts) else None
        return resolve_window(request.lookback, start, end, now_ms(), latest)

    async def _load(self, symbol: str, interval: str, request) -> tuple[Series, np.ndarray, np.ndarray]:
        start = from_timestamp(request, "start")
        series = await self.series.get(symbol, interval, start)
        window = self._window(request, series)
        ts, close = series.window(window.start_ms, window.end_ms)
        return series, ts, close

    async def _cached(self, method: str, key: str, response_cls):
        raw = await self.redis.get(key)
        CACHE_LOOKUPS.labels(method, "hit" if raw else "miss").inc()
        return response_cls.FromString(raw) if raw else None

    async def _store(self, key: str, response) -> None:
        await self.redis.set(key, response.SerializeToString(), ex=self.settings.cache_ttl_s)

    @staticmethod
    def _cache_key(method: str, request, *versions: int) -> str:
        digest = hashlib.sha1(request.SerializeToString(deterministic=True)).hexdigest()[:16]
        return f"{CACHE_PREFIX}:{method}:{':'.join(map(str, versions))}:{digest}"

    # --- RPCs ----------------------------------------------------------------------------
    async def GetStats(self, request, context):
        symbol, interval = check_symbol(request.symbol), self._interval(request)
        rf = request.risk_free_rate
        if not math.isfinite(rf) or rf <= -1:
            raise InvalidArgument("risk_free_rate", f"{rf} is not an annual rate above -1 (0.04 means 4 %)")
        benchmark = check_symbol(request.benchmark or self.settings.benchmark, "benchmark")
        version = await self.series.version(symbol, interval, from_timestamp(request, "start"))
        bench_version = 0
        if benchmark != symbol:
            try:
                bench_version = await self.series.version(benchmark, interval)
            except NotFound:
                bench_version = -1  # no benchmark data: beta stays unset
        key = self._cache_key("stats", request, version, bench_version)
        cached = await self._cached("GetStats", key, core_pb2.GetStatsResponse)
        if cached is not None:
            cached.cached = True
            return cached

        series, ts, close = await self._load(symbol, interval, request)
        if len(ts) < 2:
            raise FailedPrecondition(f"{symbol} {interval} has {len(ts)} bar(s) in the window; need at least 2")
        ppy = periods_per_year(interval)
        bench_ts = bench_close = None
        if bench_version > 0:
            bench = await self.series.get(benchmark, interval)
            bench_ts, bench_close = bench.window(int(ts[0]), int(ts[-1]) + 1)
        stats = analytics.compute_stats(ts, close, ppy, rf, bench_ts, bench_close)
        response = core_pb2.GetStatsResponse(
            symbol=symbol, interval=interval, periods_per_year=ppy, data_version=series.version,
            source=series.source, as_of=to_timestamp(now_ms()), benchmark=benchmark if bench_version > 0 else "",
            start=to_timestamp(ts[0]), end=to_timestamp(ts[-1]), count=int(stats["count"]),
            gaps=gaps_to_pb(find_gaps(ts, interval_ms(interval)), interval_ms(interval)))
        for name in ("first", "last", "mean", "min", "max", "change", "volatility", "annualized_volatility",
                     "max_drawdown", "current_drawdown", "sharpe", "sortino", "downside_deviation", "var_95",
                     "cvar_95", "beta", "worst_return", "best_return"):
            value = stats.get(name)
            if value is not None and math.isfinite(value):
                setattr(response, name, float(value))
        for name, field in (("max_drawdown_ts", "max_drawdown_time"), ("worst_return_ts", "worst_return_time")):
            if stats.get(name) is not None:
                getattr(response, field).CopyFrom(to_timestamp(stats[name]))
        await self._store(key, response)
        return response

    async def GetTimeseries(self, request, context):
        symbol, interval = check_symbol(request.symbol), self._interval(request)
        if request.max_points < 0 or request.rolling_window < 0:
            raise InvalidArgument("max_points" if request.max_points < 0 else "rolling_window", "must not be negative")
        max_points = request.max_points or 1000
        if max_points < 2:
            raise InvalidArgument("max_points", "must be at least 2")
        version = await self.series.version(symbol, interval, from_timestamp(request, "start"))
        key = self._cache_key("ts", request, version)
        cached = await self._cached("GetTimeseries", key, core_pb2.GetTimeseriesResponse)
        if cached is not None:
            return cached
        series, ts, close = await self._load(symbol, interval, request)
        if len(ts) == 0:
            raise FailedPrecondition(f"{symbol} {interval} has no bars in the window")
        # Default rolling window: one day of bars (30 days on daily bars).
        window = request.rolling_window or (30 if interval == "1d" else DAY_MS // interval_ms(interval))
        drawdown = analytics.drawdown_series(close)
        rolling = analytics.rolling_annualized_volatility(close, window, periods_per_year(interval))
        keep = analytics.downsample(ts, close, max_points)
        points = [core_pb2.TimeseriesPoint(time=to_timestamp(t), close=c, drawdown=d,
                                           rolling_volatility=None if math.isnan(v) else v)
                  for t, c, d, v in zip(ts[keep].tolist(), close[keep].tolist(), drawdown[keep].tolist(),
                                        rolling[keep].tolist())]
        response = core_pb2.GetTimeseriesResponse(symbol=symbol, interval=interval, points=points,
                                                  total_points=len(ts), data_version=series.version,
                                                  source=series.source)
        await self._store(key, response)
        return response

    async def _aligned(self, symbols: list[str], interval: str, request) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for symbol in symbols:
            _, ts, close = await self._load(symbol, interval, request)
            out.append((ts, close))
        return out

    async def GetCorrelation(self, request, context):
        symbols = [check_symbol(s, "symbols") for s in request.symbols]
        if len(symbols) < 2:
            raise InvalidArgument("symbols", "give at least two symbols")
        if len(set(symbols)) != len(symbols):
            raise InvalidArgument("symbols", "each symbol may appear only once")
        interval = self._interval(request)
        method = request.method or core_pb2.CORRELATION_METHOD_PEARSON
        series = await self._aligned(symbols, interval, request)
        try:
            matrix, count = analytics.correlation_matrix(
                series, "spearman" if method == core_pb2.CORRELATION_METHOD_SPEARMAN else "pearson")
        except ValueError as exc:
            raise FailedPrecondition(str(exc)) from None
        return core_pb2.GetCorrelationResponse(
            symbols=symbols, count=count, method=method,
            rows=[core_pb2.CorrelationRow(values=[float(v) for v in row]) for row in matrix])

    async def GetPortfolioRisk(self, request, context):
        if not request.holdings:
            raise InvalidArgument("holdings", "give at least one holding")
        symbols = [check_symbol(h.symbol, "holdings.symbol") for h in request.holdings]
        if len(set(symbols)) != len(symbols):
            raise InvalidArgument("holdings.symbol", "each symbol may appear only once")
        weights = np.array([h.weight for h in request.holdings], dtype=float)
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise InvalidArgument("holdings.weight", "weights must be finite and non-negative (no short positions)")
        total = float(weights.sum())
        if total <= 0:
            raise InvalidArgument("holdings.weight", "weights must not all be zero")
        if abs(total - 1.0) > 1e-6:
            if not request.normalize:
                raise InvalidArgument("holdings.weight", f"weights sum to {total:g}, not 1; set normalize to rescale")
            weights = weights / total
        interval = self._interval(request)
        series = await self._aligned(symbols, interval, request)
        try:
            risk = analytics.portfolio_risk(series, weights, periods_per_year(interval))
        except ValueError as exc:
            raise FailedPrecondition(str(exc)) from None
        response = core_pb2.GetPortfolioRiskResponse(count=int(risk.get("count", 0)),
                                                     periods_per_year=periods_per_year(interval))
        for name in ("volatility", "annualized_volatility", "var_95", "cvar_95", "max_drawdown", "expected_return"):
            value = risk.get(name)
            if value is not None and math.isfinite(value):
                setattr(response, name, float(value))
        for symbol, contribution in zip(symbols, risk["contributions"]):
            response.contributions.add(symbol=symbol, **{k: float(contribution[k]) for k in
                                                          ("weight", "marginal", "contribution", "contribution_pct")})
        return response
