"""One exchange stream connection, kept alive: connect, subscribe, read, and reconnect on any loss.

- Reconnect with exponential backoff and full jitter (``backoff_s`` doubling up to ``backoff_max_s``,
  each wait drawn from [delay/2, delay]); the delay resets once a connection has delivered data.
- Subscribe messages go out right after the handshake (Coinbase drops a client silent for 5 s).
- Liveness: the server's pings are answered at once (Binance pings every 20 s and drops a client
  without a pong within a minute); we ping every 20 s too and drop a connection whose pong takes
  more than 10 s; ``silence_s`` (Kraken and Coinbase heartbeats, ~1 s) closes a
  feed that went quiet; ``max_age_s`` retires a connection before an exchange's limit (Binance 24 h);
  a ``shutdown`` frame reconnects at once.
- Frames are handed to ``on_frame`` one by one; a malformed one is counted and skipped. Frame
  counts and the lag are kept in plain ints and published to Prometheus every PUBLISH_EVERY frames
  and at least once a second (a metric update per frame would cost a sixth of the frame budget).
``on_up`` runs after each subscribe, ``on_down`` after each loss: the manager's repair hooks.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Awaitable, Callable

import aiohttp

from services.fetch.streams.messages import BadFrame, Parsed
from services.fetch.streams.metrics import CONNECTED, FRAMES, LAG, RECONNECTS

log = logging.getLogger("cryptolens.fetch.streams")

PING_INTERVAL_S = 20.0  # aiohttp's heartbeat: a ping every 20 s, the pong due within half of it
OPEN_TIMEOUT_S = 10.0
MAX_FRAME_BYTES = 4 * 1024 * 1024
PUBLISH_EVERY = 256
KINDS = ("trade", "kline", "heartbeat", "control", "ignored", "error", "shutdown", "malformed")


class _Retire(Exception):
    """The connection is closed on purpose (silence, age limit, shutdown notice)."""


class StreamConnection:
    def __init__(self, adapter, on_frame: Callable[[Parsed, int], None],
                 on_up: Callable[[], Awaitable[None]], on_down: Callable[[], None],
                 backoff_s: float = 1.0, backoff_max_s: float = 60.0, silence_s: float | None = None,
                 max_age_s: float | None = None):
        self.adapter = adapter
        self.on_frame, self.on_up, self.on_down = on_frame, on_up, on_down
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        # Only feeds with an application heartbeat can be judged by silence (Binance klines stop on quiet pairs).
        self.silence_s = (silence_s or adapter.silence_s) if adapter.silence_s else 0.0
        self.max_age_s = adapter.max_age_s if max_age_s is None else max_age_s
        name = adapter.name
        self.frames = {k: FRAMES.labels(name, k) for k in KINDS}
        self._counts = dict.fromkeys(KINDS, 0)
        self._unpublished = 0
        self._lag_ms: int | None = None
        self.connected, self.reconnects, self.lag = CONNECTED.labels(name), RECONNECTS.labels(name), LAG.labels(name)
        self.connected.set(0)
        self.connections = 0

    async def run(self) -> None:
        delay = self.backoff_s
        while True:
            self._got_data = False
            try:
                await self._session()
            except asyncio.CancelledError:
                self.connected.set(0)
                self.publish_metrics()
                raise
            except Exception as exc:  # noqa: BLE001 - whatever broke this connection, the next one may work
                log.warning("stream connection lost; reconnecting",
                            extra={"provider": self.adapter.name, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            self.connected.set(0)
            self.publish_metrics()
            self.on_down()
            self.reconnects.inc()
            delay = self.backoff_s if self._got_data else min(delay * 2, self.backoff_max_s)
            await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _session(self) -> None:
        """One connection, until it fails or is retired (always by an exception)."""
        timeout = aiohttp.ClientTimeout(total=None, connect=OPEN_TIMEOUT_S, sock_connect=OPEN_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http, \
                http.ws_connect(self.adapter.url(), heartbeat=PING_INTERVAL_S, compress=0,
                                max_msg_size=MAX_FRAME_BYTES) as ws:
            self.adapter.reset()
            for message in self.adapter.subscribe_messages():
                await ws.send_str(message)
            self.connections += 1
            self.connected.set(1)
            log.info("stream connected", extra={"provider": self.adapter.name, "url": self.adapter.url()[:200]})
            await self.on_up()
            opened = last = time.monotonic()
            retired: list[str] = []  # the watchdog's reason, when it closes the connection
            watchdog = asyncio.create_task(self._watch(ws, lambda: last, opened, retired))
            try:
                async for message in ws:
                    if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        last = time.monotonic()
                        self._got_data = True
                        self._frame(message.data)
                    elif message.type is aiohttp.WSMsgType.ERROR:
                        raise _Retire(f"read failed: {ws.exception()}")
            finally:
                watchdog.cancel()
            raise _Retire(retired[0] if retired else f"closed by the exchange (code {ws.close_code})")

    async def _watch(self, ws, last_frame: Callable[[], float], opened: float, retired: list[str]) -> None:
        """Closes a feed that went silent or reached its age limit."""
        while True:
            await asyncio.sleep(min(1.0, self.silence_s or 1.0))
            self.publish_metrics()
            now = time.monotonic()
            if self.silence_s and now - last_frame() > self.silence_s:
                retired.append(f"no frame for {self.silence_s:g} s")
            elif self.max_age_s and now - opened > self.max_age_s:
                retired.append(f"connection retired after {self.max_age_s:g} s (exchange limit)")
            if retired:
                await ws.close(code=1000, message=retired[0][:100].encode())
                return

    def publish_metrics(self) -> None:
        for kind, count in self._counts.items():
            if count:
                self.frames[kind].inc(count)
                self._counts[kind] = 0
        if self._lag_ms is not None:
            self.lag.set(max(0.0, self._lag_ms / 1000))
        self._unpublished = 0

    def _frame(self, text) -> None:
        self._unpublished += 1
        if self._unpublished >= PUBLISH_EVERY:
            self.publish_metrics()
        try:
            parsed = self.adapter.parse(text)
        except BadFrame as exc:
            self._counts["malformed"] += 1
            log.debug("malformed frame skipped", extra={"provider": self.adapter.name, "error": str(exc)[:120]})
            return
        self._counts[parsed.kind] += 1
        now = int(time.time() * 1000)
        if parsed.event_ms is not None:
            self._lag_ms = now - parsed.event_ms
        if parsed.kind == "error":
            log.warning("exchange stream error frame", extra={"provider": self.adapter.name, "frame": str(text)[:200]})
        self.on_frame(parsed, now)
        if parsed.kind == "shutdown":
            raise _Retire("the exchange announced a shutdown")
