"""The Redis URL and credential settings become the right client, without connecting anywhere."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError, RedisClusterException, ResponseError

from services.common.config import ServiceSettings, SettingsError, load_settings
from services.common.redis_client import is_outage, redis_client


def test_one_redis_takes_the_settings_credentials_over_the_urls():
    client = redis_client("redis://olduser:oldpw@h:6379/2", password="new-pw")
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"], kwargs["host"]) == ("olduser", "new-pw", 2, "h")
    assert redis_client("redis://u:p%40ss@h:6379/0").connection_pool.connection_kwargs["password"] == "p@ss"
    tls = redis_client("rediss://h:6380/0", ca_file="/ca.pem").connection_pool.connection_kwargs
    assert tls["ssl_ca_certs"] == "/ca.pem"
    assert isinstance(redis_client("unix:///run/redis.sock?db=1"), aioredis.Redis)


def test_a_cluster_url_lists_seed_nodes():
    client = redis_client("rediss+cluster://user:pw@a:7000,b:7001", ca_file="/ca.pem")
    assert isinstance(client, RedisCluster)
    assert sorted(n.name for n in client.nodes_manager.startup_nodes.values()) == ["a:7000", "b:7001"]
    kwargs = client.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["ssl_ca_certs"]) == ("user", "pw", "/ca.pem")


def test_a_sentinel_url_names_the_master_and_the_database():
    client = redis_client("redis+sentinel://s1:26379,[::1]:26380/mymaster/3", password="pw")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert (pool.service_name, pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == ("mymaster", 3, "pw")
    sentinels = [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
                 for s in pool.sentinel_manager.sentinels]
    assert sentinels == [("s1", 26379), ("::1", 26380)]
    assert all(s.connection_pool.connection_kwargs.get("password") is None for s in pool.sentinel_manager.sentinels)


@pytest.mark.parametrize("url, needle", [
    ("redis+cluster://", "host:port"), ("redis+cluster://a:notaport", "host:port"),
    ("redis+sentinel://s1:26379", "master's name"), ("memcached://h:11211", "redis+cluster://"),
])
def test_a_bad_url_stops_the_service_with_one_line(url, needle):
    with pytest.raises(SettingsError, match="CRYPTOLENS_REDIS_URL") as caught:
        load_settings(ServiceSettings, env={"CRYPTOLENS_REDIS_URL": url})
    assert needle in str(caught.value)


def test_outages_are_told_apart_from_bugs():
    assert is_outage(ConnectionError("refused"))
    try:
        try:
            raise ConnectionError("Error 111 connecting")
        except ConnectionError as exc:
            raise RedisClusterException("Redis Cluster cannot be connected") from exc
    except RedisClusterException as unreachable:
        assert is_outage(unreachable)
    assert not is_outage(RedisClusterException("MGET - all keys must map to the same key slot"))
    assert not is_outage(ResponseError("WRONGTYPE"))
