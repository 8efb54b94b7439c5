"""``cryptolens up``: the whole stack on one machine, no cluster and no network needed.

Starts Redis (see services/local_redis.py: which server, which data folder), then Fetch, Core,
Alerts and the UI as child processes, each once the one before answers its health check; prints
where everything is; restarts a child that dies (with backoff); stops every child on
Ctrl-C/SIGTERM, the services before Redis.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services import local_redis
from services.common import redact
from services.common.config import DEFAULT_PORTS
from services.common.tls import ClientTLS, TLSError, channel

REDIS_PORT, UI_PORT = 6379, 8501
DEFAULT_SYMBOLS, DEFAULT_INTERVAL = "BTC-USD,ETH-USD,SOL-USD", "1h"
STOP_GRACE_S = 6.0  # services drain within their 5 s grace
BACKOFF_S, BACKOFF_CAP_S = 1.0, 30.0  # restart delays 1, 2, 4 ... 30 s
STABLE_S = 60.0  # a child that ran this long starts again from the shortest delay


def providers_reachable(host: str = "api.coingecko.com", port: int = 443, timeout_s: float = 2.0) -> bool:
    """Can this machine open a connection to CoinGecko? Decides what `--provider auto` means."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def choose_provider(args: argparse.Namespace) -> str:
    if args.csv_file and args.provider in ("auto", "simulated"):
        return "csv"
    if args.provider != "auto":
        return args.provider
    if providers_reachable():
        print("cryptolens up: providers are reachable: using live data (CoinGecko, then exchanges)", flush=True)
        return "live"
    print("cryptolens up: NO NETWORK to the price providers: serving SIMULATED data "
          "(--provider live to insist, --csv-file to replay real history)", file=sys.stderr, flush=True)
    return "simulated"


def replay_defaults(args: argparse.Namespace) -> None:
    """A replay serves its files as they are: with no --symbols/--interval, the files' symbols and interval."""
    targets = [spec.partition("=")[0].partition(":") for spec in args.csv_file]
    if args.symbols is None:
        args.symbols = ",".join(dict.fromkeys(t[0].strip().upper() for t in targets)) or DEFAULT_SYMBOLS
    if args.interval is None:
        intervals = [t[2].strip() for t in targets if t[2].strip()]
        args.interval = max(dict.fromkeys(intervals), key=intervals.count) if intervals else DEFAULT_INTERVAL


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cryptolens up", description=__doc__.splitlines()[0])
    p.add_argument("--symbols", default=None,
                   help=f"watch list, comma separated (default {DEFAULT_SYMBOLS}, or the --csv-file symbols)")
    p.add_argument("--interval", default=None,
                   help=f"bar interval of the watch list (default {DEFAULT_INTERVAL}, or the --csv-file interval)")
    p.add_argument("--provider", default="auto",
                   help="auto (default: live when the providers are reachable, else simulated), live (CoinGecko "
                        "then exchanges; never simulated data), simulated (offline), csv, or a comma list")
    p.add_argument("--csv-file", action="append", default=[], metavar="SYMBOL:INTERVAL=PATH",
                   help="a CSV file for the csv provider (repeatable); implies --provider csv")
    p.add_argument("--history-days", default="90", help="days of history to load on first sight")
    p.add_argument("--redis-url", default=os.environ.get("CRYPTOLENS_REDIS_URL", ""),
                   help="use this Redis instead of starting one; one with a password in it belongs in "
                        "the environment, not on the command line [CRYPTOLENS_REDIS_URL]")
    p.add_argument("--redis-server", default=os.environ.get(local_redis.ENV, ""), metavar="PATH",
                   help="the Redis server binary to start (default: the one that last ran on the data dir, else "
                        f"redis-server or valkey-server from PATH, else the embedded one) [{local_redis.ENV}]")
    p.add_argument("--host", default="127.0.0.1", help="address every server binds to")
    p.add_argument("--port-offset", type=int, default=0, metavar="N",
                   help="add N to every default port (gRPC 50051-50053, metrics 9101-9103, UI 8501, Redis 6379), "
                        "so a second stack can run beside the first")
    p.add_argument("--ui-port", type=int, default=None, help="UI port (default 8501 + offset)")
    p.add_argument("--no-ui", action="store_true", help="start the services only")
    p.add_argument("--data-dir", default=".cryptolens", help="where the local Redis keeps its data")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for every health check")
    return p


