"""The Helm chart, kind config and Dockerfile, checked offline with real tools.

- Helm's own Go engine (PyPI ``helm-python-sdk``: ``libhelm_c.so`` over ctypes, no ``helm``
  binary) lints and renders the chart, schema validation included.
- ``kubernetes-validate`` checks every rendered manifest against the Kubernetes OpenAPI schemas;
  the Prometheus Operator kinds, which it has no schema for, are checked against the subset of
  their CRDs this chart uses.
- ``promtool`` checks the rendered PrometheusRule (its alert unit tests: test_prometheus_rules.py).
- The rendered environment goes through the services' own settings classes and rules loader.
"""

from __future__ import annotations

import base64
import re
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helm_python import Chart as HelmChart
from helm_python import HelmRenderError, HelmValuesError, lint

from services.alerts.rules import load_rules_file
from services.alerts.server import AlertsSettings
from services.common.config import DEFAULT_PORTS, ENV_PREFIX, load_settings
from services.core.server import CoreSettings
from services.fetch.server import FetchSettings
from tests.conftest import ROOT, require_tool

CHART = ROOT / "helm" / "cryptolens"
CI_VALUES = {p.name: p for p in sorted((CHART / "ci").glob("*-values.yaml"))}
# The oldest Kubernetes the chart supports (native gRPC probes are GA since 1.27) and the newest
# whose schemas kubernetes-validate ships offline.
K8S_VERSIONS = sorted({"1.30.0", kubernetes_validate.latest_version()})
GRPC = ("fetch", "core", "alerts")
SETTINGS = {"fetch": FetchSettings, "core": CoreSettings, "alerts": AlertsSettings}
HOOK = "helm.sh/hook"


# --- rendering helpers -----------------------------------------------------------------------
def ci_values(name: str) -> dict:
    return yaml.safe_load(CI_VALUES[name].read_text()) or {}


def render(values: dict | None = None, name: str = "cryptolens") -> list[dict]:
    """Every manifest `helm template` would print (hooks included), parsed."""
    with HelmChart.load(CHART) as chart:
        out = chart.render(values=values or {}, name=name, namespace="crypto", is_install=True)
    assert "cryptolens/templates/NOTES.txt" in out
    return [doc for path, text in sorted(out.items()) if not path.endswith(".txt")
            for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    """Pod spec per workload name: Deployments' and (test) Jobs' templates."""
    return {name: d["spec"]["template"]["spec"] for kind in ("Deployment", "Job")
            for name, d in by_kind(docs, kind).items()}


def container(docs: list[dict], deployment: str) -> dict:
    return by_kind(docs, "Deployment")[deployment]["spec"]["template"]["spec"]["containers"][0]


def env_of(c: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def mounted_env(docs: list[dict], deployment: str, tmp_path: Path, secrets: dict[str, dict] | None = None) -> dict:
    """The container's plain env, with its projected Secret volume written out under tmp_path as the
    kubelet would: Secrets the chart renders are used as rendered, others come from ``secrets``
    ({name: {key: value}}). *_FILE variables are pointed at the written files."""
    spec = pod_specs(docs)[deployment]
    c = spec["containers"][0]
    env = {k: v for k, v in env_of(c).items() if isinstance(v, str)}
    known = {name: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
             for name, d in by_kind(docs, "Secret").items()} | (secrets or {})
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    for volume in spec.get("volumes", []):
        if "projected" not in volume:
            continue
        root = tmp_path / volume["name"]
        root.mkdir(parents=True)
        for source in volume["projected"]["sources"]:
            for item in source["secret"]["items"]:
                (root / item["path"]).write_text(known[source["secret"]["name"]][item["key"]] + "\n")
        for key, value in env.items():
            if key.endswith("_FILE") and value.startswith(mounts[volume["name"]] + "/"):
                env[key] = str(root / value.removeprefix(mounts[volume["name"]] + "/"))
    return env


# --- lint and schemas ------------------------------------------------------------------------
@pytest.mark.parametrize("values_file", CI_VALUES)
def test_lint_is_clean(values_file):
    result = lint(CHART, ci_values(values_file), strict=True, kube_version="v1.30.0")
    assert result["total_charts_linted"] == 1
    assert result["errors"] == [], result
    # Only the informational "icon is recommended" may remain.
    assert [m for m in result["messages"] if m["severity"] > 1 or "icon" not in m["error"]] == []


SERVICE_MONITOR = {  # the part of the monitoring.coreos.com/v1 CRD this chart uses
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "metadata": {"required": ["name", "labels"],
                     "properties": {"labels": {"additionalProperties": {"type": "string"}}}},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"type": "object", "additionalProperties": False, "required": ["matchLabels"],
                             "properties": {"matchLabels": {"additionalProperties": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["port"],
                    "properties": {"port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                                   "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}}}},
            },
        },
    },
}
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["groups"],
            "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "rules"],
                "properties": {"name": {"type": "string"}, "rules": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["alert", "expr"],
                    "properties": {
                        "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                        "expr": {"type": "string", "minLength": 1},
                        "for": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "labels": {"additionalProperties": {"type": "string"}},
                        "annotations": {"additionalProperties": {"type": "string"}},
                    }}}}}}},
        },
    },
}
CRD_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_every_manifest_matches_its_schema(values_file):
    docs = render(ci_values(values_file))
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "Job", "NetworkPolicy"} <= kinds
    for doc in docs:
        if doc["kind"] in CRD_SCHEMAS:
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    if values_file == "all-on-values.yaml":  # the CRD kinds were really checked
        assert set(CRD_SCHEMAS) <= kinds


