"""The chart's security parts, rendered by Helm's own engine: the dashboard's ingress only with
authentication (or an explicit allowAnonymous), gRPC TLS from one Secret mounted as files, probes
that work with TLS on."""

from __future__ import annotations

import base64
import re

import pytest
import yaml
from helm_python import HelmRenderError, HelmValuesError

from services.common.config import load_settings
from services.common.tls import ClientTLS
from tests.unit.test_helm import (CI_VALUES, GRPC, SETTINGS, USER_SECRETS, by_kind, ci_values, container, env_of,
                                  mounted_env, pod_specs, render)

INGRESS_ON = {"ingress": {"enabled": True}}
TLS_ON = {"tls": {"enabled": True, "secretName": "grpc-tls", "serverName": "grpc.cryptolens.internal"}}
AUTH = "nginx.ingress.kubernetes.io/auth-"


def annotations(values: dict) -> dict[str, str]:
    return by_kind(render(values), "Ingress")["cryptolens"]["metadata"]["annotations"]


def test_an_ingress_without_authentication_does_not_render():
    assert by_kind(render(), "Ingress") == {}  # the default: no ingress at all
    with pytest.raises(HelmRenderError, match="would expose the dashboard to anyone: set ui.auth.basicAuthSecret"):
        render(INGRESS_ON)
    anonymous = annotations({**INGRESS_ON, "ui": {"auth": {"allowAnonymous": True}}})
    assert not [k for k in anonymous if k.startswith(AUTH)]
    assert by_kind(render({**INGRESS_ON, "ui": {"enabled": False}}), "Ingress") == {}  # nothing to expose


def test_basic_auth_and_oauth2_proxy_annotations():
    basic = annotations({**INGRESS_ON, "ui": {"auth": {"basicAuthSecret": "ui-users"}}})
    assert {k: v for k, v in basic.items() if k.startswith(AUTH)} == {
        AUTH + "type": "basic", AUTH + "secret": "ui-users", AUTH + "realm": "CryptoLens"}
    proxy = {"url": "https://auth.example.com/oauth2/auth",
             "signin": "https://auth.example.com/oauth2/start?rd=$escaped_request_uri"}
    sso = annotations({**INGRESS_ON, "ui": {"auth": {"oauth2Proxy": proxy}}})
    assert sso[AUTH + "url"] == proxy["url"] and sso[AUTH + "signin"] == proxy["signin"]
    assert AUTH + "type" not in sso
    with pytest.raises(HelmRenderError, match="not both"):
        render({**INGRESS_ON, "ui": {"auth": {"basicAuthSecret": "ui-users", "oauth2Proxy": proxy}}})
    with pytest.raises(HelmValuesError, match="oauth2Proxy"):  # the schema: a URL or nothing
        render({**INGRESS_ON, "ui": {"auth": {"oauth2Proxy": {"url": "auth.example.com"}}}})


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_every_ci_ingress_has_authentication(values_file):
    for ingress in by_kind(render(ci_values(values_file)), "Ingress").values():
        keys = ingress["metadata"]["annotations"]
        assert AUTH + "type" in keys or AUTH + "url" in keys, values_file


def test_tls_needs_its_secret_and_name():
    with pytest.raises(HelmRenderError, match="tls.enabled needs tls.secretName"):
        render({"tls": {"enabled": True, "serverName": "x"}})
    with pytest.raises(HelmRenderError, match="tls.enabled needs tls.serverName"):
        render({"tls": {"enabled": True, "secretName": "grpc-tls"}})


@pytest.mark.parametrize("mutual", [False, True])
def test_tls_files_reach_every_server_and_client(mutual, tmp_path):
    values = {"tls": {**TLS_ON["tls"], "mutual": mutual}}
    docs = render(values)
    secrets = {**USER_SECRETS, "grpc-tls": USER_SECRETS["cryptolens-grpc-tls"]}
    for name in GRPC:
        c = container(docs, f"cryptolens-{name}")
        env = mounted_env(docs, f"cryptolens-{name}", tmp_path / name, secrets)
        settings = load_settings(SETTINGS[name], env=env)
        assert open(settings.tls_cert_file).read() == "CERT\n" and open(settings.tls_key_file).read() == "KEY\n"
        assert open(settings.tls_ca_file).read() == "CA\n" and settings.tls_server_name == "grpc.cryptolens.internal"
        assert bool(settings.tls_client_ca_file) == mutual and bool(settings.tls_client_cert_file) == mutual
        # kubelet's native gRPC probe cannot do TLS: the image's health client, on loopback.
        port = c["ports"][0]["containerPort"]
        assert "grpc" not in c["readinessProbe"] and "grpc" not in c["livenessProbe"]
        assert c["readinessProbe"]["exec"]["command"] == ["python", "-m", "services.healthcheck", f"127.0.0.1:{port}"]
        assert c["livenessProbe"]["exec"]["command"][-1] == "liveness"
        assert all(key not in env_of(c) or not env_of(c)[key].startswith("-----") for key in env_of(c))
    for name, spec in pod_specs(docs).items():  # the dashboard and the helm test Jobs verify the servers
        if name.endswith("-redis"):
            continue
        client_env = {k: v for k, v in env_of(spec["containers"][0]).items() if isinstance(v, str)}
        tls = ClientTLS.from_env(client_env)
        assert tls.ca_file.endswith("/ca.crt") and tls.server_name == "grpc.cryptolens.internal", name
        assert bool(tls.cert_file) == mutual, name
        sources = [s for v in spec["volumes"] if "projected" in v for s in v["projected"]["sources"]]
        assert {"name": "grpc-tls", "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key",
                "path": "tls.key"}, {"key": "ca.crt", "path": "ca.crt"}]} in [s["secret"] for s in sources], name


def test_without_tls_the_probes_stay_native_grpc():
    for name in GRPC:
        c = container(render(), f"cryptolens-{name}")
        assert "grpc" in c["readinessProbe"] and not [k for k in env_of(c) if k.startswith("CRYPTOLENS_TLS_")]


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_every_secret_comes_from_a_secret_file(values_file):
    """No pod spec carries a secret's value; a setting that is a secret is always a *_FILE."""
    docs = render(ci_values(values_file))
    values = [base64.b64decode(v).decode() for s in by_kind(docs, "Secret").values()
              for v in s.get("data", {}).values()]
    for name, spec in pod_specs(docs).items():
        text = yaml.safe_dump(spec)
        assert not [v for v in values if v in text], name
        for c in spec["containers"]:
            for key, value in env_of(c).items():
                if isinstance(value, dict):  # valueFrom: a Secret key in the environment
                    assert "secretKeyRef" not in value or name.endswith("-redis"), (name, key)
                    continue
                assert not re.search(r"://[^/@]*@", value), (name, key)  # no credentials in a URL
                if re.search(r"PASSWORD|API_KEY|WEBHOOK_URL|ALERTMANAGER_URL|TLS_.*KEY", key):
                    assert key.endswith("_FILE") and value.startswith("/etc/"), (name, key)
