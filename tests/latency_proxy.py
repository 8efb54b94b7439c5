"""A TCP proxy on loopback that delays every chunk by an adjustable latency: a slow dependency.

    with LatencyProxy(upstream_port) as proxy:
        proxy.delay_s = 3.0    # from now on, every chunk in either direction waits 3 s
        ... connect to proxy.addr ...
        proxy.reset()          # every open connection ends with a TCP reset, as a network failure

It runs its own event loop in a background thread, so it serves any test, sync or async.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

CHUNK = 65536


class LatencyProxy:
    def __init__(self, upstream_port: int, delay_s: float = 0.0):
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._open: set[asyncio.StreamWriter] = set()  # both ends of every proxied connection

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(CHUNK):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _serve(self, client_reader, client_writer) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        pair = {client_writer, upstream_writer}
        self._open |= pair
        try:
            await asyncio.gather(self._pump(client_reader, upstream_writer), self._pump(upstream_reader, client_writer))
        finally:
            self._open -= pair

    def reset(self) -> None:
        """End every open connection with a TCP RST (SO_LINGER 0), both ways; new ones are served."""
        def abort_all():
            for writer in list(self._open):
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
        done = threading.Event()
        self._loop.call_soon_threadsafe(lambda: (abort_all(), done.set()))
        done.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def __enter__(self) -> "LatencyProxy":
        self._thread.start()
        self._ready.wait(10)
        return self

    async def _close(self) -> None:
        """End every connection's tasks, so none is left pending when the loop stops."""
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
