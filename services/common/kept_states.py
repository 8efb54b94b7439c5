"""Series states kept in memory between writes, so a warm read costs no Redis round trip.

Reading a state (meta and epoch, one MULTI) was most of a warm GetStats: ~180 µs, twice per call
with the benchmark. A state read here is kept until an update event for its series arrives on the
updates channel, and never longer than ``max_age_s`` (a writer that dies between its write and its
announcement loses the event; that costs at most this long).

Before a kept state is used, the events already sent to this process are applied: the subscription's
socket is polled, and whatever it holds is read first. Redis sends a PUBLISH to its subscribers
before it answers the publisher, so a write whose writer has returned (Fetch announces before it
answers) is never hidden from a read that starts after it, when the event travels the way the
writer's answer does (one network; a proxy on the subscription alone delays what is seen by its own
delay). That holds once Redis has taken the SUBSCRIBE: redis-py sends it without waiting, so nothing
is kept until its confirmation has been read (a read sent after that is served after it). The
subscription breaking (Redis restarted, empty or not; a failover) drops everything kept, and nothing
is kept until it is back; so does a reconnect redis-py makes by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import time

import redis.asyncio as aioredis
from services.common.loop_counter import LoopCounter
from services.common.redis_client import is_outage
from services.common.store import UPDATES_CHANNEL

log = logging.getLogger("cryptolens.series")

KEPT_LOOKUPS = LoopCounter("cryptolens_series_state_lookups",
                           "Series state lookups: kept in memory (hit) or read from Redis (miss)", ["result"])

_HIT, _MISS = KEPT_LOOKUPS.labels("hit"), KEPT_LOOKUPS.labels("miss")
MISSING = object()
RESUBSCRIBE_S = 1.0
_PENDING_WAIT_S = 0.05  # bytes are in the socket: the event loop reads them within one turn
_CONFIRM_WAIT_S = 0.5  # a slower confirmation is read by a later sync; nothing is kept until then


class KeptStates:
    def __init__(self, redis: aioredis.Redis, max_age_s: float = 2.0):
        self.redis = redis
        self.max_age_s = max_age_s
        self._states: dict[tuple[str, str], tuple[object, float]] = {}
        self._changes: dict[tuple[str, str], int] = {}  # events seen per series: a read that saw one is not kept
        self._subscription = 0  # counts subscriptions: events missed between two are unknown
        self._confirmed = 0  # the last subscription whose SUBSCRIBE Redis has answered
        self._pubsub = None
        self._retry_at = 0.0
        self._lock = asyncio.Lock()
        self._idle_drain: asyncio.Task | None = None
        self._unsupported = False
        self._polled_writer, self._poll = None, None  # the subscription's socket, registered to poll

    def mark(self, key: tuple[str, str]) -> tuple[int, int]:
        """Taken before reading a state from Redis; ``put`` keeps the state only if the subscription
        was confirmed when the read began and no event came since on it."""
        trusted = self._subscription if self._confirmed == self._subscription else 0
        return trusted, self._changes.get(key, 0)

    def put(self, key: tuple[str, str], state, mark: tuple[int, int]) -> None:
        if self._pubsub is not None and mark[0] and self.mark(key) == mark:
            self._states[key] = (state, time.monotonic() + self.max_age_s)

    def forget(self, key: tuple[str, str]) -> None:
        """Drop the kept state of one series: for a caller told of a write by another channel."""
        self._apply_change(key)

    async def get(self, key: tuple[str, str], synced: bool = False):
        """The kept state (``None`` for a series the store does not have), or ``MISSING``.

        ``synced``: the caller's call already synced (a second series of one answer). Events that
        arrived since are of writes that ended after the call began, which it need not see."""
        if not synced and not await self._sync():
            _MISS.inc()
            return MISSING
        kept = self._states.get(key)
        if kept is None or kept[1] < time.monotonic():
            _MISS.inc()
            return MISSING
        _HIT.inc()
        return kept[0]

    async def close(self) -> None:
        if self._idle_drain is not None:
            self._idle_drain.cancel()
        await self._drop()

    async def _sync(self) -> bool:
        """Apply every event already sent to this process; False while not subscribed."""
        if self._pubsub is not None and not self._lock.locked():
            try:
                if not self._socket_readable() and not await self._pubsub.connection.can_read():
                    return True  # the usual case: nothing arrived since the last sync
            except Exception:  # noqa: BLE001 - a broken subscription: the locked path below handles it
                pass
        async with self._lock:
            try:
                if self._pubsub is None and not await self._subscribe():
                    return False
                empty_reads = 0
                while empty_reads < 2:  # bytes that never make a message (TLS records) end it too
                    in_socket = self._socket_readable()
                    if not in_socket and not await self._pubsub.connection.can_read():
                        break  # nothing was sent to us that we have not applied
                    message = await self._pubsub.get_message(timeout=_PENDING_WAIT_S if in_socket else 0)
                    if message is None:
                        empty_reads += 1
                    else:
                        empty_reads = 0
                        self._apply(message)
                return True
            except Exception as exc:  # noqa: BLE001 - any failure of the subscription: keep nothing
                if not (is_outage(exc) or isinstance(exc, OSError)):
                    log.warning("update subscription failed; states are read from Redis",
                                extra={"error": str(exc)[:200]})
                await self._drop()
                return False

    def _apply(self, message: dict) -> None:
        if message["type"] == "subscribe":
            self._confirmed = self._subscription
            return
        try:
            event = json.loads(message["data"])
            key = (event["symbol"], event["interval"])
        except (ValueError, KeyError, TypeError):
            self._states.clear()  # an event we cannot read may be about anything
            return
        self._apply_change(key)

    def _apply_change(self, key: tuple[str, str]) -> None:
        self._changes[key] = self._changes.get(key, 0) + 1
        self._states.pop(key, None)

    @staticmethod
    def _socket(pubsub):
        writer = getattr(getattr(pubsub, "connection", None), "_writer", None)
        return writer.get_extra_info("socket") if writer is not None else None

    def _socket_readable(self) -> bool:
        """Bytes wait in the subscription's socket; a socket that cannot be polled counts as pending:
        none, or one closing (a reset connection: its number may already be another socket's)."""
        writer = getattr(self._pubsub.connection, "_writer", None)
        if writer is not self._polled_writer:  # a new connection (redis-py reconnects by itself)
            self._polled_writer, self._poll = writer, None
            sock = writer.get_extra_info("socket") if writer is not None else None
            if sock is not None:
                self._poll = select.poll()
                self._poll.register(sock, select.POLLIN)
        return self._poll is None or writer.is_closing() or bool(self._poll.poll(0))

    async def _subscribe(self) -> bool:
        if self._unsupported or time.monotonic() < self._retry_at:
            return False
        self._retry_at = time.monotonic() + RESUBSCRIBE_S
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(UPDATES_CHANNEL)
        except Exception:  # noqa: BLE001 - Redis down (or no pub/sub here): read every state, try again later
            await pubsub.aclose()
            return False
        if self._socket(pubsub) is None or not hasattr(pubsub.connection, "register_connect_callback"):
            # This client's pub/sub does not show what the guarantee above needs (its socket, a
            # reconnect hook): keep nothing rather than keep states on a weaker promise.
            log.info("states are read from Redis on every call: this client's pub/sub cannot be polled")
            self._unsupported = True
            await pubsub.aclose()
            return False
        self._pubsub = pubsub
        self._subscription += 1
        # redis-py reconnects a broken subscription by itself; what was sent meanwhile is lost.
        pubsub.connection.register_connect_callback(self._reconnected)
        if self._idle_drain is None or self._idle_drain.done():
            self._idle_drain = asyncio.get_running_loop().create_task(self._drain_while_idle())
        # Its confirmation now, so the call that subscribed keeps what it reads (one round trip, once).
        reply = await pubsub.get_message(timeout=_CONFIRM_WAIT_S)
        if reply is not None:
            self._apply(reply)
        return True

    def _reconnected(self, _connection) -> None:
        self._states.clear()
        self._subscription += 1

    async def _drop(self) -> None:
        self._states.clear()
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except Exception:  # noqa: BLE001 - the connection is already gone
                pass

    async def _drain_while_idle(self) -> None:
        """Events are read even when nobody asks, so Redis never buffers them up for a quiet process."""
        while self._pubsub is not None:
            await asyncio.sleep(1.0)
            await self._sync()