# Run before the child's own program: the kernel sends it SIGTERM when `cryptolens up` dies, even
# by SIGKILL, so no orphan keeps the ports or the data dir. A tiny exec trampoline rather than
# Popen(preexec_fn=...): forking a process whose gRPC threads are running is not safe.
_DIE_WITH_PARENT = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "  # PR_SET_PDEATHSIG
                    "os.getppid() == int(sys.argv[1]) or sys.exit(1); os.execvp(sys.argv[2], sys.argv[2:])")


def _dying_with_parent(argv: list[str]) -> list[str]:
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]


def _grpc_serving(port: int, tls: ClientTLS, credentials: grpc.ChannelCredentials | None) -> Callable[[], bool]:
    def check() -> bool:
        with channel(f"127.0.0.1:{port}", tls, credentials=credentials) as conn:
            try:
                reply = health_pb2_grpc.HealthStub(conn).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    return check


def _command(*words: str) -> bytes:
    return f"*{len(words)}\r\n".encode() + b"".join(f"${len(w)}\r\n{w}\r\n".encode() for w in words)


def _redis_answers(port: int, password: str) -> Callable[[], bool]:
    """AUTH and PING on a raw socket: an answer at once, no client retries (and LOADING is not ready)."""
    hello = _command("AUTH", password) + _command("PING")

    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(hello)
                reply = b""
                while reply.count(b"\r\n") < 2 and (chunk := conn.recv(256)):
                    reply += chunk
                return reply == b"+OK\r\n+PONG\r\n"
        except OSError:
            return False
    return check


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False
    return check


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class Child:
    """One supervised process: how to start it and how to tell it is ready."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    # Redis: its output goes to its own log file, and it runs in its own session, so a terminal's
    # Ctrl-C reaches the services first and Redis is stopped last, once they drained.
    background: bool = False
    proc: subprocess.Popen | None = None
    started: float = 0.0
    failures: int = 0  # deaths in a row, for the backoff
    restart_at: float | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(_dying_with_parent(self.argv), env={**os.environ, **self.env},
                                     stdout=subprocess.DEVNULL if self.background else None,
                                     start_new_session=self.background)
        self.started = time.monotonic()


class ChildFailed(Exception):
    def __init__(self, child: Child, code: int):
        super().__init__(f"{child.name} {_how(code)} while starting")
        self.child, self.code = child, code


class Stack:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        offset = args.port_offset
        self.ports = {name: (grpc_port + offset, metrics + offset) for name, (grpc_port, metrics) in
                      DEFAULT_PORTS.items()}
        self.ui_port = args.ui_port if args.ui_port is not None else UI_PORT + offset
        self.children: list[Child] = []
        self.redis_url = args.redis_url
        self.redis: Child | None = None
        self.redis_folder: Path | None = None
        self.redis_choice: tuple[Path, local_redis.ServerBinary, int] | None = None
        self.redis_note = ""
        self.tls = ClientTLS.from_env()  # the services get CRYPTOLENS_TLS_* from this environment too
        self._lock = None

    # --- the plan ------------------------------------------------------------------------
    def check_ports(self) -> None:
        wanted = [p for pair in self.ports.values() for p in pair] + ([] if self.args.no_ui else [self.ui_port])
        if not all(0 < p < 65536 for p in [*wanted, REDIS_PORT + self.args.port_offset]):
            raise SystemExit(f"cryptolens up: --port-offset {self.args.port_offset} moves ports outside 1-65535")
        taken = [p for p in wanted if not local_redis.port_free(p, self.args.host)]
        if taken:
            raise SystemExit(f"cryptolens up: port(s) {', '.join(map(str, taken))} already in use on {self.args.host} "
                             "(another cryptolens running? --port-offset N runs a second one beside it)")

    def lock_data_dir(self, data: Path) -> None:
        """One `cryptolens up` per data folder: two Redis servers on one append-only file corrupt it."""
        self._lock = open(data / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SystemExit(f"cryptolens up: another cryptolens up is using the data dir {data}") from None

    def plan_redis(self) -> None:
        if self.redis_url:
            return
        data = Path(self.args.data_dir).resolve()
        data.mkdir(parents=True, exist_ok=True)
        self.lock_data_dir(data)
        server = local_redis.choose_server(self.args.redis_server, data)
        folder = data / server.name
        folder.mkdir(exist_ok=True)
        port = local_redis.choose_port(REDIS_PORT + self.args.port_offset, data)
        self.redis_choice = (data, server, port)  # remembered in the data dir once it has started
        config, password = local_redis.auth_config(data)
        self.redis_url = f"redis://:{password}@127.0.0.1:{port}/0"  # to the services in their environment only
        self.redis_note = f"({server.kind} {server.version}, data in {folder}, password in {config})"
        self.redis = Child("redis", local_redis.argv(server, port, folder, config), _redis_answers(port, password),
                           background=True)
        self.redis_folder = folder
        self.children.append(self.redis)

    def plan_services(self) -> None:
        a = self.args
        try:
            credentials = self.tls.credentials()
        except TLSError as exc:
            raise SystemExit(f"cryptolens up: {exc}") from None
        env = {
            "CRYPTOLENS_REDIS_URL": self.redis_url, "CRYPTOLENS_HOST": a.host, "CRYPTOLENS_SYMBOLS": a.symbols,
            "CRYPTOLENS_INTERVAL": a.interval, "CRYPTOLENS_PROVIDER": a.provider,
            "CRYPTOLENS_CSV_FILE": ",".join(a.csv_file), "CRYPTOLENS_HISTORY_DAYS": a.history_days,
            **{f"CRYPTOLENS_{name.upper()}_ADDR": f"127.0.0.1:{grpc_port}"
               for name, (grpc_port, _) in self.ports.items()},
        }
        for name in ("fetch", "core", "alerts"):  # each needs the one before: Alerts evaluates through Fetch
            grpc_port, metrics_port = self.ports[name]
            self.children.append(Child(name, [sys.executable, "-m", "services.cli", "serve", name, "--grpc-port",
                                              str(grpc_port), "--metrics-port", str(metrics_port)],
                                       _grpc_serving(grpc_port, self.tls, credentials), env))
        if not a.no_ui:
            self.children.append(Child("ui", [sys.executable, "-m", "services.cli", "ui", "--port", str(self.ui_port),
                                              "--host", a.host],
                                       _http_ok(f"http://127.0.0.1:{self.ui_port}/_stcore/health"), env))

    # --- running -------------------------------------------------------------------------
    def wait_ready(self, child: Child, deadline: float) -> None:
        while not child.ready():
            code = child.proc.poll()
            if code is not None:
                raise ChildFailed(child, code)
            if time.monotonic() > deadline:
                raise SystemExit(f"cryptolens up: {child.name} was not ready within {self.args.timeout:g} s")
            time.sleep(0.1)

    def start_all(self) -> None:
        deadline = time.monotonic() + self.args.timeout
        for child in self.children:
            child.start()
            try:
                self.wait_ready(child, deadline)
            except ChildFailed:
                if child is not self.redis or not local_redis.could_not_load(self.redis_folder):
                    raise
                self.start_redis_empty(deadline)
            if child is self.redis:
                local_redis.remember(*self.redis_choice)

    def start_redis_empty(self, deadline: float) -> None:
        """Never a stack that will not start: keep unreadable data aside and start with none."""
        reason = local_redis.last_log_line(self.redis_folder) or "see its redis.log"
        kept = local_redis.move_aside(self.redis_folder)
        self.redis_folder.mkdir()
        print(f"cryptolens up: Redis could not load {self.redis_folder} ({reason}); moved it to {kept.name} and "
              "started with an empty Redis", file=sys.stderr, flush=True)
        self.redis.start()
        self.wait_ready(self.redis, deadline)

    def supervise(self) -> None:
        """Restart any child that dies, with backoff; the others keep running."""
        while True:
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        child.restart_at = None
                        child.start()
                    continue
                code = child.proc.poll()
                if code is None:
                    continue
                ran = now - child.started
                child.failures = 1 if ran > STABLE_S else child.failures + 1
                delay = min(BACKOFF_CAP_S, BACKOFF_S * 2 ** (child.failures - 1))
                print(f"cryptolens up: {child.name} {_how(code)} after {ran:.0f} s; restarting it in {delay:g} s",
                      file=sys.stderr, flush=True)
                child.restart_at = now + delay
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM the UI and services (they drain), then Redis; SIGKILL what outlives its grace."""
        services = [c for c in self.children if c is not self.redis]
        for group in (services, [self.redis] if self.redis else []):
            running = [c.proc for c in group if c.proc is not None and c.proc.poll() is None]
            for proc in running:
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            for proc in running:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _grpcurl_flags(tls: ClientTLS) -> str:
    if not tls.enabled:
        return "-plaintext"
    mtls = f" -cert {tls.cert_file} -key {tls.key_file}" if tls.cert_file else ""
    return f"-cacert {tls.ca_file}{mtls}"


