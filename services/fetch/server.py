"""Fetch service: providers → normalisation → Redis, plus fetch-through reads and a bar stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from cryptolens.v1 import fetch_pb2, fetch_pb2_grpc
from services.common import redact
from services.common.bars import find_gaps
from services.common.config import ServiceSettings, non_negative, positive, setting
from services.common.convert import bars_to_pb, from_timestamp, gaps_to_pb, now_ms, to_timestamp
from services.common.csv_bars import CsvError, load_csv, parse_spec
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable, short
from services.common.events import last_id, read_stream, waiting_out_outages
from services.common.freshness import freshness_pb
from services.common.intervals import INTERVAL_MS, check_interval, check_symbol, interval_ms, resolve_window
from services.common.limits import DEFAULT_PAGE_BARS, MAX_FUTURE_MS, MAX_PAGE_BARS, MAX_WINDOW_BARS
from services.common.store import UPDATES_LOG, PriceStore, SeriesInfo
from services.fetch.ingest import Ingestor
from services.fetch.lease import Leases
from services.fetch.providers.registry import build_providers
from services.fetch.scheduler import Scheduler
from services.fetch.streams.binance import DEFAULT_URL as BINANCE_WS
from services.fetch.streams.coinbase import DEFAULT_URL as COINBASE_WS
from services.fetch.streams.kraken import DEFAULT_URL as KRAKEN_WS
from services.fetch.streams.manager import build_stream_manager, streamable

log = logging.getLogger("cryptolens.fetch")

SERVICE_NAME = "cryptolens.v1.FetchService"


def _provider_name(value: str) -> str:
    names = [v.strip() for v in value.split(",") if v.strip()]
    known = {"live", "simulated", "csv", "coingecko", "binance", "kraken", "coinbase"}
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise ValueError(f"unknown provider {', '.join(unknown) or '(none)'}; use {', '.join(sorted(known))}")
    if "simulated" in names and len(names) > 1:
        raise ValueError("simulated is a mode of its own and mixes with no other provider "
                         "(simulated prices never fill in for live or replayed ones)")
    return ",".join(names)


def _stream_mode(value: str) -> str:
    if value not in ("on", "off", "auto"):
        raise ValueError("must be on, off or auto")
    return value


def _ws_url(value: str) -> str:
    if not value.startswith(("ws://", "wss://")):
        raise ValueError("must start with ws:// or wss://")
    return value


def _intervals(values: list[str]) -> list[str]:
    cleaned = [v for v in values if v]
    bad = [v for v in cleaned if v not in INTERVAL_MS]
    if bad:
        raise ValueError(f"{short(bad[0])} is not one of {' '.join(INTERVAL_MS)}")
    return cleaned


WATCH_BARS_PER_EVENT = 1000
_TOKEN_RE = re.compile(r"^p1\.(\d{1,15})\.(\d{0,15})$")
_STREAM_ID_RE = re.compile(r"^\d{1,20}-\d{1,20}$")


def _page_token(cursor_ms: int, end_ms: int | None) -> str:
    return f"p1.{cursor_ms}.{'' if end_ms is None else end_ms}"


def _parse_page_token(token: str) -> tuple[int, int | None]:
    match = _TOKEN_RE.match(token)
    if not match:
        raise InvalidArgument("page_token", f"{short(token)} is not a next_page_token from GetBars")
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def _deadline(context) -> float | None:
    """The client's deadline on the monotonic clock, or None when it set none."""
    remaining = context.time_remaining() if context is not None else None
    return None if remaining is None else time.monotonic() + remaining


async def _bounded(deadline: float | None, work):
    """Run ``work`` within the client's deadline, so a caller that gave up stops the work."""
    if deadline is None:
        return await work
    return await asyncio.wait_for(work, max(deadline - time.monotonic(), 0.001))


def _provenance_pb(info: SeriesInfo, first_ms: int | None = None, last_ms: int | None = None):
    """The provider runs of a series, or only those overlapping [first_ms, last_ms]."""
    return [fetch_pb2.SourceRange(first=to_timestamp(a), last=to_timestamp(b), source=p)
            for a, b, p in info.provenance
            if first_ms is None or last_ms is None or (b >= first_ms and a <= last_ms)]


