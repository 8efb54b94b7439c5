"""A Redis that lost its data never makes an old answer look current (issue 8, defect 4).

A real redis-server without persistence and a real Core process: answers are cached, Redis is
killed and restarted empty on the same port (or a series is deleted and written again), the new
bars get the same data versions as the old ones, and Core must answer the new numbers (or refuse)
within a couple of seconds, never the old ones.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis

from cryptolens.v1 import core_pb2, core_pb2_grpc
from services.common.bars import make_bars
from services.common.store import PriceStore
from tests.integration.services import start_core

HOUR = 3_600_000
START = 1_767_225_600_000  # 2026-01-01


def bars(level: float, n: int = 200):
    ts = START + np.arange(n, dtype=np.int64) * HOUR
    close = level * (1 + 0.01 * np.sin(np.arange(n)))
    return make_bars(ts, close, close * 1.001, close * 0.999, close, np.ones(n))


def write(url: str, level: float, symbol: str = "BTC-USD") -> int:
    async def go():
        client = aioredis.from_url(url)
        try:
            return (await PriceStore(client).write(symbol, "1h", bars(level), "test")).version
        finally:
            await client.aclose()
    return asyncio.run(go())


@pytest.fixture
def core(tmp_path, redis):
    # Fetch is deliberately absent: a fetch-through answers UNAVAILABLE, never old numbers.
    service = start_core(redis, tmp_path, "core")
    with grpc.insecure_channel(service.addr) as channel:
        yield core_pb2_grpc.CoreServiceStub(channel)
    service.stop()


REQUESTS = [
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1h")),
    ("GetStats", core_pb2.GetStatsRequest(symbol="BTC-USD", interval="1h", lookback="3d")),
    ("GetTimeseries", core_pb2.GetTimeseriesRequest(symbol="BTC-USD", interval="1h", lookback="3d")),
]


def last_close(method: str, reply) -> float:
    return reply.last if method == "GetStats" else reply.points[-1].close


def answer_new_never_old(core, old_level: float, new_level: float, within_s: float = 5.0) -> float:
    """Poll every request until all answer the new numbers; fail on any old number. Seconds taken."""
    started = time.monotonic()
    pending = list(REQUESTS)
    while pending and time.monotonic() - started < within_s:
        for method, request in list(pending):
            try:
                reply = getattr(core, method)(request, timeout=5)
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND), exc
                continue
            close = last_close(method, reply)
            assert close != pytest.approx(old_level, rel=0.05), f"{method} served pre-restart data: {close}"
            assert close == pytest.approx(new_level, rel=0.05)
            pending.remove((method, request))
        time.sleep(0.05)
    assert not pending, f"no new answer within {within_s} s for {[m for m, _ in pending]}"
    return time.monotonic() - started


def warm(core, level: float) -> None:
    for method, request in REQUESTS:
        for _ in range(2):  # the second one comes from the caches
            reply = getattr(core, method)(request, timeout=10)
            assert last_close(method, reply) == pytest.approx(level, rel=0.05)
    assert core.GetStats(REQUESTS[0][1], timeout=10).cached


def test_redis_restarted_empty_never_serves_old_numbers(core, redis):
    assert write(redis.url, 100.0) == 1
    warm(core, 100.0)
    redis.proc.kill()  # a crash: no persistence, everything in it is gone
    redis.proc.wait()
    redis.start()  # same port, empty
    assert write(redis.url, 500.0) == 1  # the same data version as before the crash, other prices
    assert answer_new_never_old(core, 100.0, 500.0) < 3.0


def test_series_rewritten_from_scratch_never_serves_old_numbers(core, redis):
    """A series deleted and written again (a re-ingest) restarts its versions without a Redis restart."""
    assert write(redis.url, 100.0) == 1
    warm(core, 100.0)

    async def delete_series():
        client = aioredis.from_url(redis.url)
        keys = [k async for k in client.scan_iter("cl:v1:s:{BTC-USD:1h}:*") if not k.endswith(b":epoch")]
        await client.delete(*keys)
        await client.aclose()
    asyncio.run(delete_series())
    assert write(redis.url, 500.0) == 1
    assert answer_new_never_old(core, 100.0, 500.0) < 3.0


def test_redis_down_then_back_empty_answers_unavailable_then_new(core, redis):
    assert write(redis.url, 100.0) == 1
    warm(core, 100.0)
    redis.proc.kill()
    redis.proc.wait()
    with pytest.raises(grpc.RpcError) as exc:
        core.GetStats(REQUESTS[0][1], timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE  # down: refuse, do not serve the memory
    redis.start()
    with pytest.raises(grpc.RpcError) as exc:  # back but empty, and Fetch is not there to refill it
        core.GetStats(REQUESTS[0][1], timeout=10)
    assert exc.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND)
    assert write(redis.url, 500.0) == 1
    answer_new_never_old(core, 100.0, 500.0)
