"""Streams for the watch list: one connection per exchange, one bar builder, batched writes, repair.

Which exchange streams a symbol: the first exchange with a stream in the provider chain
(``live`` = coingecko, binance, kraken, coinbase → Binance). Each watched symbol is streamed by one
exchange only, so a series keeps one source. Bars go to Redis through ``PriceStore.write`` (the
same merge rules and update events as REST polling: the open bar is written FLAG_PARTIAL).

Repair: after every (re)connect, each symbol's minutes since the open of its coarsest open bar
are seeded from the same exchange's REST klines (frames arriving meanwhile are held and applied
after); then, per streamed series, the bars between the newest stored one and where the stream
now begins are fetched from REST (what was missed while the stream was down), and the
scheduler's refresh runs (first backfill, older gaps). A Coinbase trade-id gap triggers the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Awaitable, Callable

from services.common.intervals import MINUTE_MS, interval_ms
from services.fetch.ingest import Ingestor
from services.fetch.providers.base import Provider
from services.fetch.providers.registry import LIVE_CHAIN
from services.fetch.streams.binance import BinanceStream
from services.fetch.streams.builder import BarBuilder
from services.fetch.streams.coinbase import CoinbaseStream
from services.fetch.streams.connection import StreamConnection
from services.fetch.streams.kraken import KrakenStream
from services.fetch.streams.messages import Kline, Parsed, Trade
from services.fetch.streams.metrics import GAPS, LATE

log = logging.getLogger("cryptolens.fetch.streams")

ADAPTERS = {"binance": BinanceStream, "kraken": KrakenStream, "coinbase": CoinbaseStream}
IDLE_FLUSH_S = 0.25  # bars close at their boundary even when no frame arrives
SEED_TIMEOUT_S = 30.0

Repair = Callable[[str, str], Awaitable[None]]


def _now_ms() -> int:
    return int(time.time() * 1000)


class StreamManager:
    def __init__(self, ingestor: Ingestor, rest: dict[str, Provider], assignments: dict[str, list[str]],
                 urls: dict[str, str], intervals: list[str], repair: Repair, *, grace_s: float = 5.0,
                 backoff_s: float = 1.0, silence_s: float | None = None, max_age_s: float | None = None):
        self.ingestor, self.store = ingestor, ingestor.store
        self.rest, self.repair, self.intervals = rest, repair, intervals
        symbols = [s for group in assignments.values() for s in group]
        self.builder = BarBuilder(symbols, intervals, int(grace_s * 1000))
        self.provider_of = {s: name for name, group in assignments.items() for s in group}
        self.connections: dict[str, StreamConnection] = {}
        for name, group in assignments.items():
            adapter = ADAPTERS[name](group, urls[name])
            self.connections[name] = StreamConnection(
                adapter, self._on_frame, lambda n=name: self._on_up(n), lambda n=name: self._on_down(n),
                backoff_s=backoff_s, silence_s=silence_s, max_age_s=max_age_s)
        self._late = {name: LATE.labels(name) for name in assignments}
        self._gaps = {name: GAPS.labels(name) for name in assignments}
        self._held: dict[str, list] = {}  # symbol → events received while its seed runs
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._repairs: set[asyncio.Task] = set()
        self._write_failing = False

    # --- lifecycle -----------------------------------------------------------------------
    async def run(self) -> None:
        self._tasks = [asyncio.create_task(c.run(), name=f"stream-{n}") for n, c in self.connections.items()]
        self._tasks.append(asyncio.create_task(self._writer(), name="stream-writer"))
        await asyncio.gather(*self._tasks)

    async def stop(self) -> None:
        for task in [*self._tasks, *self._repairs]:
            task.cancel()
        for task in [*self._tasks, *self._repairs]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def streamed_from(self, symbol: str, interval: str) -> int | None:
        """Open time from which the stream writes this series now (None: it does not)."""
        if interval not in self.intervals or symbol not in self.provider_of:
            return None
        return self.builder.state[symbol].covered_from

    # --- frames --------------------------------------------------------------------------
    def _on_frame(self, parsed: Parsed, now_ms: int) -> None:
        if parsed.gap:
            provider = self.provider_of[parsed.gap_symbol]
            self._gaps[provider].inc()
            log.warning("stream lost messages; repairing from REST", extra={"provider": provider, "gap": parsed.gap})
            self._spawn_repair(provider, [parsed.gap_symbol])
        if not parsed.events:
            return
        builder = self.builder
        late_before = builder.late_dropped
        changed = False
        for event in parsed.events:
            if self._held and event.symbol in self._held:
                self._held[event.symbol].append(event)
            elif type(event) is Trade:
                changed |= builder.add_trade(event.symbol, event.ts_ms, event.price, event.qty)
            else:
                changed |= self._apply(event)
        if builder.late_dropped != late_before:
            self._late[self.provider_of[parsed.events[0].symbol]].inc(builder.late_dropped - late_before)
        if changed:
            self._wake.set()

    def _apply(self, event) -> bool:
        if isinstance(event, Trade):
            return self.builder.add_trade(event.symbol, event.ts_ms, event.price, event.qty)
        if isinstance(event, Kline):
            return self.builder.add_kline(event.symbol, event.open_ms, event.open, event.high, event.low,
                                          event.close, event.volume, event.event_ms, event.closed)
        return False

    # --- repair --------------------------------------------------------------------------
    async def _on_up(self, provider: str) -> None:
        self._spawn_repair(provider, [s for s, p in self.provider_of.items() if p == provider])

    def _on_down(self, provider: str) -> None:
        for symbol, p in self.provider_of.items():
            if p == provider:
                self.builder.uncover(symbol)

    def _spawn_repair(self, provider: str, symbols: list[str]) -> None:
        for symbol in symbols:
            self._held.setdefault(symbol, [])
        task = asyncio.create_task(self._repair(provider, symbols))
        self._repairs.add(task)
        task.add_done_callback(self._repairs.discard)

    async def _repair(self, provider: str, symbols: list[str]) -> None:
        for symbol in symbols:
            try:
                await self._seed(provider, symbol)
            finally:
                for event in self._held.pop(symbol, []):
                    self._apply(event)
                self._wake.set()
        for symbol in symbols:
            for interval in self.intervals:
                try:
                    await self._fill_to_stream(symbol, interval)
                    await self.repair(symbol, interval)
                except Exception as exc:  # noqa: BLE001 - REST down: the next refresh tick tries again
                    log.warning("gap repair after reconnect failed; the scheduler retries",
                                extra={"symbol": symbol, "interval": interval, "error": str(exc)[:200]})

    async def _fill_to_stream(self, symbol: str, interval: str) -> None:
        """REST bars from the newest stored one up to where the stream's bars begin."""
        covered = self.builder.state[symbol].covered_from
        if covered is None:
            return
        async with self.ingestor.lock(symbol, interval):
            newest, _ = await self.store.read_page(symbol, interval, None, covered, 1, newest=True, columns=("ts",))
            if len(newest) and int(newest["ts"][-1]) + interval_ms(interval) < covered:
                await self.ingestor.ingest(symbol, interval, int(newest["ts"][-1]), covered)

    async def _seed(self, provider: str, symbol: str) -> None:
        sent = _now_ms()
        start = self.builder.seed_start(sent)
        try:
            bars = await asyncio.wait_for(self.rest[provider].fetch_bars(symbol, "1m", start, sent + MINUTE_MS),
                                          SEED_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - no seed: count from the next minute, REST keeps the rest
            self.builder.cover_from_next_minute(symbol, _now_ms())
            log.warning("stream seed from REST failed; bars before the next minute stay with REST polling",
                        extra={"symbol": symbol, "provider": provider, "error": str(exc)[:200]})
            return
        # The REST answer reflects the exchange somewhere between request and reply: take the middle.
        self.builder.seed(symbol, bars, start, (sent + _now_ms()) // 2)

    # --- writes --------------------------------------------------------------------------
    async def _writer(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_FLUSH_S)
            self._wake.clear()
            batches = self.builder.take_dirty(_now_ms())
            if batches:
                await asyncio.gather(*(self._write(s, i, bars) for (s, i), bars in batches.items()))

    async def _write(self, symbol: str, interval: str, bars) -> None:
        provider = self.provider_of[symbol]
        try:
            await self.store.write(symbol, interval, bars, provider, self.rest[provider].origin_of(symbol, interval))
        except Exception as exc:  # noqa: BLE001 - Redis down: keep the bars and write them later
            self.builder.mark_dirty(symbol, bars, interval)
            if not self._write_failing:
                log.warning("stream bars not written; retrying", extra={"symbol": symbol, "error": str(exc)[:200]})
            self._write_failing = True
            await asyncio.sleep(IDLE_FLUSH_S)
        else:
            if self._write_failing:
                log.info("stream bars written again")
            self._write_failing = False


def streamable(provider_setting: str) -> bool:
    """Does a --provider value include an exchange with a stream?"""
    names = {n for part in provider_setting.split(",") for n in (LIVE_CHAIN if part == "live" else (part,))}
    return bool(names & set(ADAPTERS))


def build_stream_manager(settings, providers: list[Provider], ingestor: Ingestor,
                         repair: Repair) -> StreamManager | None:
    """The manager for a Fetch's settings, or None when streams are off or no exchange can stream."""
    rest = {p.name: p for p in providers if p.name in ADAPTERS and p.origin == "live"}
    if settings.stream == "off" or not rest:
        return None
    streamer = next(p.name for p in providers if p.name in rest)  # the first in the chain
    urls = {"binance": settings.binance_ws_url, "kraken": settings.kraken_ws_url, "coinbase": settings.coinbase_ws_url}
    intervals = list(dict.fromkeys([settings.interval, *settings.stream_intervals]))
    # A series served by a csv file keeps its file: one origin per series, never streamed over.
    symbols = [s for s in settings.symbols if all(ingestor.origin_of(s, i) == "live" for i in intervals)]
    if not symbols:
        return None
    return StreamManager(ingestor, rest, {streamer: symbols}, urls, intervals, repair,
                         grace_s=settings.stream_grace_s, backoff_s=settings.stream_backoff_s,
                         silence_s=settings.stream_silence_s or None, max_age_s=settings.stream_max_age_s or None)
