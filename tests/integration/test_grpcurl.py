"""Black-box checks with grpcurl: reflection, health, JSON names users type, bad input."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import require_tool


def grpcurl(*args: str, data: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [require_tool("grpcurl"), "-plaintext", "-max-time", "60"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("name, service", [("fetch", "cryptolens.v1.FetchService"),
                                           ("core", "cryptolens.v1.CoreService")])
def test_list_shows_service_health_and_reflection(stack, name, service):
    result = grpcurl(stack[name].addr, "list")
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split()
    assert service in listed and "grpc.health.v1.Health" in listed
    assert "grpc.reflection.v1alpha.ServerReflection" in listed or "grpc.reflection.v1.ServerReflection" in listed


def test_describe_shows_field_comments(stack):
    result = grpcurl(stack["core"].addr, "describe", "cryptolens.v1.GetStatsResponse")
    assert result.returncode == 0, result.stderr
    assert "volatility * sqrt(periods_per_year)" in result.stdout


def test_get_stats_json_uses_documented_names(stack):
    result = grpcurl(stack["core"].addr, "cryptolens.v1.CoreService/GetStats",
                     data={"symbol": "BTC-USD", "interval": "1h", "lookback": "7d", "risk_free_rate": 0.04})
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    for name in ("count", "first", "last", "mean", "min", "max", "change", "volatility", "annualized_volatility",
                 "max_drawdown", "current_drawdown", "sharpe", "sortino", "downside_deviation", "var_95", "cvar_95",
                 "periods_per_year", "data_version", "as_of", "source"):
        assert name in body, name
    assert body["source"] == "simulated" and body["periods_per_year"] == 8760


def test_health_check_by_service_name(stack):
    result = grpcurl(stack["core"].addr, "grpc.health.v1.Health/Check", data={"service": "cryptolens.v1.CoreService"})
    assert result.returncode == 0 and json.loads(result.stdout) == {"status": "SERVING"}


@pytest.mark.parametrize("data, code, needle", [
    ({"symbol": "BTC/USD"}, "InvalidArgument", "symbol"),
    ({"symbol": "BTC-USD", "interval": "7m"}, "InvalidArgument", "interval"),
    ({"symbol": "BTC-USD", "start": "2025-02-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "InvalidArgument", "end"),
    ({"symbol": "QQQQ-USD"}, "NotFound", "QQQQ-USD"),
])
def test_bad_input_is_a_status_never_unknown(stack, data, code, needle):
    result = grpcurl(stack["core"].addr, "cryptolens.v1.CoreService/GetStats", data=data)
    assert result.returncode != 0
    assert f"Code: {code}" in result.stderr and needle in result.stderr and "Unknown" not in result.stderr


def test_a_huge_value_is_invalid_argument_with_a_short_message(stack):
    """A 1 MB symbol: before, the echoed value made the status too big and grpcurl saw ResourceExhausted."""
    result = subprocess.run([require_tool("grpcurl"), "-plaintext", "-max-time", "60", "-d", "@", stack["core"].addr,
                             "cryptolens.v1.CoreService/GetStats"],
                            input=json.dumps({"symbol": "B" * 1_000_000}), capture_output=True, text=True, timeout=90)
    assert result.returncode != 0
    assert "Code: InvalidArgument" in result.stderr and "symbol: 'BBBB" in result.stderr, result.stderr[:300]
    assert "1,000,000 chars" in result.stderr and len(result.stderr) < 1000