def test_the_crd_checks_catch_a_typo():
    rule = by_kind(render(ci_values("all-on-values.yaml")), "PrometheusRule")["cryptolens"]
    rule["spec"]["groups"][0]["rules"][0]["expresion"] = rule["spec"]["groups"][0]["rules"][0].pop("expr")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rule, PROMETHEUS_RULE)


@pytest.mark.parametrize("values, needle", [
    ({"replicaCount": 3}, "additional properties 'replicaCount' not allowed"),
    ({"components": {"core": {"replica": 2}}}, "additional properties 'replica' not allowed"),
    ({"components": {"core": {"replicas": "two"}}}, "/components/core/replicas"),
    ({"ui": {"enabled": "yes"}}, "/ui/enabled"),
    ({"config": {"interval": "2h"}}, "/config/interval"),
    ({"config": {"symbols": ["btc"]}}, "/config/symbols/0"),
    ({"externalRedis": {"url": "my-redis:6379"}}, "/externalRedis/url"),
])
def test_schema_rejects_bad_values(values, needle):
    with pytest.raises(HelmValuesError) as exc:
        render(values)
    assert "don't meet the specifications of the schema" in str(exc.value)
    assert needle in str(exc.value)
    assert any(needle in e for e in lint(CHART, values)["errors"])


def test_turning_off_redis_needs_an_external_one():
    with pytest.raises(HelmRenderError, match="redis.enabled=false needs externalRedis.url"):
        render({"redis": {"enabled": False}})


