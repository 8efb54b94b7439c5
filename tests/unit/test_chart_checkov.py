"""checkov's Kubernetes policies over the chart rendered with every CI value set (defaults included),
in one checkov run over a directory of renders, less the four checks that are matters of taste for
a chart: CKV_K8S_43 (image digest), CKV_K8S_15 (pull policy Always), CKV_K8S_11 (CPU limits),
CKV_K8S_21 (explicit namespace). A render with NetworkPolicies off rides along as a control: it
must fail, and only on pods without a policy, so a checkov that checked nothing could not pass."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from tests.unit.test_helm import CI_VALUES, ci_values, render

SKIPPED = ("CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_11", "CKV_K8S_21")
CONTROL = "control-no-networkpolicy.yaml"


def run_checkov(directory: Path) -> list[dict]:
    checkov = Path(sys.executable).with_name("checkov")
    result = subprocess.run(
        [str(checkov), "--directory", str(directory), "--framework", "kubernetes", "--output", "json",
         "--skip-download", "--skip-check", ",".join(SKIPPED)],  # offline: no guideline download
        capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode in (0, 1), result.stderr[-2000:]  # 1: some check failed (the control)
    report = json.loads(result.stdout)
    return report if isinstance(report, list) else [report]


def test_checkov_kubernetes_checks_pass_on_every_value_set(tmp_path):
    # checkov's graph links a NetworkPolicy to pods by labels across all files: a release name per
    # render keeps each value set's pods to its own policies.
    for i, name in enumerate(CI_VALUES):
        (tmp_path / name).write_text(yaml.safe_dump_all(render(ci_values(name), name=f"set{i}")))
    (tmp_path / CONTROL).write_text(yaml.safe_dump_all(render({"networkPolicy": {"enabled": False}}, name="control")))

    [report] = run_checkov(tmp_path)
    results = report["results"]
    assert {c["check_id"] for c in results.get("skipped_checks", [])} <= set(SKIPPED)
    passed = Counter(Path(c["file_path"]).name for c in results["passed_checks"])
    failed: dict[str, list] = {}
    for check in results["failed_checks"]:
        failed.setdefault(Path(check["file_path"]).name, []).append((check["check_id"], check["resource"]))

    for name in CI_VALUES:
        assert failed.get(name, []) == [], (name, failed.get(name))
        assert passed[name] > 300, (name, passed[name])  # every workload was really checked
    control = failed.pop(CONTROL)
    assert {check for check, _ in control} == {"CKV2_K8S_6"}  # pods without a NetworkPolicy, nothing else
    assert len(control) == 9  # fetch, core, alerts, ui, redis and the four test Jobs' pods
    assert set(failed) == set()
    print({name: passed[name] for name in sorted(passed)})
