"""The protobuf contract: generated code is current, buf lint is clean, JSON names are what users type."""

from __future__ import annotations

import subprocess
import sys

from cryptolens.v1 import alerts_pb2, common_pb2, core_pb2, fetch_pb2
from tests.conftest import ROOT, require_tool

FILES = (common_pb2, fetch_pb2, core_pb2, alerts_pb2)


def test_generated_code_matches_proto():
    result = subprocess.run([sys.executable, "scripts/gen_proto.py", "--check"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_stale_generated_code_is_detected(tmp_path):
    """The check must fail when proto/ and gen/ disagree: run it on a copy with an edited proto."""
    import shutil

    copy = tmp_path / "repo"
    for part in ("proto", "gen", "scripts"):
        shutil.copytree(ROOT / part, copy / part)
    proto = copy / "proto" / "cryptolens" / "v1" / "common.proto"
    proto.write_text(proto.read_text().replace("bool suspect = 8;", "bool suspect = 8;\n  // New.\n  int32 extra = 9;"))
    result = subprocess.run([sys.executable, "scripts/gen_proto.py", "--check"], cwd=copy, capture_output=True,
                            text=True)
    assert result.returncode == 1 and "stale" in result.stdout


def test_buf_lint_is_clean():
    buf = require_tool("buf")
    result = subprocess.run([buf, "lint"], cwd=ROOT / "proto", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _messages(descriptor):
    for message in descriptor.message_types_by_name.values():
        yield message
        yield from message.nested_types


def test_json_names_are_the_proto_field_names():
    """grpcurl shows and accepts snake_case names such as annualized_volatility."""
    mismatched = [f"{m.full_name}.{f.name} -> {f.json_name}"
                  for module in FILES for m in _messages(module.DESCRIPTOR) for f in m.fields if f.json_name != f.name]
    assert mismatched == []


def test_service_names_and_methods():
    services = {s.full_name: [m.name for m in s.methods]
                for module in FILES for s in module.DESCRIPTOR.services_by_name.values()}
    assert services["cryptolens.v1.FetchService"] == ["ListSymbols", "Backfill", "GetBars", "WatchBars"]
    assert services["cryptolens.v1.CoreService"] == ["GetStats", "GetTimeseries", "GetCorrelation",
                                                     "GetPortfolioRisk", "GetForecast", "WatchPrices"]
    assert {"Evaluate", "ListRules", "CreateRule", "UpdateRule", "DeleteRule", "ListAlerts", "WatchAlerts",
            "Backtest"} <= set(services["cryptolens.v1.AlertsService"])


def test_stats_response_has_the_documented_metric_names():
    fields = set(core_pb2.GetStatsResponse.DESCRIPTOR.fields_by_name)
    wanted = ("count first last mean min max change volatility annualized_volatility max_drawdown current_drawdown "
              "sharpe sortino downside_deviation var_95 cvar_95 beta periods_per_year gaps data_version as_of "
              "source").split()
    assert set(wanted) <= fields
    request = set(core_pb2.GetStatsRequest.DESCRIPTOR.fields_by_name)
    assert {"symbol", "interval", "lookback", "start", "end", "risk_free_rate", "benchmark"} <= request


def test_metrics_are_optional_so_undefined_stays_unset():
    response = core_pb2.GetStatsResponse(sharpe=0.0)
    assert response.HasField("sharpe") and not response.HasField("sortino")


def test_every_field_and_rpc_is_commented():
    """Comments are what `grpcurl describe` shows; buf's COMMENTS rules enforce them, checked here too."""
    text = "".join((ROOT / "proto" / "cryptolens" / "v1" / f"{n}.proto").read_text()
                   for n in ("common", "fetch", "core", "alerts"))
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(("rpc ", "message ", "service ", "enum ")) or (
            stripped.endswith(";") and "=" in stripped and not stripped.startswith(("option", "syntax", "//"))
        ):
            assert lines[i - 1].strip().startswith("//"), f"uncommented: {stripped}"
