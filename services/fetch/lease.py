"""Leases in Redis so several Fetch replicas never poll the same series at the same time.

A lease is ``SET key owner NX PX ttl``; only the owner may renew or release it (compare and
act in one Lua script, so an expired-and-retaken lease is never touched by its old owner).
"""

from __future__ import annotations

import os
import socket
import uuid

import redis.asyncio as aioredis

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


def lease_key(symbol: str, interval: str) -> str:
    return f"cl:v1:lease:{{{symbol}:{interval}}}"


class Leases:
    def __init__(self, redis: aioredis.Redis, ttl_ms: int, owner: str | None = None):
        self.redis = redis
        self.ttl_ms = ttl_ms
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, symbol: str, interval: str) -> bool:
        """Take the lease, or renew it if this process holds it already."""
        key = lease_key(symbol, interval)
        if await self.redis.set(key, self.owner, nx=True, px=self.ttl_ms):
            return True
        return bool(await self._renew(keys=[key], args=[self.owner, self.ttl_ms]))

    async def release(self, symbol: str, interval: str) -> None:
        await self._release(keys=[lease_key(symbol, interval)], args=[self.owner])

    async def holder(self, symbol: str, interval: str) -> str | None:
        value = await self.redis.get(lease_key(symbol, interval))
        return value.decode() if value else None
