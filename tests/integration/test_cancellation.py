"""A cancelled task stops, even when it is cancelled while redis-py sends a command.

Python 3.11's ``asyncio.wait_for`` drops a cancellation that lands in the turn its work finishes
(services/common/wait_for.py); redis-py wraps each send in it. Real redis-server, the client the
services use, the ``wait_for`` every service installs at start (tests/conftest.py installs it too).
"""

from __future__ import annotations

import asyncio
import random

import pytest

from services.common.redis_client import redis_client

ROUNDS = 500


async def _commands_forever(client) -> None:
    while True:
        await client.hgetall("cl:test:nothing")


async def test_every_cancel_of_a_task_sending_commands_is_honoured(scratch_redis_url):
    client = redis_client(scratch_redis_url)
    carried_on = 0
    try:
        for _ in range(ROUNDS):
            task = asyncio.create_task(_commands_forever(client))
            await asyncio.sleep(random.random() * 0.002)  # lands anywhere in a command's round trip
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=0.25)  # one round trip is ~0.1 ms
            if not done:
                carried_on += 1
                while not task.done():  # stop it for the next round: cancel until one lands
                    task.cancel()
                    await asyncio.wait({task}, timeout=0.1)
    finally:
        await client.aclose()
    assert carried_on == 0, f"{carried_on} of {ROUNDS} cancelled tasks carried on"


async def test_timeouts_still_fire_and_results_still_arrive(scratch_redis_url):
    client = redis_client(scratch_redis_url)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(5), 0.05)
        assert await asyncio.wait_for(client.ping(), 2) is True
        assert await asyncio.wait_for(asyncio.sleep(0, "x"), None) == "x"
    finally:
        await client.aclose()