# --- what the chart renders -----------------------------------------------------------------
def test_grpc_components_get_probes_ports_and_scrape_annotations():
    docs = render()
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {f"cryptolens-{n}" for n in (*GRPC, "ui", "redis")}
    services = by_kind(docs, "Service")
    for name in GRPC:
        port, metrics = DEFAULT_PORTS[name]  # the services' own defaults
        pod = deployments[f"cryptolens-{name}"]["spec"]["template"]
        c = pod["spec"]["containers"][0]
        assert c["image"] == "cryptolens:dev" and c["args"] == ["serve", name]
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": port, "metrics": metrics}
        assert c["readinessProbe"]["grpc"] == {"port": port}
        assert c["livenessProbe"]["grpc"] == {"port": port, "service": "liveness"}
        scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics), "prometheus.io/path": "/metrics"}
        assert pod["metadata"]["annotations"].items() >= scrape.items()
        assert {p["name"]: p["port"] for p in services[f"cryptolens-{name}"]["spec"]["ports"]} == {
            "grpc": port, "metrics": metrics}
        headless = services[f"cryptolens-{name}-headless"]["spec"]
        assert headless["clusterIP"] == "None" and [p["port"] for p in headless["ports"]] == [port]
    # Core and Alerts scale with an HPA from 2 replicas (Alerts replicas share work exactly once);
    # the Deployments leave the count to it, so `helm upgrade` never resets a scaled-out service.
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"cryptolens-core", "cryptolens-alerts"}
    for name, (low, high) in {"core": (2, 6), "alerts": (2, 4)}.items():
        hpa = hpas[f"cryptolens-{name}"]["spec"]
        assert "replicas" not in deployments[f"cryptolens-{name}"]["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"cryptolens-{name}"}
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (low, high)
        assert hpa["metrics"][0]["resource"] == {"name": "cpu", "target": {"type": "Utilization",
                                                                            "averageUtilization": 70}}
    assert deployments["cryptolens-fetch"]["spec"]["replicas"] == 1
    fixed = by_kind(render(ci_values("external-redis-values.yaml")), "Deployment")
    assert fixed["cryptolens-alerts"]["spec"]["replicas"] == 2 and fixed["cryptolens-core"]["spec"]["replicas"] == 2
    ui = container(docs, "cryptolens-ui")
    assert ui["args"][0] == "ui" and ui["readinessProbe"]["httpGet"] == {"path": "/_stcore/health", "port": "http"}


def test_ingress_routes_to_the_dashboard():
    assert by_kind(render(), "Ingress") == {}  # off by default: it needs ui.auth (test_chart_security.py)
    local = {"ingress": {"enabled": True}, "ui": {"auth": {"allowAnonymous": True}}}  # scripts/kind-up.sh
    ingress = by_kind(render(local), "Ingress")["cryptolens"]["spec"]
    assert ingress["ingressClassName"] == "nginx" and "tls" not in ingress
    rule = ingress["rules"][0]
    assert "host" not in rule  # any host: http://localhost/ on kind
    path = rule["http"]["paths"][0]
    assert path["path"] == "/" and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": "cryptolens-ui", "port": {"name": "http"}}
    tls = by_kind(render(ci_values("all-on-values.yaml")), "Ingress")["cryptolens"]["spec"]
    assert tls["rules"][0]["host"] == "cryptolens.example.com" and tls["tls"][0]["secretName"] == "cryptolens-tls"


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_every_pod_is_hardened(values_file):
    for name, spec in pod_specs(render(ci_values(values_file))).items():
        pod = spec["securityContext"]
        uid = 10999 if name.endswith("-redis") else 10001  # both high: no clash with a node's users
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["enableServiceLinks"] is False and spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], name
            if uid == 10001:  # the only writable place of a CryptoLens container: HOME=/tmp, an emptyDir
                assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], name
                assert {"name": "tmp", "emptyDir": {}} in spec["volumes"], name
                assert env_of(c)["HOME"] == "/tmp"


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_references_between_objects_resolve(values_file):
    docs = render(ci_values(values_file), name="demo")
    deployments, services = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    assert all(name.startswith("demo-cryptolens-") for name in deployments)

    def ports_of(selector: dict) -> set:
        specs = [d["spec"] for d in deployments.values()]
        matches = [spec for spec in specs if selects(selector, spec["template"]["metadata"]["labels"])]
        assert len(matches) == 1, selector
        spec = matches[0]
        assert selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
        return {(p["name"], p["containerPort"]) for c in spec["template"]["spec"]["containers"] for p in c["ports"]}

    for name, svc in services.items():  # each Service reaches named ports of exactly one Deployment
        named = dict(ports_of(svc["spec"]["selector"]))
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= set(named), name
    for pdb in by_kind(docs, "PodDisruptionBudget").values():
        ports_of(pdb["spec"]["selector"]["matchLabels"])
    for monitor in by_kind(docs, "ServiceMonitor").values():  # the ClusterIP Service only, never the headless one
        selector = monitor["spec"]["selector"]["matchLabels"]
        matched = [s for s in services.values() if selects(selector, s["metadata"]["labels"])]
        assert len(matched) == 1 and "clusterIP" not in matched[0]["spec"]
        assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in matched[0]["spec"]["ports"]}
    for ingress in by_kind(docs, "Ingress").values():
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend["port"]["name"] in {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
    config_maps, claims = by_kind(docs, "ConfigMap"), by_kind(docs, "PersistentVolumeClaim")
    for name, spec in pod_specs(docs).items():
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, name
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
        for c in spec["containers"]:
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec.get("volumes", [])}, name
            for key, value in env_of(c).items():  # gRPC addresses: a headless Service with that port
                if key.endswith("_ADDR"):
                    host, port = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", value).groups()
                    assert services[host]["spec"]["clusterIP"] == "None"
                    assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}
    secrets = by_kind(docs, "Secret")
    if "demo-cryptolens-redis" in deployments and not ci_values(values_file).get("redis", {}).get("auth"):
        url = base64.b64decode(secrets["demo-cryptolens-redis"]["data"]["redis-url"]).decode()
        assert re.fullmatch(r"redis://:[A-Za-z0-9]{32}@demo-cryptolens-redis:6379/0", url)  # names its Service
        assert 6379 in {p["port"] for p in services["demo-cryptolens-redis"]["spec"]["ports"]}
    for spec in pod_specs(docs).values():  # a chart-made Secret a pod mounts exists, with that key
        sources = [s["secret"] for v in spec.get("volumes", []) for s in v.get("projected", {}).get("sources", [])]
        sources += [v["secret"] | {"name": v["secret"]["secretName"]} for v in spec.get("volumes", []) if "secret" in v]
        for source in sources:
            if source["name"].startswith("demo-"):
                assert {i["key"] for i in source["items"]} <= set(secrets[source["name"]]["data"])


