"""Redis pub/sub as an async stream of JSON events (for the Watch* server streams)."""

from __future__ import annotations

import json
from typing import AsyncIterator

import redis.asyncio as aioredis


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
