"""The kind path as far as it can be checked without Docker: the scripts parse, use the files this
repository ships, and the e2e suite is kept out of the default run and refuses clearly without a
cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import ROOT
from tests.e2e.cluster import NEEDS_CLUSTER

SCRIPTS = ("kind-up.sh", "kind-down.sh")


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses_and_stops_on_errors(script):
    path = ROOT / "scripts" / script
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=10, check=False)
    assert result.returncode == 0, result.stderr
    assert "set -euo pipefail" in path.read_text() and os.access(path, os.X_OK)


def test_kind_up_builds_loads_installs_and_waits():
    text = (ROOT / "scripts" / "kind-up.sh").read_text()
    for step in ("kind create cluster --name \"$CLUSTER\" --config kind-config.yaml",
                 "docker build -t \"$IMAGE\" .", "kind load docker-image \"$IMAGE\" --name \"$CLUSTER\"",
                 "--for=condition=Ready pod", "helm upgrade --install \"$RELEASE\" helm/cryptolens",
                 "--set image.pullPolicy=Never", "--wait", "helm test \"$RELEASE\"", "http://localhost/"):
        assert step in text, step
    assert (ROOT / "kind-config.yaml").is_file() and (ROOT / "helm" / "cryptolens" / "Chart.yaml").is_file()
    assert "kind delete cluster --name \"$CLUSTER\"" in (ROOT / "scripts" / "kind-down.sh").read_text()


def test_the_default_run_leaves_e2e_out():
    testpaths = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["testpaths"]
    assert testpaths == ["tests/unit", "tests/integration"]


def test_e2e_without_a_cluster_exits_non_zero_with_one_clear_line(tmp_path):
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-such-kubeconfig"), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/e2e", "-q", "-p", "no:cacheprovider"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 3, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if NEEDS_CLUSTER in line]
    assert len(lines) == 1 and "scripts/kind-up.sh" in lines[0]
    assert "passed" not in result.stdout and "skipped" not in result.stdout
