"""The Grafana dashboard ConfigMap: rendered with monitoring, labelled for the sidecar, the file as it is."""

from __future__ import annotations

import json

from tests.unit.test_helm import CHART, by_kind, ci_values, render

NAME = "cryptolens-grafana-dashboard"


def test_the_dashboard_follows_monitoring_unless_forced():
    assert NAME not in by_kind(render(), "ConfigMap")  # monitoring off by default: no dashboard
    assert NAME in by_kind(render({"metrics": {"serviceMonitor": {"enabled": True}}}), "ConfigMap")
    assert NAME in by_kind(render({"metrics": {"grafanaDashboard": {"enabled": True}}}), "ConfigMap")
    off = {"metrics": {"serviceMonitor": {"enabled": True}, "grafanaDashboard": {"enabled": False}}}
    assert NAME not in by_kind(render(off), "ConfigMap")


def test_the_sidecar_finds_the_dashboard_file_unchanged():
    config_map = by_kind(render(ci_values("all-on-values.yaml")), "ConfigMap")[NAME]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["cryptolens.json"])
    assert dashboard == json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "cryptolens" and dashboard["panels"]


def test_namespace_labels_and_annotations_for_the_sidecar():
    values = {"metrics": {"grafanaDashboard": {"enabled": True, "namespace": "monitoring", "labels": {"team": "ops"},
                                               "annotations": {"grafana_folder": "CryptoLens"}}}}
    meta = by_kind(render(values), "ConfigMap")[NAME]["metadata"]
    assert meta["namespace"] == "monitoring" and meta["labels"]["team"] == "ops"
    assert meta["annotations"] == {"grafana_folder": "CryptoLens"}


def test_every_panel_has_a_unique_id_and_uses_the_datasource_variable():
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" and t["expr"] for t in panel["targets"]), panel["title"]
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "job"}