USER_SECRETS = {"coingecko": {"api-key": "CG-k3y"}, "cryptolens-webhook": {"url": "https://hooks.example.com/T0KEN"},
                "cryptolens-alertmanager": {"url": "http://alertmanager.monitoring:9093"},
                "my-redis": {"url": "rediss://:pw@my-redis.data.svc:6380/1"},
                "cryptolens-grpc-tls": {"tls.crt": "CERT", "tls.key": "KEY", "ca.crt": "CA"}}


def test_environment_is_what_the_services_read(tmp_path):
    """Every CRYPTOLENS_* variable names a real setting, and the services' settings accept the values,
    secrets included: read from the files of the mounted Secrets, never from the environment."""
    docs = render(ci_values("all-on-values.yaml"))
    password = base64.b64decode(by_kind(docs, "Secret")["cryptolens-redis"]["data"]["redis-password"]).decode()
    for name in GRPC:
        c = container(docs, f"cryptolens-{name}")
        assert all("valueFrom" not in e for e in c["env"]) and "envFrom" not in c
        env = mounted_env(docs, f"cryptolens-{name}", tmp_path / name, USER_SECRETS)
        fields = {ENV_PREFIX + f.upper() for f in SETTINGS[name].__dataclass_fields__}
        ours = {k if k in fields else k.removesuffix("_FILE") for k in env if k.startswith(ENV_PREFIX)}
        assert ours <= fields, (name, ours - fields)  # a misspelt variable would be ignored silently
        assert {"CRYPTOLENS_REDIS_URL", "CRYPTOLENS_HOST", "CRYPTOLENS_GRPC_PORT", "CRYPTOLENS_METRICS_PORT",
                "CRYPTOLENS_LOG_LEVEL", "CRYPTOLENS_SYMBOLS", "CRYPTOLENS_INTERVAL", "CRYPTOLENS_FETCH_ADDR",
                "CRYPTOLENS_CORE_ADDR", "CRYPTOLENS_ALERTS_ADDR"} <= ours
        settings = load_settings(SETTINGS[name], env=env)
        assert (settings.grpc_port, settings.metrics_port) == DEFAULT_PORTS[name]
        assert settings.host == "0.0.0.0" and settings.redis_url == f"redis://:{password}@cryptolens-redis:6379/0"
        assert settings.symbols == ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD"] and settings.interval == "1h"
        assert settings.core_addr == "dns:///cryptolens-core-headless:50052"
    fetch = load_settings(FetchSettings, env=mounted_env(docs, "cryptolens-fetch", tmp_path / "f2", USER_SECRETS))
    assert fetch.provider == "simulated" and fetch.history_days == 90 and fetch.refresh_s == 30.0
    assert fetch.coingecko_api_key == "CG-k3y"
    alerts = load_settings(AlertsSettings, env=mounted_env(docs, "cryptolens-alerts", tmp_path / "a2", USER_SECRETS))
    assert alerts.rules_file == "/etc/cryptolens/rules.yaml"
    assert alerts.webhook_url == "https://hooks.example.com/T0KEN"
    assert alerts.alertmanager_url == "http://alertmanager.monitoring:9093"
    defaults = render()
    assert env_of(container(defaults, "cryptolens-fetch"))["CRYPTOLENS_PROVIDER"] == "live"
    assert not {"CRYPTOLENS_COINGECKO_API_KEY", "CRYPTOLENS_COINGECKO_API_KEY_FILE"} & set(
        env_of(container(defaults, "cryptolens-fetch")))
    assert not {k for k in env_of(container(defaults, "cryptolens-alerts")) if "URL" in k and "REDIS" not in k}
    ui = env_of(container(defaults, "cryptolens-ui"))
    assert ui["CRYPTOLENS_ALERTS_ADDR"] == "dns:///cryptolens-alerts-headless:50053"
    assert not {k for k in ui if "REDIS" in k}  # the dashboard is a gRPC client only


