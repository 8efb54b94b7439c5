"""Pieces of `cryptolens up`: the embedded Redis fallback and the provider choice."""

from __future__ import annotations

import argparse
import subprocess

import redis

from services import stack
from tests.conftest import free_port, wait_for_port


def test_embedded_redis_when_none_is_on_path(monkeypatch, tmp_path):
    monkeypatch.setattr(stack.shutil, "which", lambda name: None)
    binary = stack.redis_binary()
    assert "valkey" in binary
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir",
                             str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        assert redis.Redis(port=port).ping()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"provider": "auto", "csv_file": [], **kw})


def test_provider_choice(monkeypatch, capsys):
    monkeypatch.setattr(stack, "providers_reachable", lambda: False)
    assert stack.choose_provider(args()) == "simulated"
    assert "NO NETWORK" in capsys.readouterr().err
    monkeypatch.setattr(stack, "providers_reachable", lambda: True)
    assert stack.choose_provider(args()) == "live"
    assert stack.choose_provider(args(provider="simulated")) == "simulated"
    assert stack.choose_provider(args(csv_file=["BTC-USD:1d=x.csv"])) == "csv"
    assert stack.choose_provider(args(provider="binance,kraken")) == "binance,kraken"


def test_ui_ignores_a_kubernetes_service_link_in_its_port_variable(monkeypatch):
    monkeypatch.setenv("CRYPTOLENS_UI_PORT", "tcp://10.96.0.12:80")
    launched = []
    monkeypatch.setattr(stack.os, "execvp", lambda cmd, argv: launched.append(argv))
    stack.run_ui([])
    assert launched and launched[0][launched[0].index("--server.port") + 1] == "8501"
