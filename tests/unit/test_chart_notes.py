"""NOTES.txt, what `helm install` prints: the dashboard URL and working grpcurl lines."""

from __future__ import annotations

import re

from helm_python import Chart as HelmChart

from tests.unit.test_helm import CHART, ci_values


def notes(values: dict) -> str:
    with HelmChart.load(CHART) as chart:
        return chart.render(values=values, name="cl", namespace="prod", is_install=True)["cryptolens/templates/NOTES.txt"]


def test_notes_give_the_urls_and_grpcurl_lines():
    text = notes({})
    assert "port-forward svc/cl-cryptolens-ui 8501:80" in text  # no ingress without ui.auth
    local = notes({"ingress": {"enabled": True}, "ui": {"auth": {"allowAnonymous": True}}})
    assert "  http://localhost/ (NO authentication: ui.auth.allowAnonymous=true)\n" in local
    assert "kubectl -n prod port-forward svc/cl-cryptolens-core 50052:50052" in text
    line = re.search(r"grpcurl -plaintext -d '(\{.*\})' localhost:50052 cryptolens.v1.CoreService/GetStats", text)
    assert line and line.group(1) == '{"symbol":"BTC-USD","lookback":"30d"}'
    assert "core: cl-cryptolens-core.prod.svc:50052" in text
    assert "password in Secret cl-cryptolens-redis" in text and "helm test cl -n prod" in text

    tls = notes(ci_values("all-on-values.yaml"))
    assert "https://cryptolens.example.com/ (sign-in through oauth2-proxy)" in tls
    assert ("grpcurl -cacert ca.crt -servername cryptolens-grpc.crypto.svc -cert tls.crt -key tls.key localhost:50052 "
            "grpc.health.v1.Health/Check") in tls and "-plaintext" not in tls
    external = notes(ci_values("external-redis-values.yaml"))
    assert "disabled (ui.enabled=false)" in external and "external, URL from Secret my-redis" in external
