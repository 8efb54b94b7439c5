"""A Redis client that counts the commands Redis failed, for ``cryptolens_redis_errors_total``.

Every command goes through ``execute_command`` (scripts too) or a pipeline's ``execute``; both
count an error by kind before re-raising it. Not counted: a script cache miss (the client reloads
the script by itself) and a lost optimistic lock (WATCH: the caller retries) — neither is Redis
failing.
"""

from __future__ import annotations

import redis.asyncio as aioredis
import redis.exceptions as rex
from prometheus_client import Counter

REDIS_ERRORS = Counter("cryptolens_redis_errors_total",
                       "Redis commands (or pipelines) that failed, by kind: connection, timeout, response",
                       ["kind"])
for _kind in ("connection", "timeout", "response"):
    REDIS_ERRORS.labels(_kind)  # exported as 0 from the start, so the first error shows as an increase


def _kind(exc: BaseException) -> str | None:
    if isinstance(exc, rex.ConnectionError):  # includes authentication failures and "loading"
        return "connection"
    if isinstance(exc, rex.TimeoutError):
        return "timeout"
    if isinstance(exc, rex.ResponseError) and not isinstance(exc, rex.NoScriptError):
        return "response"
    return None


def _count(exc: BaseException) -> None:
    kind = _kind(exc)
    if kind is not None:
        REDIS_ERRORS.labels(kind).inc()


class CountingPipeline(aioredis.client.Pipeline):
    async def execute(self, raise_on_error: bool = True):
        try:
            return await super().execute(raise_on_error)
        except rex.RedisError as exc:
            _count(exc)
            raise


class CountingRedis(aioredis.Redis):
    async def execute_command(self, *args, **options):
        try:
            return await super().execute_command(*args, **options)
        except rex.RedisError as exc:
            _count(exc)
            raise

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> CountingPipeline:
        return CountingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
