"""Pieces of `cryptolens up`: Redis server, data folder and port choice, the provider choice."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess

import pytest
import redis

from services import local_redis, stack
from tests.conftest import free_port, require_tool, wait_for_port


def test_embedded_redis_when_none_is_on_path(monkeypatch, tmp_path):
    monkeypatch.setattr(local_redis.shutil, "which", lambda name: None)
    binary = local_redis.default_binary()
    assert "valkey" in binary and local_redis.identify(binary).name.startswith("valkey-")
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


def _time_wait_port() -> int:
    """A port whose only socket is in TIME_WAIT: the server side closed first, as at a stop."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # server closes first: its side goes to TIME_WAIT once the client closes
        client.recv(1)
        client.close()
    return port


def test_a_port_in_time_wait_is_free_a_listener_is_not():
    port = _time_wait_port()
    with open("/proc/net/tcp") as table:
        states = [line.split()[3] for line in table.read().splitlines()[1:]
                  if int(line.split()[1].rsplit(":", 1)[1], 16) == port]
    assert "06" in states  # TIME_WAIT is really there
    assert local_redis.port_free(port)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as every server we start
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not local_redis.port_free(port)


def test_redis_keeps_its_port_else_the_one_it_had(tmp_path):
    assert local_redis.choose_port(_time_wait_port(), tmp_path) > 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        preferred = taken.getsockname()[1]
        last = free_port()
        (tmp_path / local_redis.STATE_FILE).write_text(json.dumps({"port": last}))
        assert local_redis.choose_port(preferred, tmp_path) == last
    assert local_redis.choose_port(preferred, tmp_path) == preferred


def test_the_server_that_wrote_the_data_dir_runs_again(monkeypatch, tmp_path):
    redis_server = require_tool("redis-server")
    embedded = local_redis.identify(local_redis.embedded_binary())
    assert local_redis.choose_server("", tmp_path).path == redis_server  # nothing remembered: PATH first
    local_redis.remember(tmp_path, embedded, 6379)
    assert local_redis.choose_server("", tmp_path) == embedded  # redis-server on PATH, but the data is Valkey's
    assert local_redis.choose_server(redis_server, tmp_path).name.startswith("redis-")  # an explicit choice wins
    state = json.loads((tmp_path / local_redis.STATE_FILE).read_text())
    (tmp_path / local_redis.STATE_FILE).write_text(json.dumps({**state, "name": "valkey-8"}))
    assert local_redis.choose_server("", tmp_path).path == redis_server  # another major version: not reused
    with pytest.raises(SystemExit, match="no such executable"):
        local_redis.choose_server("/nonexistent/redis-server", tmp_path)


def test_only_a_load_failure_moves_data_aside(tmp_path):
    folder = tmp_path / "redis-7"
    (folder / "appendonlydir").mkdir(parents=True)
    log = folder / "redis.log"
    log.write_text("1:M 01 Dec 2026 07:57:33.224 # Bad file format reading the append only file x.rdb\n")
    assert local_redis.could_not_load(folder)
    assert local_redis.last_log_line(folder) == "Bad file format reading the append only file x.rdb"
    log.write_text("1:M 01 Dec 2026 07:57:33.224 # Failed listening on port 6379 (tcp), aborting.\n")
    assert not local_redis.could_not_load(folder)  # a taken port is no reason to hide good data
    (folder / "appendonlydir").rmdir()
    log.write_text("1:M 01 Dec 2026 07:57:33.224 # Bad file format reading the append only file x.rdb\n")
    assert not local_redis.could_not_load(folder)  # nothing to move
    kept = local_redis.move_aside(tmp_path / "redis-7")
    assert kept.name == "redis-7.unreadable-1" and not folder.exists()


def test_a_replay_defaults_to_its_files_symbols_and_interval():
    a = argparse.Namespace(csv_file=["btc-usd:1d=a.csv", "ETH-USD:1d=b.csv"], symbols=None, interval=None)
    stack.replay_defaults(a)
    assert (a.symbols, a.interval) == ("BTC-USD,ETH-USD", "1d")
    given = argparse.Namespace(csv_file=["BTC-USD:1d=a.csv"], symbols="SOL-USD", interval="1h")
    stack.replay_defaults(given)
    assert (given.symbols, given.interval) == ("SOL-USD", "1h")  # what the user says wins
    plain = argparse.Namespace(csv_file=[], symbols=None, interval=None)
    stack.replay_defaults(plain)
    assert (plain.symbols, plain.interval) == ("BTC-USD,ETH-USD,SOL-USD", "1h")