@dataclass
class FetchSettings(ServiceSettings):
    provider: str = setting("simulated", "providers: live (coingecko,binance,kraken,coinbase), simulated (offline, "
                            "alone), csv (the --csv-file files), or a comma list such as 'binance,kraken' or "
                            "'csv,live'", _provider_name)
    csv_file: list[str] = setting([], "csv provider files as SYMBOL:INTERVAL=PATH, comma separated")
    history_days: int = setting(90, "days of history to backfill on first sight of a symbol", non_negative)
    refresh_s: float = setting(60.0, "seconds between refreshes of the watch list", non_negative)
    lease_s: float = setting(180.0, "seconds a replica's poll lease on a series lasts (renewed while a refresh "
                             "runs); must be longer than --refresh-s", positive)
    seed: int = setting(7, "seed of the simulated provider")
    provider_timeout_s: float = setting(120.0, "seconds one provider may take for a range before failover",
                                        non_negative)
    coingecko_api_key: str = setting("", "CoinGecko demo/pro API key (optional; prefer a _FILE)",
                                     redact=redact.value)
    coingecko_url: str = setting("https://api.coingecko.com/api/v3", "CoinGecko base URL")
    binance_url: str = setting("https://api.binance.com", "Binance base URL")
    kraken_url: str = setting("https://api.kraken.com", "Kraken base URL")
    coinbase_url: str = setting("https://api.exchange.coinbase.com", "Coinbase Exchange base URL")
    stream: str = setting("auto", "exchange WebSocket streams for the watch list: on, off, or auto (on with a "
                          "live exchange provider, off with csv or simulated)", _stream_mode)
    binance_ws_url: str = setting(BINANCE_WS, "Binance stream base URL", _ws_url)
    coinbase_ws_url: str = setting(COINBASE_WS, "Coinbase Exchange feed URL", _ws_url)
    kraken_ws_url: str = setting(KRAKEN_WS, "Kraken stream URL (a path ending in /v2 speaks v2, "
                                 "else v1)", _ws_url)
    stream_intervals: list[str] = setting([], "intervals the stream writes besides --interval, comma separated "
                                          "(all rolled up from the same minutes)", _intervals)
    stream_grace_s: float = setting(5.0, "seconds after a bar closes in which a late trade still updates it "
                                    "(later ones are dropped and counted)", non_negative)
    stream_backoff_s: float = setting(1.0, "first reconnect delay of a stream (doubles up to 60 s, jittered)",
                                      positive)
    stream_silence_s: float = setting(10.0, "seconds without a frame after which a heartbeating stream "
                                      "(Kraken, Coinbase) counts as dead", positive)
    stream_max_age_s: float = setting(0.0, "seconds after which a stream connection is renewed (0: the exchange's "
                                      "limit, Binance 23.5 h)", non_negative)

    service_name = "fetch"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.refresh_s > 0 and self.lease_s <= self.refresh_s:
            raise ValueError(f"--lease-s ({self.lease_s:g}) must be longer than --refresh-s ({self.refresh_s:g}), "
                             "or replicas would trade every series on every tick")
        if self.stream == "on" and not streamable(self.provider):
            raise ValueError("--stream on needs an exchange with a stream in --provider (binance, kraken, coinbase)")
        if "csv" in self.provider.split(","):
            if not self.csv_file:
                raise ValueError("--provider csv needs at least one --csv-file SYMBOL:INTERVAL=PATH")
            for spec in self.csv_file:  # refuse a bad file now, with one line, not on the first request
                try:
                    _symbol, interval, path = parse_spec(spec)
                    load_csv(path, interval)
                except CsvError as exc:
                    raise ValueError(str(exc)) from None


