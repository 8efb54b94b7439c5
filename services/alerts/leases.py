"""Sharing work between Alerts replicas through Redis leases.

    cl:v1:alerts:replicas          ZSET  replica id → last heartbeat (ms)
    cl:v1:alerts:lease:shard:<n>   STRING replica id, with a TTL: who evaluates shard n
    cl:v1:alerts:lease:<name>      STRING replica id, with a TTL: who runs a singleton (a notify worker)

A (symbol, rule) pair belongs to shard crc32("SYMBOL|rule") % shards. Each replica heartbeats, lists
the live replicas and holds its fair share of shard leases (services/common/fair_share.py): it takes
free ones when it holds too few and lets go of extras when it holds too many, so a new replica gets
work and a dead one's shards are taken over once its leases expire. Leases spread the work; they are
not what makes a transition happen once: every state change is a compare-and-set on the pair's
revision in Redis (see engine.py), so a pair judged by two replicas at once still makes one transition.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib

import redis.asyncio as aioredis
from prometheus_client import Gauge

from services.common.fair_share import fair_share

log = logging.getLogger("cryptolens.alerts")

REPLICAS_KEY = "cl:v1:alerts:replicas"
LEASE_KEY = "cl:v1:alerts:lease:{}"
SHARDS_HELD = Gauge("cryptolens_alert_shards_held", "Evaluation shards this replica holds")

_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def shard_of(symbol: str, rule_id: str, shards: int) -> int:
    return zlib.crc32(f"{symbol}|{rule_id}".encode()) % shards


class Lease:
    """One named lease. ``held`` is true only while the last renewal is younger than the TTL."""

    def __init__(self, redis: aioredis.Redis, name: str, owner: str, ttl_s: float):
        self.redis = redis
        self.key = LEASE_KEY.format(name)
        self.owner = owner
        self.ttl_ms = int(ttl_s * 1000)
        self._valid_until = 0.0

    @property
    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    @property
    def claimed(self) -> bool:
        """Held at the last renewal (perhaps lapsed locally since): worth renewing rather than re-taking."""
        return self._valid_until > 0

    async def acquire_or_renew(self) -> bool:
        started = time.monotonic()
        ok = self.claimed and bool(await self.redis.eval(_RENEW, 1, self.key, self.owner, self.ttl_ms))
        if not ok:
            ok = bool(await self.redis.set(self.key, self.owner, nx=True, px=self.ttl_ms))
        # Count the TTL from before the round trip, with a margin: never believe a lease Redis let go.
        self._valid_until = started + self.ttl_ms / 1000 * 0.8 if ok else 0.0
        return ok

    async def release(self) -> None:
        self._valid_until = 0.0
        await self.redis.eval(_RELEASE, 1, self.key, self.owner)


class Ownership:
    """This replica's share of the evaluation shards."""

    def __init__(self, redis: aioredis.Redis, replica_id: str, shards: int, ttl_s: float):
        self.redis = redis
        self.replica_id = replica_id
        self.shards = shards
        self.ttl_s = ttl_s
        self.leases = {n: Lease(redis, f"shard:{n}", replica_id, ttl_s) for n in range(shards)}

    def owns(self, symbol: str, rule_id: str) -> bool:
        return self.leases[shard_of(symbol, rule_id, self.shards)].held

    @property
    def held(self) -> list[int]:
        return [n for n, lease in self.leases.items() if lease.held]

    async def live_replicas(self) -> list[str]:
        now = int(time.time() * 1000)
        await self.redis.zremrangebyscore(REPLICAS_KEY, "-inf", now - int(self.ttl_s * 1000))
        return [m.decode() for m in await self.redis.zrange(REPLICAS_KEY, 0, -1)]

    async def balance(self) -> None:
        """Heartbeat, renew what is held, then move towards the fair share."""
        await self.redis.zadd(REPLICAS_KEY, {self.replica_id: int(time.time() * 1000)})
        share = fair_share(self.shards, await self.live_replicas(), self.replica_id)
        for lease in self.leases.values():
            if lease.claimed:
                await lease.acquire_or_renew()
        mine = self.held
        for n in mine[share:]:
            await self.leases[n].release()
        if len(mine) < share:
            free = [n for n in self.leases if n not in mine]
            random.shuffle(free)
            for n in free:
                if len(self.held) >= share:
                    break
                await self.leases[n].acquire_or_renew()
        SHARDS_HELD.set(len(self.held))

    async def run(self) -> None:
        while True:
            try:
                await self.balance()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: leases lapse by themselves
                log.warning("shard leases not renewed; retrying", extra={"error": str(exc)[:200]})
            await asyncio.sleep(self.ttl_s / 4)

    async def leave(self) -> None:
        """On shutdown: hand the shards over now instead of after the TTL."""
        for lease in self.leases.values():
            if lease.held:
                await lease.release()
        await self.redis.zrem(REPLICAS_KEY, self.replica_id)
