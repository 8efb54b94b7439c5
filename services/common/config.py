"""Typed settings from flags and ``CRYPTOLENS_*`` environment variables.

Every field of a settings dataclass becomes a flag (``grpc_port`` → ``--grpc-port``) and an
environment variable (``CRYPTOLENS_GRPC_PORT``). Precedence: flag, then environment, then the
default. ``CRYPTOLENS_<NAME>_FILE`` names a file holding the value instead (a mounted Kubernetes
Secret: passwords and tokens never sit in the environment). A bad value raises ``SettingsError``
with one line a person can act on; the CLI prints it and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from services.common import redact
from services.common.errors import InvalidArgument, short
from services.common.intervals import check_interval, check_symbol
from services.common.redis_client import check_url

ENV_PREFIX = "CRYPTOLENS_"

# Default ports (DESIGN §3): gRPC and Prometheus metrics per service.
DEFAULT_PORTS = {"fetch": (50051, 9101), "core": (50052, 9102), "alerts": (50053, 9103)}
DEFAULT_SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD")


class SettingsError(ValueError):
    """A setting has a bad value; the message names the flag and the environment variable."""


def setting(default: Any, help: str, check: Callable[[Any], Any] | None = None,
            redact: Callable[[str], str] | None = None, **kw) -> Any:
    """A settings field with help text, an optional validator returning the cleaned value and, for
    a value that is or holds a secret, how to show it in an error line (services/common/redact.py)."""
    meta = {"help": help, "check": check, "redact": redact}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number between 0 and 65535")
    return value


def positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def non_negative(value: float) -> float:
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _symbols(values: list[str]) -> list[str]:
    try:
        cleaned = [check_symbol(v) for v in values if v.strip()]
    except InvalidArgument as exc:
        raise ValueError(exc.message.split(": ", 1)[1]) from None
    if not cleaned:
        raise ValueError("needs at least one symbol, e.g. BTC-USD")
    return list(dict.fromkeys(cleaned))


def _interval(value: str) -> str:
    try:
        return check_interval(value)
    except InvalidArgument as exc:
        raise ValueError(exc.message.split(": ", 1)[1]) from None


def _log_level(value: str) -> str:
    if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return value.upper()


@dataclass
class ServiceSettings:
    """Settings every gRPC service shares."""

    host: str = setting("0.0.0.0", "address the gRPC and metrics servers bind to")
    grpc_port: int = setting(0, "gRPC port (0: the service's default)", port)
    metrics_port: int = setting(0, "Prometheus /metrics port (0: the service's default)", port)
    redis_url: str = setting("redis://127.0.0.1:6379/0", "Redis URL: redis:// or rediss:// (one Redis), "
                             "redis+cluster://h:p,h:p (a Cluster), redis+sentinel://h:p,h:p/master (Sentinel); "
                             "a password in it: prefer CRYPTOLENS_REDIS_URL_FILE", check_url, redact.redis_url)
    redis_username: str = setting("", "Redis ACL user (instead of the URL's)")
    redis_password: str = setting("", "Redis password (instead of the URL's; best from a file: "
                                  "CRYPTOLENS_REDIS_PASSWORD_FILE)", redact=redact.value)
    redis_ca_file: str = setting("", "CA certificate file that signs the Redis servers' TLS certificates")
    redis_sentinel_password: str = setting("", "password of the Sentinels themselves, if they require one",
                                           redact=redact.value)
    log_level: str = setting("INFO", "DEBUG, INFO, WARNING or ERROR", _log_level)
    grace_s: float = setting(5.0, "seconds in-flight calls get on shutdown", positive)
    redis_check_s: float = setting(2.0, "seconds between Redis health checks", positive)
    max_connection_age_s: float = setting(
        300.0, "seconds before a client connection is recycled (spreads load over replicas)", positive
    )
    fetch_addr: str = setting("127.0.0.1:50051", "Fetch service address (host:port or dns:///...)")
    core_addr: str = setting("127.0.0.1:50052", "Core service address")
    alerts_addr: str = setting("127.0.0.1:50053", "Alerts service address")
    symbols: list[str] = setting(list(DEFAULT_SYMBOLS), "watch list, comma separated", _symbols)
    interval: str = setting("1h", "default bar interval", _interval)
    stale_after_bars: int = setting(3, "a series is stale when its newest bar closed more than this many "
                                    "intervals ago", positive)
    # gRPC TLS (services/common/tls.py): the server side, then the client side (calls to other services).
    tls_cert_file: str = setting("", "PEM certificate the gRPC server presents (with --tls-key-file: TLS only)")
    tls_key_file: str = setting("", "PEM private key of --tls-cert-file")
    tls_client_ca_file: str = setting("", "PEM CA that signs client certificates: set, clients need one (mTLS)")
    tls_ca_file: str = setting("", "PEM CA this service's gRPC clients verify servers with (set: TLS)")
    tls_client_cert_file: str = setting("", "PEM certificate this service's gRPC clients present (mTLS)")
    tls_client_key_file: str = setting("", "PEM private key of --tls-client-cert-file")
    tls_server_name: str = setting("", "name the servers' certificates carry, when not the address' host")

    service_name: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        grpc_default, metrics_default = DEFAULT_PORTS.get(self.service_name, (0, 0))
        self.grpc_port = self.grpc_port or grpc_default
        self.metrics_port = self.metrics_port or metrics_default


def _parse_scalar(kind: type, raw: str) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("must be true or false")
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    return raw


def _convert(f: dataclasses.Field, hints: Mapping[str, Any], raw: Any) -> Any:
    kind = hints[f.name]
    if typing.get_origin(kind) is list:
        raw = [part.strip() for part in raw.split(",")] if isinstance(raw, str) else list(raw)
    elif isinstance(raw, str):
        try:
            raw = _parse_scalar(kind, raw)
        except ValueError:
            raise ValueError(f"{short(raw)} is not a valid {kind.__name__}") from None
    check = f.metadata.get("check")
    return check(raw) if check else raw


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--flag`` per settings field (values stay strings until ``load_settings``)."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        parser.add_argument(flag, dest=f.name, default=None, help=f"{f.metadata.get('help', '')} [{env}]")


def _read_setting_file(origin: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:  # the message names the file, never its content
        raise SettingsError(f"bad setting {origin}={short(path)}: cannot read it ({exc.strerror})") from None


def load_settings(cls: type, flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None):
    """Build and validate a settings object from parsed flags and the environment."""
    flags = flags or {}
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        env_name = ENV_PREFIX + f.name.upper()
        hide = f.metadata.get("redact")
        if flags.get(f.name) is not None:
            raw, origin = flags[f.name], "--" + f.name.replace("_", "-")
            shown = short(hide(raw) if hide else raw)
        elif env_name in env:
            raw, origin = env[env_name], env_name
            shown = short(hide(raw) if hide else raw)
        elif env_name + "_FILE" in env:
            origin = env_name + "_FILE"
            raw, shown = _read_setting_file(origin, env[origin]), short(env[origin])  # a secret: show the path
        else:
            continue
        try:
            values[f.name] = _convert(f, hints, raw)
        except ValueError as exc:
            raise SettingsError(f"bad setting {origin}={shown}: {exc}") from None
    try:
        settings = cls(**values)
    except ValueError as exc:
        raise SettingsError(f"bad settings: {exc}") from None
    # Validate defaults too, so a subclass default never slips through unchecked.
    for f in dataclasses.fields(cls):
        if f.name not in values and f.metadata.get("check"):
            try:
                setattr(settings, f.name, f.metadata["check"](getattr(settings, f.name)))
            except ValueError as exc:
                raise SettingsError(f"bad default for {f.name}: {exc}") from None
    return settings


def parse_settings(cls: type, argv: Sequence[str] | None = None, prog: str | None = None):
    """Convenience for ``python -m``: parse argv into a settings object."""
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser, cls)
    return load_settings(cls, vars(parser.parse_args(argv)))
