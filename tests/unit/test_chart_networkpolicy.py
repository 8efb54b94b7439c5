"""What the rendered NetworkPolicies allow, evaluated with Kubernetes' semantics (a connection needs
the source's egress and the destination's ingress; a pod no policy selects for a direction is open
in it; peers by podSelector, namespaceSelector or both; rules without peers or ports match all)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.unit.test_helm import GRPC, by_kind, ci_values, pod_specs, render, selects

NS = "crypto"


@dataclass(frozen=True)
class Peer:
    namespace: str | None  # None: outside the cluster
    labels: dict = field(default_factory=dict, hash=False)

    def in_namespace(self, selector: dict) -> bool:
        return self.namespace is not None and selects(selector.get("matchLabels", {}),
                                                      {"kubernetes.io/metadata.name": self.namespace})


def matches(policy_ns: str, peer_rules: list[dict] | None, peer: Peer) -> bool:
    if not peer_rules:
        return True
    for rule in peer_rules:
        assert set(rule) <= {"podSelector", "namespaceSelector"}, rule  # no ipBlock in this chart
        for selector in rule.values():
            assert "matchExpressions" not in selector, rule
        if "namespaceSelector" in rule:
            ns_ok = peer.in_namespace(rule["namespaceSelector"])
        else:
            ns_ok = peer.namespace == policy_ns
        pod_ok = peer.namespace is not None and selects(rule.get("podSelector", {}).get("matchLabels", {}), peer.labels)
        if ns_ok and pod_ok:
            return True
    return False


def port_ok(ports: list[dict] | None, port: int, protocol: str) -> bool:
    return not ports or any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports)


def side_allows(policies: list[dict], pod: Peer, other: Peer, port: int, protocol: str, kind: str) -> bool:
    mine = [p["spec"] for p in policies if pod.namespace == NS and kind in p["spec"]["policyTypes"]
            and selects(p["spec"]["podSelector"].get("matchLabels", {}), pod.labels)]
    if not mine:
        return True
    key, peers = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    return any(matches(NS, rule.get(peers), other) and port_ok(rule.get("ports"), port, protocol)
               for spec in mine for rule in spec.get(key) or [])


def allowed(policies, src: Peer, dst: Peer, port: int, protocol: str = "TCP") -> bool:
    return (side_allows(policies, src, dst, port, protocol, "Egress")
            and side_allows(policies, dst, src, port, protocol, "Ingress"))


def pods_of(docs) -> dict[str, Peer]:
    peers = {}
    for kind in ("Deployment", "Job"):
        for d in by_kind(docs, kind).values():
            labels = d["spec"]["template"]["metadata"]["labels"]
            peers[labels["app.kubernetes.io/component"]] = Peer(NS, labels)
    return peers


NGINX = Peer("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
PROMETHEUS = Peer("monitoring", {"app": "prometheus"})
ALERTMANAGER = Peer("monitoring", {"app": "alertmanager"})
STRANGER = Peer("default", {"app": "something-else"})
DNS = Peer("kube-system", {"k8s-app": "kube-dns"})
INTERNET = Peer(None)


@pytest.fixture(scope="module")
def defaults():
    docs = render()
    return by_kind(docs, "NetworkPolicy").values(), pods_of(docs)


def test_every_pod_is_selected_by_a_policy_in_both_directions():
    for values in ({}, ci_values("all-on-values.yaml"), ci_values("external-redis-values.yaml")):
        docs = render(values)
        policies = list(by_kind(docs, "NetworkPolicy").values())
        for name, spec in pod_specs(docs).items():
            owner = [d for d in (*by_kind(docs, "Deployment").values(), *by_kind(docs, "Job").values())
                     if d["metadata"]["name"] == name][0]
            labels = owner["spec"]["template"]["metadata"]["labels"]
            for kind in ("Ingress", "Egress"):
                assert any(kind in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"]["matchLabels"], labels)
                           for p in policies), (name, kind)


def test_only_the_services_reach_redis_and_redis_reaches_nothing(defaults):
    policies, pods = defaults
    for name in GRPC:
        assert allowed(policies, pods[name], pods["redis"], 6379), name
    for other in (pods["ui"], pods["test"], NGINX, PROMETHEUS, STRANGER):
        assert not allowed(policies, other, pods["redis"], 6379), other
    for target, port, protocol in ((DNS, 53, "UDP"), (INTERNET, 443, "TCP"), (pods["core"], 50052, "TCP")):
        assert not allowed(policies, pods["redis"], target, port, protocol)


def test_only_the_ingress_controller_reaches_the_dashboard(defaults):
    policies, pods = defaults
    assert allowed(policies, NGINX, pods["ui"], 8501)
    for other in (STRANGER, PROMETHEUS, pods["core"], pods["test"]):
        assert not allowed(policies, other, pods["ui"], 8501), other


def test_grpc_only_from_the_release_or_the_ingress_and_metrics_for_scrapers(defaults):
    policies, pods = defaults
    ports = {"fetch": (50051, 9101), "core": (50052, 9102), "alerts": (50053, 9103)}
    for name, (grpc_port, metrics_port) in ports.items():
        for client in (pods["ui"], pods["test"], pods["core"], pods["alerts"], NGINX):
            if client is not pods.get(name):
                assert allowed(policies, client, pods[name], grpc_port), (client, name)
        assert not allowed(policies, STRANGER, pods[name], grpc_port), name
        assert not allowed(policies, PROMETHEUS, pods[name], grpc_port), name
        assert allowed(policies, PROMETHEUS, pods[name], metrics_port), name
        assert not allowed(policies, pods["ui"], pods[name], 6379), name  # only listed ports


def test_egress_dns_everywhere_https_only_where_needed(defaults):
    policies, pods = defaults
    for name in ("fetch", "core", "alerts", "ui", "test"):
        assert allowed(policies, pods[name], DNS, 53, "UDP") and allowed(policies, pods[name], DNS, 53, "TCP"), name
    assert allowed(policies, pods["fetch"], INTERNET, 443)  # the providers
    assert allowed(policies, pods["alerts"], INTERNET, 443)  # webhooks
    for name in ("core", "ui", "test"):
        assert not allowed(policies, pods[name], INTERNET, 443), name
    assert not allowed(policies, pods["fetch"], INTERNET, 80)
    assert not allowed(policies, pods["alerts"], ALERTMANAGER, 9093)  # not without alertsExtraEgress


def test_alerts_extra_egress_opens_only_what_it_names():
    docs = render(ci_values("all-on-values.yaml"))
    policies, pods = by_kind(docs, "NetworkPolicy").values(), pods_of(docs)
    assert allowed(policies, pods["alerts"], ALERTMANAGER, 9093)
    assert not allowed(policies, pods["core"], ALERTMANAGER, 9093)
    assert not allowed(policies, pods["alerts"], STRANGER, 9093)


def test_the_ingress_controller_selector_is_a_value():
    values = {"networkPolicy": {"ingressController": {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "traefik"}}}}}
    docs = render(values)
    policies, pods = by_kind(docs, "NetworkPolicy").values(), pods_of(docs)
    assert allowed(policies, Peer("traefik", {"app": "traefik"}), pods["ui"], 8501)
    assert not allowed(policies, NGINX, pods["ui"], 8501)