def _banner(stack: Stack) -> str:
    f, c, a = (stack.ports[n] for n in ("fetch", "core", "alerts"))
    flags = _grpcurl_flags(stack.tls)
    ui = "" if stack.args.no_ui else f"  Dashboard   http://localhost:{stack.ui_port}\n"
    return (
        "\nCryptoLens is up.\n"
        f"{ui}"
        f"  Fetch       localhost:{f[0]}   metrics http://localhost:{f[1]}/metrics\n"
        f"  Core        localhost:{c[0]}   metrics http://localhost:{c[1]}/metrics\n"
        f"  Alerts      localhost:{a[0]}   metrics http://localhost:{a[1]}/metrics\n"
        f"  Redis       {redact.redis_url(stack.redis_url)} {stack.redis_note}\n\n"
        "Try:\n"
        f"  grpcurl {flags} localhost:{c[0]} list\n"
        f"  grpcurl {flags} -d '{{\"symbol\":\"BTC-USD\",\"lookback\":\"30d\"}}' localhost:{c[0]} "
        "cryptolens.v1.CoreService/GetStats\n"
        f"  grpcurl {flags} localhost:{a[0]} cryptolens.v1.AlertsService/ListAlerts\n\n"
        "A process that dies is restarted. Ctrl-C stops everything.\n"
    )


