"""The operator alerts (helm/cryptolens/files/prometheus-rules.yaml) with Debian's promtool:
``check rules`` lints them, ``test rules`` runs tests/promtool/*.test.yaml, where every alert has
a case where it fires and one where it must not."""

from __future__ import annotations

import subprocess

import yaml

from tests.conftest import ROOT, require_tool

RULES = ROOT / "helm" / "cryptolens" / "files" / "prometheus-rules.yaml"
CASES = ROOT / "tests" / "promtool"


def alert_names() -> set[str]:
    return {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}


def test_rules_pass_promtool_check():
    result = subprocess.run([require_tool("promtool"), "check", "rules", str(RULES)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


def test_every_alert_fires_when_it_should_and_only_then():
    cases = sorted(CASES.glob("*.test.yaml"))
    result = subprocess.run([require_tool("promtool"), "test", "rules", *map(str, cases)], cwd=CASES,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = [case for path in cases for test in yaml.safe_load(path.read_text())["tests"]
              for case in test["alert_rule_test"]]
    for name in alert_names():  # each alert: a case expecting it to fire, and one expecting silence
        assert any(c["exp_alerts"] for c in checks if c["alertname"] == name), name
        assert any(not c["exp_alerts"] for c in checks if c["alertname"] == name), name

def test_the_required_alerts_exist():
    assert {"CryptoLensInstanceDown", "CryptoLensServiceAbsent", "CryptoLensRpcErrors", "CryptoLensDataStale",
            "CryptoLensStreamDisconnected", "CryptoLensOutboxBackingUp", "CryptoLensDeadLetters",
            "CryptoLensRedisDown"} <= alert_names()