@pytest.mark.parametrize("values_file, ids", [("default-values.yaml", []), ("all-on-values.yaml", ["btc-sharpe-low"])])
def test_rules_configmap_loads_with_the_alerts_loader(values_file, ids, tmp_path):
    docs = render(ci_values(values_file))
    path = tmp_path / "rules.yaml"
    path.write_text(by_kind(docs, "ConfigMap")["cryptolens-rules"]["data"]["rules.yaml"])
    assert [rule.id for rule in load_rules_file(path)] == ids
    mounts = container(docs, "cryptolens-alerts")["volumeMounts"]
    assert {"name": "rules", "mountPath": "/etc/cryptolens", "readOnly": True} in mounts


def test_optional_features_follow_their_toggles():
    defaults = render()
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert not by_kind(defaults, kind), kind
    off = render({"podDisruptionBudget": {"enabled": False}, "networkPolicy": {"enabled": False},
                  "redis": {"persistence": {"enabled": False}},
                  "components": {n: {**yaml.safe_load((CHART / "values.yaml").read_text())["components"][n],
                                     "autoscaling": {"enabled": False, "maxReplicas": 1,
                                                     "targetCPUUtilizationPercentage": 50}}
                                 for n in ("core", "alerts")} | {"fetch": {"replicas": 1, "grpcPort": 50051,
                                                                          "metricsPort": 9101}}})
    for kind in ("PodDisruptionBudget", "NetworkPolicy", "PersistentVolumeClaim", "HorizontalPodAutoscaler"):
        assert not by_kind(off, kind), kind
    assert "--appendonly no" in container(off, "cryptolens-redis")["args"][0]
    assert by_kind(off, "Deployment")["cryptolens-core"]["spec"]["replicas"] == 2

    docs = render(ci_values("all-on-values.yaml"))
    assert set(by_kind(docs, "ServiceMonitor")) == {f"cryptolens-{n}" for n in GRPC}
    for monitor in by_kind(docs, "ServiceMonitor").values():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert set(pdbs) == {f"cryptolens-{n}" for n in GRPC}
    assert all(p["spec"]["maxUnavailable"] == 1 and "minAvailable" not in p["spec"] for p in pdbs.values())
    claim = by_kind(docs, "PersistentVolumeClaim")["cryptolens-redis"]["spec"]
    assert claim["resources"]["requests"]["storage"] == "2Gi" and claim["storageClassName"] == "standard"
    assert "--appendonly yes" in container(docs, "cryptolens-redis")["args"][0]
    assert by_kind(docs, "HorizontalPodAutoscaler")["cryptolens-core"]["spec"]["minReplicas"] == 3
    assert env_of(container(docs, "cryptolens-fetch"))["CRYPTOLENS_REFRESH_S"] == "30"
    assert pod_specs(docs)["cryptolens-core"]["imagePullSecrets"] == [{"name": "regcred"}]
    min_available = render({"podDisruptionBudget": {"enabled": True, "minAvailable": 1}})
    assert all(p["spec"]["minAvailable"] == 1 and "maxUnavailable" not in p["spec"]
               for p in by_kind(min_available, "PodDisruptionBudget").values())


def test_external_redis_replaces_the_bundled_one(tmp_path):
    docs = render(ci_values("external-redis-values.yaml"))
    assert set(by_kind(docs, "Deployment")) == {f"cryptolens-{n}" for n in GRPC}  # no redis, no ui
    assert "cryptolens-redis" not in by_kind(docs, "Service") and not by_kind(docs, "Ingress")
    assert not by_kind(docs, "Secret") and "cryptolens-redis" not in by_kind(docs, "NetworkPolicy")
    for name in GRPC:  # the URL (password inside) from the user's Secret, as a file
        env = mounted_env(docs, f"cryptolens-{name}", tmp_path / name, USER_SECRETS)
        assert load_settings(SETTINGS[name], env=env).redis_url == "rediss://:pw@my-redis.data.svc:6380/1"
    plain = render({"redis": {"enabled": False}, "externalRedis": {"url": "redis://my-redis.data.svc:6379/0"}})
    for name in GRPC:
        c = container(plain, f"cryptolens-{name}")
        assert env_of(c)["CRYPTOLENS_REDIS_URL"] == "redis://my-redis.data.svc:6379/0"
        assert "secrets" not in {m["name"] for m in c["volumeMounts"]}