def run_up(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    stack = Stack(args)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        stack.check_ports()
        args.provider = choose_provider(args)
        replay_defaults(args)
        stack.plan_redis()
        stack.plan_services()
        stack.start_all()
        print(_banner(stack), flush=True)
        stack.supervise()
    except KeyboardInterrupt:
        print("\ncryptolens up: stopping…", file=sys.stderr, flush=True)
    except ChildFailed as exc:
        # Exit code 2: the service could not use its settings and said why in one line already.
        code = 2 if exc.code == 2 else 1
        if code != 2:
            hint = f" ({local_redis.last_log_line(stack.redis_folder)})" if exc.child is stack.redis else ""
            print(f"cryptolens up: {exc}{hint}; stopping the stack", file=sys.stderr, flush=True)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
    return code


def run_ui(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cryptolens ui", description="Run the Streamlit dashboard.")
    # Kubernetes can inject CRYPTOLENS_UI_PORT=tcp://ip:port (a service link): only a number counts.
    env_port = os.environ.get("CRYPTOLENS_UI_PORT", "")
    p.add_argument("--port", type=int, default=int(env_port) if env_port.isdigit() else 8501)
    p.add_argument("--host", default=os.environ.get("CRYPTOLENS_HOST", "0.0.0.0"))
    args = p.parse_args(argv)
    app = Path(__file__).resolve().parents[1] / "ui" / "app.py"
    if not app.exists():
        import ui

        app = Path(ui.__file__).parent / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port),
           "--server.address", args.host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--theme.base", "light", "--theme.primaryColor", "#2f6fde",
           "--client.toolbarMode", "viewer"]
    os.execvp(cmd[0], cmd)
    return 0  # not reached
