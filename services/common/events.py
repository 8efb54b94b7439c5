"""Update events as async streams: Redis pub/sub (live only) and Redis Streams (resumable).

``read_stream`` is the resumable one, generic over the stream key: it yields every entry after a
given id, and survives a Redis outage by waiting and reading on from the last id it delivered, so a
reader misses nothing the stream still holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import AsyncIterator

import redis.asyncio as aioredis

from services.common.redis_client import is_outage

log = logging.getLogger("cryptolens.events")

BLOCK_MS = 1000
MAX_BACKOFF_S = 5.0


async def subscribe(redis: aioredis.Redis, channel: str) -> AsyncIterator[dict]:
    """Every JSON message published on ``channel`` from now on, until the caller stops."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    try:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                yield json.loads(message["data"])
    finally:
        await pubsub.aclose()


async def last_id(redis: aioredis.Redis, key: str) -> str:
    """Id of the newest entry ("0-0" for an empty or missing stream): 'from now on' as a resume point."""
    newest = await redis.xrevrange(key, count=1)
    return newest[0][0].decode() if newest else "0-0"


async def read_stream(redis: aioredis.Redis, key: str, after_id: str, count: int = 100,
                      block_ms: int = BLOCK_MS) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """(id, fields) of every entry after ``after_id``, forever. A Redis outage pauses the stream
    (one log line when it starts, one when it ends) and it goes on from the last delivered id."""
    cursor = after_id
    backoff = 0.2
    down = False
    while True:
        try:
            replies = await redis.xread({key: cursor}, count=count, block=block_ms)
        except Exception as exc:  # noqa: BLE001 - an outage pauses the stream, anything else ends it
            if not (is_outage(exc) or isinstance(exc, OSError)):
                raise
            if not down:
                log.warning("Redis unavailable: stream paused, will resume", extra={"stream": key, "error": str(exc)})
                down = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            continue
        if down:
            log.info("Redis back: stream resumed", extra={"stream": key, "after": cursor})
            down, backoff = False, 0.2
        for _key, entries in replies or []:
            for entry_id, fields in entries:
                cursor = entry_id.decode()
                yield cursor, {k.decode(): v.decode() for k, v in fields.items()}


async def waiting_out_outages(call, also: tuple[type[BaseException], ...] = ()):
    """``await call()`` for a stream: a Redis outage (or one of ``also``) is waited out with backoff
    instead of ending the stream; any other error is raised."""
    delay = 0.2
    while True:
        try:
            return await call()
        except Exception as exc:  # noqa: BLE001 - an outage is waited out, anything else ends the stream
            if not (is_outage(exc) or isinstance(exc, (OSError, *also))):
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
