"""Redis clients that count the commands Redis failed, for ``cryptolens_redis_errors_total``.

Every command goes through ``execute_command`` (scripts too) or a pipeline's ``execute``, on one
Redis (or the master a Sentinel names) and on a Redis Cluster; each counts an error by kind before
re-raising it. Not counted: a script cache miss (the client reloads the script by itself) and a lost
optimistic lock (WATCH: the caller retries) — neither is Redis failing.
"""

from __future__ import annotations

import redis.asyncio as aioredis
import redis.exceptions as rex
from prometheus_client import Counter
from redis.asyncio.cluster import ClusterPipeline, RedisCluster

REDIS_ERRORS = Counter("cryptolens_redis_errors_total",
                       "Redis commands (or pipelines) that failed, by kind: connection, timeout, response, cluster",
                       ["kind"])
for _kind in ("connection", "timeout", "response", "cluster"):
    REDIS_ERRORS.labels(_kind)  # exported as 0 from the start, so the first error shows as an increase


def _kind(exc: BaseException) -> str | None:
    if isinstance(exc, rex.ConnectionError):  # includes authentication failures and "loading"
        return "connection"
    if isinstance(exc, rex.TimeoutError):
        return "timeout"
    if isinstance(exc, rex.ResponseError) and not isinstance(exc, rex.NoScriptError):
        return "response"  # includes a cluster's CLUSTERDOWN and TRYAGAIN
    if isinstance(exc, rex.RedisClusterException):  # no node serves the slot (not a RedisError)
        return "cluster"
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


class CountingClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True):
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except (rex.RedisError, rex.RedisClusterException) as exc:
            _count(exc)
            raise


class CountingRedisCluster(RedisCluster):
    async def execute_command(self, *args, **kwargs):
        try:
            return await super().execute_command(*args, **kwargs)
        except (rex.RedisError, rex.RedisClusterException) as exc:
            _count(exc)
            raise

    def pipeline(self, transaction=None, shard_hint=None) -> CountingClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused, as RedisCluster refuses it
        return CountingClusterPipeline(self, transaction)
