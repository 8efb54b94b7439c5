"""The one place a Redis client is made: a single Redis, a Redis Cluster, or the master Sentinel names.

The URL picks the topology (docs/storage.md):

    redis://[user:password@]host:port/db                      one Redis (rediss:// with TLS; unix://)
    redis+cluster://[user:password@]host:port[,host:port]      a Redis Cluster, from seed nodes
    redis+sentinel://[user:password@]host:port[,host:port]/master[/db]   the master Sentinel names

``rediss+cluster://`` and ``rediss+sentinel://`` are the same over TLS. The user and password can
instead come from settings (``redis_username``, ``redis_password``, e.g. through
``CRYPTOLENS_REDIS_PASSWORD_FILE``); a setting wins over the URL. ``redis_ca_file`` is the CA that
signs the servers' certificates. Sentinels are asked without a password unless
``redis_sentinel_password`` is set. Every client has the same timeouts, so a dead node fails a
call in seconds instead of hanging it.
"""

from __future__ import annotations

import logging
from typing import Union
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import AuthenticationError, ClusterDownError, RedisClusterException, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import SlotNotCoveredError, TryAgainError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.redis_metrics import CountingRedis, CountingRedisCluster

log = logging.getLogger("cryptolens.redis")

Client = Union[aioredis.Redis, RedisCluster]
SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://",
           "redis+sentinel://", "rediss+sentinel://")
_TIMEOUTS = {"socket_timeout": 3, "socket_connect_timeout": 2, "health_check_interval": 15}
# One immediate retry on a broken connection: after Redis restarts (or a Sentinel failover), every
# pooled connection is dead, and a command sent on one never reached the new server, so sending it
# again is safe. Timeouts are not retried (the command may have run).
def _retry() -> dict:
    return {"retry": Retry(NoBackoff(), 1), "retry_on_error": [RedisConnectionError]}


def check_url(value: str) -> str:
    """The URL if its scheme is one we serve; else ValueError naming the choices (never the value)."""
    if not value.startswith(SCHEMES):
        raise ValueError("must start with " + ", ".join(SCHEMES[:-1]) + " or " + SCHEMES[-1])
    scheme = value.split("://", 1)[0]
    if scheme in ("redis", "rediss"):  # what the client would otherwise fail on at start, with a traceback
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a port that is not a number
            int(parts.path.strip("/") or 0)  # the database number
        except ValueError:
            raise ValueError("is not a valid Redis URL (a port or database that is not a number?)") from None
    if "+" in scheme:  # a bad host list or a missing master name fails at start, not on the first call
        parts = urlsplit(value)
        _hosts(parts)
        if scheme.endswith("+sentinel") and not parts.path.strip("/"):
            raise ValueError("needs the master's name: redis+sentinel://host:port[,host:port]/mymaster[/db]")
    return value


def _hosts(parts) -> list[tuple[str, int]]:
    netloc = parts.netloc.rsplit("@", 1)[-1]
    out = []
    for item in filter(None, netloc.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("needs host:port[,host:port...] after the scheme")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("needs host:port[,host:port...] after the scheme")
    return out


def redis_client(url: str, username: str = "", password: str = "", ca_file: str = "",
                 sentinel_password: str = "") -> Client:
    """A client for ``url``; explicit credentials win over the URL's."""
    check_url(url)
    scheme = url.split("://", 1)[0]
    tls = scheme.startswith("rediss")
    tls_options = {"ssl_ca_certs": ca_file} if tls and ca_file else {}
    parts = urlsplit(url)
    username = username or unquote(parts.username or "")
    password = password or unquote(parts.password or "")
    auth = {"username": username or None, "password": password or None}
    if "+" not in scheme:  # the URL's own credentials would override ours: they are passed apart
        bare = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()
        return CountingRedis.from_url(bare, **_TIMEOUTS, **_retry(), **auth, **tls_options)
    if tls:
        tls_options["ssl"] = True
    if scheme.endswith("+cluster"):
        return CountingRedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in _hosts(parts)], **auth,
                                    **_TIMEOUTS, **tls_options)
    path = [p for p in parts.path.split("/") if p]
    db = int(path[1]) if len(path) > 1 and path[1].isdigit() else 0
    sentinel_options = {**_TIMEOUTS, **tls_options}
    if sentinel_password:
        sentinel_options["password"] = sentinel_password
    sentinel = Sentinel(_hosts(parts), sentinel_kwargs=sentinel_options, **_TIMEOUTS, **tls_options)
    return sentinel.master_for(path[0], redis_class=CountingRedis, db=db, **_retry(), **auth)


# Redis away (a node down, a cluster failing over, no master yet): retryable, never a bug.
OUTAGES = (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError, SlotNotCoveredError)


def is_outage(exc: BaseException) -> bool:
    """True for OUTAGES, and for a cluster client's "no node reachable" (raised from a connection error)."""
    return isinstance(exc, OUTAGES) or (isinstance(exc, RedisClusterException) and
                                        isinstance(exc.__cause__, OUTAGES))


def from_settings(settings) -> Client:
    return redis_client(settings.redis_url, settings.redis_username, settings.redis_password,
                        settings.redis_ca_file, settings.redis_sentinel_password)


class Reachability:
    """PING with a clear word for refused credentials: logged once per streak, never the password."""

    def __init__(self, client: Client):
        self.client = client
        self._refused = False

    async def ping(self) -> bool:
        try:
            up = bool(await self.client.ping())
        except Exception as exc:  # noqa: BLE001 - told apart below, then raised on
            if not (_is_auth_error(exc) or _is_auth_error(exc.__cause__)):  # a cluster client wraps it
                raise
            if not self._refused:
                self._refused = True
                log.error("redis refused our credentials: check the password (CRYPTOLENS_REDIS_PASSWORD[_FILE] "
                          "or the URL) and the ACL user (CRYPTOLENS_REDIS_USERNAME)",
                          extra={"error": type(exc).__name__})
            raise
        self._refused = False
        return up


def _is_auth_error(exc: BaseException | None) -> bool:
    if isinstance(exc, AuthenticationError):
        return True
    return isinstance(exc, ResponseError) and str(exc).split(" ", 1)[0] in ("NOAUTH", "WRONGPASS", "NOPERM")
