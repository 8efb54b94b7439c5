"""A real local WebSocket server replaying the recorded exchange sessions in shared/data/ws/.

    with WsReplayServer("binance_combined_stream_session.jsonl", speed=5) as ws:
        ws.malformed = {3, 10}        # frames sent as broken JSON instead
        ws.drop = {42}                # frames never sent (a Coinbase sequence gap)
        ws.disconnect_after = 100     # the connection is closed after 100 frames (once)
        ws.silence_after = 20         # after 20 frames: nothing more, connection left open (once)
        ws.subscribe_within_s = 5     # close a client that sent nothing within 5 s (Coinbase)
        ws.inject = {100: [text]}     # extra frames sent just before frame 100 (serverShutdown, a late trade)
        ws.pause_before = 500         # hold the feed before frame 500 (connection open) ...
        ws.resume()                   # ... until told to go on
        ws.push(text)                 # send a frame now to every open connection
    WsReplayServer(..., ping_interval_s=20, ping_timeout_s=60)  # Binance's rule: ping, close without a pong
        ... client connects to ws.url ...
        ws.connections                # one record per connection: path, messages received, frames sent

Timestamps are shifted by a whole number of minutes (``delta_ms``), bar boundaries intact, so the
session starts 10-70 s after the server does: a client that connects within 10 s has every minute
of it from that minute's start (a client never sees a whole minute it joined late). Frames go out at the recorded pace
divided by ``speed``. A session is one exchange's feed that goes on while no client listens: a
new connection continues after the last frame sent, never replays the start. Runs its own event
loop in a background thread on 127.0.0.1, a free port.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from tests.conftest import SHARED_DATA

WS_DATA = SHARED_DATA / "ws"
MINUTE_MS = 60_000
LEAD_MS = 10_000  # the session starts at least this long after the server
MALFORMED = '{"stream":"x@aggTrade","data":{"e":"aggTrade","p":'  # cut off mid-frame


def _iso_shift(text: str, delta_ms: int) -> str:
    moved = datetime.fromisoformat(text) + timedelta(milliseconds=delta_ms)
    return moved.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_ms(frame) -> int | None:
    """The exchange time of a recorded frame, if it carries one."""
    if isinstance(frame, dict):
        data = frame.get("data", frame)
        if isinstance(data, dict) and "E" in data:
            return int(data["E"])
        if isinstance(frame.get("time"), str):
            return int(datetime.fromisoformat(frame["time"]).timestamp() * 1000)
    if isinstance(frame, list) and len(frame) >= 4 and frame[-2] == "trade":
        return int(float(frame[1][0][2]) * 1000)
    return None


def shift(frame, delta_ms: int):
    """The frame with every exchange time moved by ``delta_ms`` (Binance, Coinbase, Kraken v1 trade)."""
    if isinstance(frame, dict):
        data = frame.get("data", frame)
        if isinstance(data, dict):
            for key in ("E", "T"):
                if key in data:
                    data[key] += delta_ms
            if isinstance(data.get("k"), dict):
                data["k"]["t"] += delta_ms
                data["k"]["T"] += delta_ms
        if isinstance(frame.get("time"), str):
            frame["time"] = _iso_shift(frame["time"], delta_ms)
    elif isinstance(frame, list) and len(frame) >= 4 and frame[-2] == "trade":
        for row in frame[1]:
            row[2] = f"{float(row[2]) + delta_ms / 1000:.6f}"
    return frame


@dataclass
class Connection:
    path: str
    opened: float
    received: list[tuple[float, str]] = field(default_factory=list)  # (seconds after open, message)
    sent: int = 0
    closed_by_server: str = ""


class WsReplayServer:
    def __init__(self, session: str, speed: float = 1.0, *, data_dir: Path = WS_DATA,
                 ping_interval_s: float | None = None, ping_timeout_s: float | None = None):
        self.ping_interval_s, self.ping_timeout_s = ping_interval_s, ping_timeout_s
        lines = (data_dir / session).read_text().splitlines()
        ts_file = data_dir / session.replace(".jsonl", ".ts.txt")
        times = [float(t) for t in ts_file.read_text().split()] if ts_file.exists() else [0.0] * len(lines)
        frames = [json.loads(line) for line in lines]
        self.offsets = [t - times[0] for t in times]
        first = next(t for t in map(event_ms, frames) if t is not None)
        self.delta_ms = -(-(int(time.time() * 1000) + LEAD_MS - first) // MINUTE_MS) * MINUTE_MS
        self.first_event_ms = first + self.delta_ms
        self.frames = [json.dumps(shift(f, self.delta_ms), separators=(",", ":")) for f in frames]
        self.speed = speed
        self.malformed: set[int] = set()
        self.drop: set[int] = set()
        self.disconnect_after: int | None = None
        self.silence_after: int | None = None
        self.subscribe_within_s: float | None = None
        self.pause_before: int | None = None
        self.inject: dict[int, list[str]] = {}
        self._resumed = threading.Event()
        self.connections: list[Connection] = []
        self._open: set = set()
        self.cursor = 0  # index of the next frame of the session
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> "WsReplayServer":
        self._thread = threading.Thread(target=self._serve_forever, daemon=True, name="ws-replay")
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the WebSocket replay server did not start")
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def resume(self) -> None:
        self._resumed.set()

    def push(self, text: str) -> None:
        async def send_all():
            for ws in list(self._open):
                await ws.send(text)
        asyncio.run_coroutine_threadsafe(send_all(), self._loop).result(10)

    @property
    def paused(self) -> bool:
        return self.pause_before is not None and self.cursor == self.pause_before

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _serve_forever(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", 0, compression=None, ping_interval=self.ping_interval_s,
                         ping_timeout=self.ping_timeout_s) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    # --- one connection ------------------------------------------------------------------
    async def _handle(self, ws) -> None:
        conn = Connection(ws.request.path, time.monotonic())
        self.connections.append(conn)
        self._open.add(ws)
        reader = asyncio.create_task(self._read(ws, conn))
        try:
            if self.subscribe_within_s is not None:
                deadline = time.monotonic() + self.subscribe_within_s
                while not conn.received and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                if not conn.received:
                    conn.closed_by_server = "no subscribe in time"
                    await ws.close(1008, "subscribe within 5 s")
                    return
            await self._send_session(ws, conn)
            await ws.wait_closed()
        except ConnectionClosed:
            pass  # the client left
        finally:
            self._open.discard(ws)
            reader.cancel()

    async def _read(self, ws, conn: Connection) -> None:
        async for message in ws:
            conn.received.append((time.monotonic() - conn.opened, message))

    async def _send_session(self, ws, conn: Connection) -> None:
        start, base = time.monotonic(), self.offsets[self.cursor] if self.cursor < len(self.frames) else 0.0
        while self.cursor < len(self.frames):
            i = self.cursor
            if i == self.pause_before:
                while not self._resumed.is_set():
                    await asyncio.sleep(0.02)
                self.pause_before = None
                start, base = time.monotonic(), self.offsets[i]
            wait = start + (self.offsets[i] - base) / self.speed - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.silence_after is not None and conn.sent >= self.silence_after:
                self.silence_after = None
                conn.closed_by_server = "silent"
                return  # the connection stays open; nothing more comes
            if self.disconnect_after is not None and conn.sent >= self.disconnect_after:
                self.disconnect_after = None
                conn.closed_by_server = "disconnect"
                await ws.close(1011, "injected disconnect")
                return
            for extra in self.inject.pop(i, []):
                await ws.send(extra)
            self.cursor += 1
            if i in self.drop:
                continue
            await ws.send(MALFORMED if i in self.malformed else self.frames[i])
            conn.sent += 1