class FetchService(fetch_pb2_grpc.FetchServiceServicer):
    full_names = (SERVICE_NAME,)

    def __init__(self, settings: FetchSettings, redis: aioredis.Redis):
        self.settings = settings
        self.redis = redis
        self.store = PriceStore(redis)
        self.providers = build_providers(settings)
        self.ingestor = Ingestor(self.store, self.providers, settings.provider_timeout_s)
        files = [key for p in self.providers for key in getattr(p, "files", {})]
        self.leases = Leases(redis, int(settings.lease_s * 1000))
        self.scheduler = Scheduler(self.ingestor, self.leases, settings.symbols, settings.interval,
                                   settings.history_days, settings.refresh_s, files)
        self._scheduler_task: asyncio.Task | None = None
        self.streams = build_stream_manager(settings, self.providers, self.ingestor, self.scheduler.refresh)
        if self.streams is not None:
            self.scheduler.streamed_from = self.streams.streamed_from
        self._stream_task: asyncio.Task | None = None
        self._no_earlier: dict[tuple[str, str], int] = {}  # earliest start already asked for, with nothing older

    # --- runtime hooks -------------------------------------------------------------------
    def register(self, server) -> None:
        fetch_pb2_grpc.add_FetchServiceServicer_to_server(self, server)

    async def start(self) -> None:
        pass  # the scheduler starts once Redis answers (on_redis)

    async def on_redis(self, up: bool) -> None:
        if up and self._scheduler_task is None and self.settings.refresh_s > 0:
            self._scheduler_task = asyncio.create_task(self.scheduler.run(), name="scheduler")
        if up and self._stream_task is None and self.streams is not None:
            self._stream_task = asyncio.create_task(self.streams.run(), name="streams")

    async def stop(self) -> None:
        if self.streams is not None:
            await self.streams.stop()
        if self._scheduler_task:
            self._scheduler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler_task
        with contextlib.suppress(Exception):  # Redis may be gone: the leases then simply expire
            await self.leases.release_all()
        for provider in self.providers:
            await provider.close()

    # --- RPCs ----------------------------------------------------------------------------
    def _freshness(self, info: SeriesInfo | None, interval: str):
        return freshness_pb(info.last_ms if info else None, interval, self.settings.stale_after_bars, now_ms())

    async def ListSymbols(self, request, context):
        series = await self.store.list_series()
        contents = await self.store.contents()
        watched = set(self.settings.symbols)
        return fetch_pb2.ListSymbolsResponse(
            store=fetch_pb2.StoreContents(began=to_timestamp(contents.began_ms), lost=contents.lost)
            if contents is not None else None,
            series=[fetch_pb2.SeriesInfo(
                symbol=s.symbol, interval=s.interval, count=s.count, source=s.source, data_version=s.version,
                first=to_timestamp(s.first_ms) if s.first_ms is not None else None,
                last=to_timestamp(s.last_ms) if s.last_ms is not None else None,
                watched=s.symbol in watched and s.interval == self.settings.interval,
                origin=s.origin, provenance=_provenance_pb(s), freshness=self._freshness(s, s.interval))
                for s in series],
            watchlist=self.settings.symbols,
        )

    def _check_window(self, interval: str, start_ms: int | None, end_ms: int | None, lookback: str,
                      now: int) -> None:
        """Reject a bad or too wide window before any I/O."""
        for name, value in (("start", start_ms), ("end", end_ms)):
            if value is not None and value > now + MAX_FUTURE_MS:
                raise InvalidArgument(name, "is more than a day in the future")
        window = resolve_window(lookback, start_ms, end_ms, now)
        if window.start_ms is None:
            return
        bars = ((window.end_ms if window.end_ms is not None else now) - window.start_ms) // interval_ms(interval)
        if bars > MAX_WINDOW_BARS:
            raise ResourceExhausted(f"the window holds {bars} {interval} bars, more than MAX_WINDOW_BARS="
                                    f"{MAX_WINDOW_BARS}; narrow it or use a coarser interval")

    async def Backfill(self, request, context):
        symbol, interval = check_symbol(request.symbol), check_interval(request.interval or self.settings.interval)
        start, end = from_timestamp(request, "start"), from_timestamp(request, "end")
        if start is None:
            raise InvalidArgument("start", "a backfill needs a start time")
        now = now_ms()
        end = end if end is not None else now
        if start >= end:
            raise InvalidArgument("end", "end must be after start (the window is empty or inverted)")
        self._check_window(interval, start, end, "", now)
        if not self.ingestor.supports(symbol, interval):
            raise NotFound(f"unknown symbol {symbol} at {interval}: no provider serves it")
        deadline = _deadline(context)
        async with self.ingestor.lock(symbol, interval):
            result = await _bounded(deadline, self.ingestor.ingest(symbol, interval, start, end, deadline))
        await self.store.mark_used(symbol, interval)
        return fetch_pb2.BackfillResponse(
            symbol=symbol, interval=interval, bars_stored=result.written, source=result.source,
            data_version=result.version, gaps=gaps_to_pb(result.gaps, interval_ms(interval)))

    async def GetBars(self, request, context):
        symbol, interval = check_symbol(request.symbol), check_interval(request.interval or self.settings.interval)
        if request.limit < 0 or request.limit > MAX_WINDOW_BARS:
            raise InvalidArgument("limit", f"must be between 0 and {MAX_WINDOW_BARS}")
        if not 0 <= request.page_size <= MAX_PAGE_BARS:
            raise InvalidArgument("page_size", f"must be between 0 and MAX_PAGE_BARS={MAX_PAGE_BARS}")
        page_size = request.page_size or DEFAULT_PAGE_BARS
        start, end = from_timestamp(request, "start"), from_timestamp(request, "end")
        now = now_ms()
        self._check_window(interval, start, end, request.lookback, now)
        token = _parse_page_token(request.page_token) if request.page_token else None

        info = await self.store.info(symbol, interval)
        if token is None:
            window = resolve_window(request.lookback, start, end, now, info.last_ms if info else None)
            try:
                deadline = _deadline(context)
                await _bounded(deadline, self.ensure(symbol, interval, window.start_ms, window.end_ms, deadline))
            except Unavailable:
                if info is None or info.origin != self.ingestor.origin_of(symbol, interval):
                    raise
                # Only the older part of the window could not be loaded: answer with the stored bars
                # (true, just a shorter window); the first bar of the answer says where it starts.
                log.info("serving stored bars: no provider answered for the older part of the window",
                         extra={"symbol": symbol, "interval": interval})
            await self.store.mark_used(symbol, interval)
            info = await self.store.info(symbol, interval)
        if info is None:
            raise NotFound(f"no data for {symbol} at {interval}: the provider has none for it")
        if token is not None:
            lo, hi = token
        else:
            window = resolve_window(request.lookback, start, end, now, info.last_ms)
            lo, hi = window.start_ms, window.end_ms
            if request.limit:  # the newest `limit` bars of the window: find where they begin
                tail, _ = await self.store.read_page(symbol, interval, lo, hi, request.limit, newest=True,
                                                     columns=("ts",))
                if len(tail):
                    lo = int(tail["ts"][0])
        bars, more = await self.store.read_page(symbol, interval, lo, hi, page_size)
        step = interval_ms(interval)
        first, last = (int(bars["ts"][0]), int(bars["ts"][-1])) if len(bars) else (None, None)
        return fetch_pb2.GetBarsResponse(
            symbol=symbol, interval=interval, bars=await asyncio.to_thread(bars_to_pb, bars), source=info.source,
            gaps=gaps_to_pb(find_gaps(bars["ts"], step), step), data_version=info.version,
            next_page_token=_page_token(last + 1, hi) if more else "", freshness=self._freshness(info, interval),
            origin=info.origin, provenance=_provenance_pb(info, first, last) if first is not None else [])

    async def ensure(self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None,
                     deadline: float | None = None) -> None:
        """Fetch-through: the series from this process's providers, back to ``start_ms`` if given."""
        origin = self.ingestor.origin_of(symbol, interval)
        if origin is None:
            raise NotFound(f"unknown symbol {symbol} at {interval}: no provider serves it")
        key = (symbol, interval)

        def satisfied(info: SeriesInfo | None) -> bool:
            if info is None or info.origin != origin:
                return False
            return (start_ms is None or info.first_ms is None or info.first_ms <= start_ms
                    or self._no_earlier.get(key, start_ms + 1) <= start_ms)

        if satisfied(await self.store.info(symbol, interval)):
            return
        async with self.ingestor.lock(symbol, interval):
            info = await self.store.info(symbol, interval)  # another caller may have fetched it meanwhile
            if satisfied(info):
                return
            step = interval_ms(interval)
            if info is None or info.origin != origin:
                begin, finish = await self.ingestor.full_range(symbol, interval, self.settings.history_days)
                if start_ms is not None and not origin.startswith("csv:"):
                    begin, finish = start_ms // step * step, (end_ms if end_ms is not None else now_ms() + 1)
                await self.ingestor.ingest(symbol, interval, begin, finish, deadline)
            else:
                await self.ingestor.ingest(symbol, interval, start_ms // step * step, info.first_ms, deadline)
                info = await self.store.info(symbol, interval)
                if info is not None and info.first_ms is not None and info.first_ms > start_ms:
                    self._no_earlier[key] = start_ms  # nothing older exists: do not ask again

    async def WatchBars(self, request, context):
        symbols = {check_symbol(s, "symbols") for s in request.symbols}
        interval = check_interval(request.interval) if request.interval else ""
        if request.after and not _STREAM_ID_RE.match(request.after):
            raise InvalidArgument("after", f"{request.after[:30]!r} is not a resume_token from WatchBars")
        after = request.after or await waiting_out_outages(lambda: last_id(self.redis, UPDATES_LOG))
        async for entry_id, fields in read_stream(self.redis, UPDATES_LOG, after):
            event = json.loads(fields["event"])
            if (symbols and event["symbol"] not in symbols) or (interval and event["interval"] != interval):
                continue
            bars, _ = await waiting_out_outages(lambda e=event: self.store.read_page(
                e["symbol"], e["interval"], e["first"], e["last"] + 1, WATCH_BARS_PER_EVENT, newest=True))
            yield fetch_pb2.WatchBarsResponse(
                symbol=event["symbol"], interval=event["interval"], bars=bars_to_pb(bars),
                data_version=event["version"], source=event["source"], resume_token=entry_id,
                replaced=bool(event.get("replaced")))
