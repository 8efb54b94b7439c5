"""Secrets as they may be echoed: in logs, error lines, banners.

``redis://:***@host:6379/0`` keeps what a person needs to tell which server is meant and hides the
password; a webhook URL keeps its scheme and host and hides the path and query, where tokens live.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"


def _netloc(parts) -> str:
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    if parts.password is not None:
        return f"{parts.username or ''}:{HIDDEN}@{host}{port}"
    if parts.username:  # a token alone in the user part (https://TOKEN@host)
        return f"{HIDDEN}@{host}{port}"
    return f"{host}{port}"


def redis_url(url: str) -> str:
    """A Redis URL without its password (user, host, port and database stay)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return HIDDEN
    if parts.scheme == "unix" and not parts.netloc:  # unix:///path/to/socket
        return f"unix://{parts.path}" + (f"?{HIDDEN}" if parts.query else "")
    if not parts.scheme or not parts.netloc:  # not a URL: it may be the password alone
        return HIDDEN
    return urlunsplit((parts.scheme, _netloc(parts), parts.path, HIDDEN if parts.query else "", ""))


def endpoint_url(url: str) -> str:
    """A webhook-like URL as scheme and host only: ``https://hooks.example.com/***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return HIDDEN
    if not parts.scheme or not parts.hostname:
        return HIDDEN
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment
    return urlunsplit((parts.scheme, _netloc(parts), "/" + HIDDEN if hidden else "", "", ""))


def value(_: str) -> str:
    """A secret that is nothing but secret (an API key)."""
    return HIDDEN
