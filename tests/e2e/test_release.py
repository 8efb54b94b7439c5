"""The installed release end to end: pods Ready, gRPC health and GetStats through a port-forward,
the dashboard through the ingress, and a Core pod deleted under load without one failed call."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import client

from cryptolens.v1 import core_pb2, core_pb2_grpc
from services.common.config import DEFAULT_PORTS

GRPC = ("fetch", "core", "alerts")
COMPONENTS = (*GRPC, "ui", "redis")


def wait_until(check, timeout: float, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every)


def env_of(cluster, component: str) -> dict[str, str]:
    container = cluster.deployments()[component].spec.template.spec.containers[0]
    return {e.name: e.value for e in container.env or [] if e.value is not None}


def test_every_deployment_is_ready(cluster):
    deployments = cluster.deployments()
    assert set(COMPONENTS) <= set(deployments)
    for name in COMPONENTS:
        d = deployments[name]
        assert (d.status.ready_replicas or 0) == d.spec.replicas >= 1, name
        assert len(cluster.ready_pods(name)) >= d.spec.replicas, name


@pytest.mark.parametrize("component", GRPC)
def test_grpc_health_through_a_port_forward(cluster, component):
    pod = cluster.ready_pods(component)[0].metadata.name
    with cluster.forward(pod, DEFAULT_PORTS[component][0]) as addr, grpc.insecure_channel(addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "liveness"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, (component, service)


def test_get_stats_through_a_port_forward(cluster):
    symbol = env_of(cluster, "core")["CRYPTOLENS_SYMBOLS"].split(",")[0]
    pod = cluster.ready_pods("core")[0].metadata.name
    with cluster.forward(pod, DEFAULT_PORTS["core"][0]) as addr, grpc.insecure_channel(addr) as channel:
        stub = core_pb2_grpc.CoreServiceStub(channel)

        def stats():
            try:
                return stub.GetStats(core_pb2.GetStatsRequest(symbol=symbol, lookback="7d"), timeout=15)
            except grpc.RpcError as exc:  # history may still be loading on a fresh install
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION), exc
                return None

        reply = wait_until(stats, timeout=120, every=5)
    assert reply is not None, "GetStats never answered within 2 minutes"
    assert reply.symbol == symbol and reply.count > 0 and reply.HasField("last") and reply.last > 0


def test_dashboard_through_the_ingress(cluster):
    health = cluster.url.rstrip("/") + "/_stcore/health"
    with urllib.request.urlopen(health, timeout=15) as answer:
        assert answer.status == 200 and answer.read().strip() == b"ok"
    with urllib.request.urlopen(cluster.url, timeout=15) as page:
        assert page.status == 200 and b"<title>Streamlit</title>" in page.read()


LOAD = """
import json, time
from ui.client import CryptoLensClient, ServiceError
c = CryptoLensClient.from_env()
ok, failed, errors = 0, 0, []
end = time.monotonic() + {duration}
while time.monotonic() < end:
    try:
        c.stats({symbol!r}, "1h", "7d")
        ok += 1
    except ServiceError as exc:
        failed += 1
        errors.append(str(exc)[:200])
    time.sleep(0.1)
print(json.dumps({{"ok": ok, "failed": failed, "errors": errors[:5]}}))
"""


def load_pod(cluster, symbol: str, duration: int) -> client.V1Pod:
    """A pod of the release (the NetworkPolicies let it reach Core) calling GetStats the way the
    dashboard does: ui/client.py over the headless Service with round_robin."""
    ui = cluster.deployments()["ui"].spec.template.spec
    container = ui.containers[0]
    name = f"{cluster.release}-e2e-load-{uuid.uuid4().hex[:6]}"
    labels = {"app.kubernetes.io/name": "cryptolens", "app.kubernetes.io/instance": cluster.release,
              "app.kubernetes.io/component": "test"}
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(
            restart_policy="Never", automount_service_account_token=False, enable_service_links=False,
            security_context=ui.security_context,
            containers=[client.V1Container(
                name="load", image=container.image, image_pull_policy=container.image_pull_policy,
                command=["python", "-c", LOAD.format(duration=duration, symbol=symbol)],
                env=container.env, security_context=container.security_context,
                resources=client.V1ResourceRequirements(requests={"cpu": "50m", "memory": "128Mi"},
                                                        limits={"memory": "256Mi"}),
                volume_mounts=[client.V1VolumeMount(name="tmp", mount_path="/tmp")])],
            volumes=[client.V1Volume(name="tmp", empty_dir=client.V1EmptyDirVolumeSource())]))


def test_a_core_pod_deleted_under_load_is_replaced_without_a_failed_call(cluster):
    before = {p.metadata.name for p in cluster.ready_pods("core")}
    assert len(before) >= 2, "needs 2+ Core replicas (the chart's default)"
    symbol = env_of(cluster, "core")["CRYPTOLENS_SYMBOLS"].split(",")[0]
    pod = cluster.core.create_namespaced_pod(cluster.namespace, load_pod(cluster, symbol, duration=60))
    name = pod.metadata.name
    try:
        assert wait_until(lambda: cluster.core.read_namespaced_pod(name, cluster.namespace).status.phase
                          in ("Running", "Succeeded", "Failed"), timeout=60), "load pod never started"
        time.sleep(10)  # calls flowing to every replica
        victim = sorted(before)[0]
        cluster.core.delete_namespaced_pod(victim, cluster.namespace)
        replaced = wait_until(lambda: {p.metadata.name for p in cluster.ready_pods("core")} - before, timeout=120)
        assert replaced, "the deleted Core pod was not replaced by a Ready one within 2 minutes"
        done = wait_until(lambda: cluster.core.read_namespaced_pod(name, cluster.namespace).status.phase
                          in ("Succeeded", "Failed"), timeout=120)
        assert done, "load pod did not finish"
        log = cluster.core.read_namespaced_pod_log(name, cluster.namespace).strip().splitlines()[-1]
        result = json.loads(log)
        assert result["failed"] == 0, result
        assert result["ok"] >= 100, result  # ~60 s of calls at 10/s, less their own latency
    finally:
        cluster.core.delete_namespaced_pod(name, cluster.namespace, grace_period_seconds=0)
