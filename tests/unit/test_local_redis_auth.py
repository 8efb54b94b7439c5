"""The local Redis of `cryptolens up` requires a generated password, kept owner-only in the data dir
and never on its command line; the readiness check authenticates."""

from __future__ import annotations

import socket
import subprocess

from services import local_redis
from services.stack import _redis_answers
from tests.conftest import free_port, require_tool, wait_for_port


def test_the_password_is_generated_once_kept_private_and_off_the_command_line(tmp_path):
    config, password = local_redis.auth_config(tmp_path)
    assert len(password) >= 32 and config.stat().st_mode & 0o777 == 0o600
    assert local_redis.auth_config(tmp_path) == (config, password)  # the next run: the same one
    server = local_redis.identify(require_tool("redis-server"))
    folder = tmp_path / server.name
    folder.mkdir()
    port = free_port()
    argv = local_redis.argv(server, port, folder, config)
    assert password not in " ".join(argv)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(64).startswith(b"-NOAUTH")  # nothing without the password
        assert _redis_answers(port, password)()
        assert not _redis_answers(port, "not-the-password")()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
