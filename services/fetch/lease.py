"""Leases in Redis so several Fetch replicas never poll the same series at the same time.

A lease is ``SET key owner NX PX ttl``; only the owner may renew or release it (compare and
act in one Lua script, so an expired-and-retaken lease is never touched by its old owner).
``hold`` keeps a lease renewed while work runs, however long the work takes; ``release_all``
gives every lease back on stop so another replica takes over at once.

Spread: every replica heartbeats into one sorted set (scored by Redis' own clock, so hosts' clocks
do not matter); the members seen within a lease ttl are the live replicas, and ``quota`` is how
many series this one should hold: the live replicas, in the order of their ids, split the series
as evenly as whole numbers allow, so the quotas add up to the series count. A replica that dies
stops heartbeating, so within a ttl the others' quotas grow and they take its expired leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import AsyncIterator

import redis.asyncio as aioredis

from services.common.fair_share import fair_share

log = logging.getLogger("cryptolens.fetch.lease")

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
# Heartbeat, prune the replicas not seen within a ttl, list the rest: one atomic step on Redis' clock.
_HEARTBEAT = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('zremrangebyscore', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('zadd', KEYS[1], now, ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[2])
return redis.call('zrange', KEYS[1], 0, -1)
"""
REPLICAS_KEY = "cl:v1:fetch:replicas"


def lease_key(symbol: str, interval: str) -> str:
    return f"cl:v1:lease:{{{symbol}:{interval}}}"


class Leases:
    def __init__(self, redis: aioredis.Redis, ttl_ms: int, owner: str | None = None):
        if ttl_ms <= 0:
            raise ValueError("a lease must last longer than 0 ms")
        self.redis = redis
        self.ttl_ms = ttl_ms
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._held: set[tuple[str, str]] = set()

    async def acquire(self, symbol: str, interval: str) -> bool:
        """Take the lease, or renew it if this process holds it already."""
        key = lease_key(symbol, interval)
        # Noted before asking: a stop that cancels this call mid-way still releases what Redis granted
        # (releasing a lease someone else holds is a no-op).
        self._held.add((symbol, interval))
        if await self.redis.set(key, self.owner, nx=True, px=self.ttl_ms):
            return True
        renewed = bool(await self._renew(keys=[key], args=[self.owner, self.ttl_ms]))
        if not renewed:
            self._held.discard((symbol, interval))
        return renewed

    @contextlib.asynccontextmanager
    async def hold(self, symbol: str, interval: str) -> AsyncIterator[bool]:
        """Yields whether this replica holds the lease; while it does, the lease is renewed every
        third of its ttl until the block ends (the lease stays taken after, until expiry or release)."""
        if not await self.acquire(symbol, interval):
            yield False
            return
        done = asyncio.Event()
        renewer = asyncio.create_task(self._keep(symbol, interval, done), name=f"lease-{symbol}-{interval}")
        try:
            yield True
        finally:
            # Told to stop rather than cancelled: a renewal in flight finishes its Redis round trip
            # (a command cancelled between send and reply can leave the shared pool's connection stuck).
            # Shielded: a cancellation of the caller while it waits here stays the caller's (unshielded
            # it went to the renewer, which was ending anyway and ate it, and the caller ran on); the
            # caller still waits for the renewer, so nothing renews after a stop released the lease.
            done.set()
            try:
                await asyncio.shield(renewer)
            except asyncio.CancelledError:
                await renewer
                raise

    async def _keep(self, symbol: str, interval: str, done: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.ttl_ms / 3000)
            if done.is_set():
                return
            try:
                if not await self.acquire(symbol, interval):
                    log.warning("lease lost during a refresh", extra={"symbol": symbol, "interval": interval})
                    return
            except Exception as exc:  # noqa: BLE001 - Redis down: the lease may lapse, the work is idempotent
                log.debug("lease renewal failed", extra={"symbol": symbol, "error": str(exc)})

    async def release(self, symbol: str, interval: str) -> None:
        self._held.discard((symbol, interval))
        await self._release(keys=[lease_key(symbol, interval)], args=[self.owner])

    async def release_all(self) -> None:
        for symbol, interval in list(self._held):
            await self.release(symbol, interval)
        await self.redis.zrem(REPLICAS_KEY, self.owner)  # leaving: the others' quotas grow at once

    def holds(self, symbol: str, interval: str) -> bool:
        return (symbol, interval) in self._held

    async def quota(self, n_series: int) -> int:
        """Heartbeats, then: how many of ``n_series`` this replica should hold. Each live replica gets
        n // live, and the first n % live of them by id one more."""
        members = await self._heartbeat(keys=[REPLICAS_KEY], args=[self.owner, self.ttl_ms])
        return fair_share(n_series, [m.decode() for m in members], self.owner)

    async def holder(self, symbol: str, interval: str) -> str | None:
        value = await self.redis.get(lease_key(symbol, interval))
        return value.decode() if value else None