def test_helm_test_jobs_check_grpc_health_of_each_service_and_get_stats():
    docs = render()
    jobs = {name: d for name, d in by_kind(docs, "Job").items() if d["metadata"]["annotations"][HOOK] == "test"}
    assert set(jobs) == {f"cryptolens-test-{n}" for n in (*GRPC, "getstats")}
    for job in jobs.values():
        assert job["spec"]["backoffLimit"] == 0 and job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    for name in GRPC:
        command = jobs[f"cryptolens-test-{name}"]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command == ["python", "-m", "services.healthcheck", f"cryptolens-{name}:{DEFAULT_PORTS[name][0]}"]
    assert (ROOT / "services" / "healthcheck.py").is_file()
    command = jobs["cryptolens-test-getstats"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    compile(command[2], "getstats", "exec")  # valid Python
    assert '"cryptolens-core:50052"' in command[2] and 'symbol="BTC-USD"' in command[2]
    assert all(HOOK not in d["metadata"].get("annotations", {}) for d in docs if d["kind"] != "Job")


# --- Prometheus rules ------------------------------------------------------------------------
def rendered_rules(tmp_path: Path) -> Path:
    rule = by_kind(render(ci_values("all-on-values.yaml")), "PrometheusRule")["cryptolens"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


def test_prometheus_rules_are_the_rules_file_and_pass_promtool(tmp_path):
    """The rendered PrometheusRule is files/prometheus-rules.yaml as it is (its promtool unit tests:
    tests/unit/test_prometheus_rules.py)."""
    promtool = require_tool("promtool")
    path = rendered_rules(tmp_path)
    result = subprocess.run([promtool, "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load(path.read_text()) == yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())


# --- kind and the image ----------------------------------------------------------------------
def test_kind_config_maps_the_ingress_ports():
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert kind["kind"] == "Cluster" and kind["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert len(kind["nodes"]) == 1
    node = kind["nodes"][0]
    assert node["role"] == "control-plane"
    patch = yaml.safe_load(node["kubeadmConfigPatches"][0])
    assert patch["kind"] == "InitConfiguration"
    assert patch["nodeRegistration"]["kubeletExtraArgs"]["node-labels"] == "ingress-ready=true"
    assert sorted((m["containerPort"], m["hostPort"], m.get("protocol", "TCP")) for m in node["extraPortMappings"]) == [
        (80, 80, "TCP"), (443, 443, "TCP")]


def test_dockerfile_builds_one_non_root_image_of_the_whole_project():
    dockerfile = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert "pip install --no-cache-dir ." in dockerfile and "HOME=/tmp" in dockerfile
    assert "useradd --uid 10001" in dockerfile
    assert [line for line in lines if line.startswith("USER")][-1] in ("USER 10001", "USER 10001:10001")
    assert [line for line in lines if line.startswith("ENTRYPOINT")] == ['ENTRYPOINT ["cryptolens"]']
    exposed = {int(p) for line in lines if line.startswith("EXPOSE") for p in line.split()[1:]}
    assert exposed == {p for ports in DEFAULT_PORTS.values() for p in ports} | {8501}

    # Everything `pip install .` needs is copied in and not excluded by .dockerignore.
    copied = {part.rstrip("/").removeprefix("./") for line in lines if line.startswith("COPY")
              for part in line.split()[1:-1]}
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir = project["tool"]["setuptools"].get("package-dir", {})
    needed = {"pyproject.toml", project["project"]["readme"]}
    for package in project["tool"]["setuptools"]["packages"]:
        top = package.split(".")[0]
        needed.add(Path(package_dir.get(top, top)).parts[0])
    assert needed <= copied, needed - copied
    assert not needed & ignored
    assert project["project"]["scripts"]["cryptolens"] == "services.cli:main"
