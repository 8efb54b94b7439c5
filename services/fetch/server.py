"""Fetch service: providers → normalisation → Redis, plus fetch-through reads and a bar stream."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc
from services.common.bars import find_gaps
from services.common.config import ServiceSettings, non_negative, setting
from services.common.convert import bars_to_pb, from_timestamp, gaps_to_pb, now_ms, to_timestamp
from services.common.events import subscribe
from services.common.errors import InvalidArgument, NotFound
from services.common.intervals import check_interval, check_symbol, interval_ms, resolve_window
from services.common.store import UPDATES_CHANNEL, PriceStore
from services.fetch.ingest import Ingestor
from services.fetch.lease import Leases
from services.fetch.providers.registry import build_providers
from services.fetch.scheduler import Scheduler

log = logging.getLogger("cryptolens.fetch")

SERVICE_NAME = "cryptolens.v1.FetchService"


def _provider_name(value: str) -> str:
    names = [v.strip() for v in value.split(",") if v.strip()]
    known = {"live", "simulated", "csv", "coingecko", "binance", "kraken", "coinbase"}
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise ValueError(f"unknown provider {', '.join(unknown) or '(none)'}; use {', '.join(sorted(known))}")
    return ",".join(names)


@dataclass
class FetchSettings(ServiceSettings):
    provider: str = setting("simulated", "provider chain: live, simulated, csv, or a comma list such as "
                            "'binance,kraken' (live = coingecko,binance,kraken,coinbase then simulated)",
                            _provider_name)
    csv_file: list[str] = setting([], "csv provider files as SYMBOL:INTERVAL=PATH, comma separated")
    history_days: int = setting(90, "days of history to backfill on first sight of a symbol", non_negative)
    refresh_s: float = setting(60.0, "seconds between refreshes of the watch list", non_negative)
    lease_s: float = setting(180.0, "seconds a replica's poll lease on a series lasts", non_negative)
    seed: int = setting(7, "seed of the simulated provider")
    provider_timeout_s: float = setting(120.0, "seconds one provider may take for a range before failover",
                                        non_negative)
    coingecko_api_key: str = setting("", "CoinGecko demo/pro API key (optional)")
    coingecko_url: str = setting("https://api.coingecko.com/api/v3", "CoinGecko base URL")
    binance_url: str = setting("https://api.binance.com", "Binance base URL")
    kraken_url: str = setting("https://api.kraken.com", "Kraken base URL")
    coinbase_url: str = setting("https://api.exchange.coinbase.com", "Coinbase Exchange base URL")

    service_name = "fetch"


class FetchService(fetch_pb2_grpc.FetchServiceServicer):
    full_names = (SERVICE_NAME,)

    def __init__(self, settings: FetchSettings, redis: aioredis.Redis):
        self.settings = settings
        self.redis = redis
        self.store = PriceStore(redis)
        chain, fallback = build_providers(settings)
        self.ingestor = Ingestor(self.store, chain, fallback, settings.provider_timeout_s)
        self.scheduler = Scheduler(self.ingestor, Leases(redis, int(settings.lease_s * 1000)), settings.symbols,
                                   settings.interval, settings.history_days, settings.refresh_s)
        self._scheduler_task: asyncio.Task | None = None

    # --- runtime hooks -------------------------------------------------------------------
    def register(self, server) -> None:
        fetch_pb2_grpc.add_FetchServiceServicer_to_server(self, server)

    async def start(self) -> None:
        pass  # the scheduler starts once Redis answers (on_redis)

    async def on_redis(self, up: bool) -> None:
        if up and self._scheduler_task is None and self.settings.refresh_s > 0:
            self._scheduler_task = asyncio.create_task(self.scheduler.run(), name="scheduler")

    async def stop(self) -> None:
        if self._scheduler_task:
            self._scheduler_task.cancel()
        for provider in self.ingestor.chain + ([self.ingestor.fallback] if self.ingestor.fallback else []):
            await provider.close()

    # --- RPCs ----------------------------------------------------------------------------
    async def ListSymbols(self, request, context):
        series = await self.store.list_series()
        watched = set(self.settings.symbols)
        return fetch_pb2.ListSymbolsResponse(
            series=[fetch_pb2.SeriesInfo(
                symbol=s.symbol, interval=s.interval, count=s.count, source=s.source, data_version=s.version,
                first=to_timestamp(s.first_ms) if s.first_ms is not None else None,
                last=to_timestamp(s.last_ms) if s.last_ms is not None else None,
                watched=s.symbol in watched and s.interval == self.settings.interval) for s in series],
            watchlist=self.settings.symbols,
        )

    async def Backfill(self, request, context):
        symbol, interval = check_symbol(request.symbol), check_interval(request.interval or self.settings.interval)
        start, end = from_timestamp(request, "start"), from_timestamp(request, "end")
        if start is None:
            raise InvalidArgument("start", "a backfill needs a start time")
        end = end if end is not None else now_ms()
        if start >= end:
            raise InvalidArgument("end", "end must be after start (the window is empty or inverted)")
        async with self.ingestor.lock(symbol, interval):
            result = await self.ingestor.ingest(symbol, interval, start, end)
        return fetch_pb2.BackfillResponse(
            symbol=symbol, interval=interval, bars_stored=result.write.written, source=result.source,
            data_version=result.write.version, gaps=gaps_to_pb(result.gaps, interval_ms(interval)))

    async def GetBars(self, request, context):
        symbol, interval = check_symbol(request.symbol), check_interval(request.interval or self.settings.interval)
        if request.limit < 0:
            raise InvalidArgument("limit", "must not be negative")
        start, end = from_timestamp(request, "start"), from_timestamp(request, "end")
        await self.ensure(symbol, interval, start, end)
        info = await self.store.info(symbol, interval)
        window = resolve_window(request.lookback, start, end, now_ms(), info.last_ms if info else None)
        bars = await self.store.read_bars(symbol, interval, window.start_ms, window.end_ms)
        if request.limit:
            bars = bars[-request.limit:]
        return fetch_pb2.GetBarsResponse(
            symbol=symbol, interval=interval, bars=bars_to_pb(bars), source=info.source if info else "",
            gaps=gaps_to_pb(find_gaps(bars["ts"], interval_ms(interval)), interval_ms(interval)),
            data_version=info.version if info else 0)

    async def ensure(self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None) -> None:
        """Fetch-through: make sure the store has the series (and the start of the window)."""
        info = await self.store.info(symbol, interval)
        if info is not None and (start_ms is None or info.first_ms is None or info.first_ms <= start_ms):
            return
        if not self.ingestor.supports(symbol, interval):
            raise NotFound(f"unknown symbol {symbol} at {interval}: no provider serves it")
        async with self.ingestor.lock(symbol, interval):
            info = await self.store.info(symbol, interval)  # another caller may have fetched it meanwhile
            if info is None:
                now = now_ms()
                step = interval_ms(interval)
                begin = start_ms if start_ms is not None else now - self.settings.history_days * 86_400_000
                await self.ingestor.ingest(symbol, interval, begin // step * step, end_ms or now + step)
            elif start_ms is not None and info.first_ms is not None and start_ms < info.first_ms:
                await self.ingestor.ingest(symbol, interval, start_ms, info.first_ms)

    async def WatchBars(self, request, context):
        symbols = {check_symbol(s, "symbols") for s in request.symbols}
        interval = check_interval(request.interval) if request.interval else ""
        async for event in subscribe(self.redis, UPDATES_CHANNEL):
            if (symbols and event["symbol"] not in symbols) or (interval and event["interval"] != interval):
                continue
            bars = await self.store.read_bars(event["symbol"], event["interval"], event["first"], event["last"] + 1)
            yield fetch_pb2.WatchBarsResponse(
                symbol=event["symbol"], interval=event["interval"], bars=bars_to_pb(bars[-1000:]),
                data_version=event["version"], source=event["source"])

