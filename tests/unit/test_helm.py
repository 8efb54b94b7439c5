"""The Helm chart, kind config and Dockerfile: real Helm (Go SDK) lint and render, Kubernetes schemas."""

from __future__ import annotations

import subprocess

import kubernetes_validate
import pytest
import yaml
from helm_python import Chart, HelmError, lint

from tests.conftest import ROOT, require_tool

CHART = ROOT / "helm" / "cryptolens"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
K8S_VERSION = "1.30.0"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def render(values: dict | None = None) -> list[dict]:
    with Chart.load(CHART) as chart:
        out = chart.render(values=values or {}, name="cryptolens", namespace="crypto", is_install=True)
    docs = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_lint_is_clean(values_file):
    values = yaml.safe_load(values_file.read_text()) or {}
    result = lint(CHART, values, strict=True)
    assert result["errors"] == [], result
    assert [m for m in result["messages"] if m["severity"] > 1 and "icon" not in m["error"]] == []


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_every_manifest_matches_the_kubernetes_schema(values_file):
    docs = render(yaml.safe_load(values_file.read_text()) or {})
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["spec"]
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_defaults_render_the_whole_stack():
    docs = render()
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {f"cryptolens-{n}" for n in ("fetch", "core", "alerts", "ui", "redis")}
    services = by_kind(docs, "Service")
    for name, port, metrics in (("fetch", 50051, 9101), ("core", 50052, 9102), ("alerts", 50053, 9103)):
        pod = deployments[f"cryptolens-{name}"]["spec"]["template"]
        container = pod["spec"]["containers"][0]
        assert container["args"] == ["serve", name]
        assert container["readinessProbe"]["grpc"] == {"port": port}
        assert container["livenessProbe"]["grpc"] == {"port": port, "service": "liveness"}
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(metrics)
        env = env_of(container)
        assert env["CRYPTOLENS_GRPC_PORT"] == str(port) and env["CRYPTOLENS_METRICS_PORT"] == str(metrics)
        assert env["CRYPTOLENS_REDIS_URL"] == "redis://cryptolens-redis:6379/0"
        assert env["CRYPTOLENS_CORE_ADDR"] == "dns:///cryptolens-core-headless:50052"
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
        assert security["capabilities"]["drop"] == ["ALL"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] and pod["spec"]["securityContext"]["runAsUser"] == 10001
        assert services[f"cryptolens-{name}-headless"]["spec"]["clusterIP"] == "None"
    assert env_of(deployments["cryptolens-fetch"]["spec"]["template"]["spec"]["containers"][0])[
        "CRYPTOLENS_PROVIDER"] == "live"
    ingress = by_kind(docs, "Ingress")["cryptolens"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert ingress["spec"]["ingressClassName"] == "nginx" and backend["name"] == "cryptolens-ui"
    assert by_kind(docs, "ConfigMap")["cryptolens-rules"]["data"]["rules.yaml"].strip() == "rules: []"
    assert not by_kind(docs, "ServiceMonitor") and not by_kind(docs, "PrometheusRule")


def test_toggles_and_external_redis():
    all_on = render(yaml.safe_load((CHART / "ci" / "all-on-values.yaml").read_text()))
    assert len(by_kind(all_on, "ServiceMonitor")) == 3 and len(by_kind(all_on, "PodDisruptionBudget")) == 3
    assert by_kind(all_on, "PersistentVolumeClaim")
    fetch = by_kind(all_on, "Deployment")["cryptolens-fetch"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(fetch)["CRYPTOLENS_COINGECKO_API_KEY"] == {"secretKeyRef": {"name": "coingecko", "key": "api-key"}}
    rules = yaml.safe_load(by_kind(all_on, "ConfigMap")["cryptolens-rules"]["data"]["rules.yaml"])
    assert rules["rules"][0]["id"] == "btc-sharpe-low"
    external = render(yaml.safe_load((CHART / "ci" / "external-redis-values.yaml").read_text()))
    names = set(by_kind(external, "Deployment"))
    assert "cryptolens-redis" not in names and "cryptolens-ui" not in names and not by_kind(external, "Ingress")
    core = by_kind(external, "Deployment")["cryptolens-core"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(core)["CRYPTOLENS_REDIS_URL"] == "redis://my-redis.data.svc:6379/0"


@pytest.mark.parametrize("values, needle", [
    ({"replicaCount": 3}, "replicaCount"),
    ({"components": {"core": {"replicas": "two", "grpcPort": 50052, "metricsPort": 9102}}}, "replicas"),
    ({"config": {"interval": "2h"}}, "interval"),
    ({"config": {"symbols": ["btc"]}}, "symbols"),
])
def test_schema_rejects_bad_values(values, needle):
    with pytest.raises(HelmError) as exc:
        render(values)
    assert needle in str(exc.value)


def test_prometheus_rules_pass_promtool(tmp_path):
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "rules", str(CHART / "files" / "prometheus-rules.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 3 rules found" in result.stdout


def test_kind_config_and_dockerfile():
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert kind["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    node = kind["nodes"][0]
    assert "ingress-ready=true" in node["kubeadmConfigPatches"][0]
    assert {(m["containerPort"], m["hostPort"]) for m in node["extraPortMappings"]} == {(80, 80), (443, 443)}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile and 'ENTRYPOINT ["cryptolens"]' in dockerfile
    assert "useradd --uid 10001" in dockerfile
