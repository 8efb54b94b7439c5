"""The chart pointed at an external Redis Cluster or Sentinel set: what the pods get is what the
services read, and the client they build from it is a cluster or a Sentinel-managed one."""

from __future__ import annotations

import pytest
from helm_python import HelmValuesError
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from services.common.config import load_settings
from services.common.redis_client import from_settings
from tests.unit.test_helm import GRPC, SETTINGS, by_kind, ci_values, container, env_of, mounted_env, render

SECRETS = {"redis-cluster": {"redis-password": "cluster-pw"}, "redis-cluster-tls": {"ca.crt": "-----CA-----"},
           "redis": {"redis-password": "server-pw", "sentinel-password": "sentinel-pw"}}


def test_a_redis_cluster_from_values(tmp_path):
    docs = render(ci_values("redis-cluster-values.yaml"))
    for name in GRPC:
        env = mounted_env(docs, f"cryptolens-{name}", tmp_path / name, SECRETS)
        settings = load_settings(SETTINGS[name], env=env)
        assert settings.redis_url.startswith("rediss+cluster://redis-cluster-0.")
        assert settings.redis_password == "cluster-pw"
        assert open(settings.redis_ca_file).read().strip() == "-----CA-----"
        client = from_settings(settings)
        assert isinstance(client, RedisCluster)
        assert len(client.nodes_manager.startup_nodes) == 3
        assert "cluster-pw" not in str(env_of(container(docs, f"cryptolens-{name}")))
        egress = by_kind(docs, "NetworkPolicy")[f"cryptolens-{name}"]["spec"]["egress"]
        assert {"ports": [{"port": 6379, "protocol": "TCP"}]} in egress


def test_a_sentinel_set_from_values(tmp_path):
    docs = render(ci_values("redis-sentinel-values.yaml"))
    for name in GRPC:
        settings = load_settings(SETTINGS[name], env=mounted_env(docs, f"cryptolens-{name}", tmp_path / name, SECRETS))
        assert (settings.redis_username, settings.redis_password, settings.redis_sentinel_password) == \
            ("cryptolens", "server-pw", "sentinel-pw")
        client = from_settings(settings)
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "mymaster"
        assert pool.connection_kwargs["password"] == "server-pw"
        assert [s.connection_pool.connection_kwargs["password"] for s in pool.sentinel_manager.sentinels] == \
            ["sentinel-pw"] * 3
        egress = by_kind(docs, "NetworkPolicy")[f"cryptolens-{name}"]["spec"]["egress"]
        assert {"ports": [{"port": 26379, "protocol": "TCP"}, {"port": 6379, "protocol": "TCP"}]} in egress


@pytest.mark.parametrize("url", ["redis+cluster://:pw@node-0:6379", "redis+sentinel://user:pw@s:26379/m",
                                 "memcached://node:11211"])
def test_the_schema_refuses_credentials_in_the_url_and_unknown_schemes(url):
    with pytest.raises(HelmValuesError):
        render({"redis": {"enabled": False}, "externalRedis": {"url": url}})


def test_the_bundled_redis_ignores_the_external_secrets():
    docs = render({"externalRedis": {"passwordSecret": {"name": "unused", "key": "k"}}})
    env = env_of(container(docs, "cryptolens-core"))
    assert "CRYPTOLENS_REDIS_PASSWORD_FILE" not in env and "CRYPTOLENS_REDIS_URL_FILE" in env
