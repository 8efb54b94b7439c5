"""TLS for gRPC: server credentials for every service, channel credentials for every client.

A server with ``tls_cert_file`` and ``tls_key_file`` serves TLS only (no plaintext port); with
``tls_client_ca_file`` too it requires a client certificate signed by that CA (mTLS). A client
with ``tls_ca_file`` verifies the server against that CA and, with ``tls_client_cert_file`` and
``tls_client_key_file``, presents its own certificate. Files are read once, at start. An error
names the setting and the file, never the file's content: a key is a secret.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Mapping, Sequence

import grpc

from services.common.errors import short


class TLSError(ValueError):
    """A TLS file is missing, unreadable or does not fit: the process stops with this one line."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _read(name: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TLSError(f"bad setting {_flag(name)}={short(path)}: cannot read it ({exc.strerror})") from None


def _check_pair(cert_name: str, cert_file: str, key_name: str, key_file: str) -> tuple[bytes, bytes]:
    """Both files read, and the key is the certificate's (else the first handshake would fail)."""
    cert, key = _read(cert_name, cert_file), _read(key_name, key_file)
    try:
        # A callable password: an encrypted key fails here instead of prompting on a terminal.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_file, key_file, password=lambda: b"")
    except ssl.SSLError as exc:
        why = "the key does not match the certificate" if "KEY_VALUES_MISMATCH" in str(exc) else \
            "not a PEM certificate and its private key"
        raise TLSError(f"bad settings {_flag(cert_name)}={short(cert_file)} and {_flag(key_name)}="
                       f"{short(key_file)}: {why}") from None
    return cert, key


def _check_ca(name: str, path: str) -> bytes:
    pem = _read(name, path)
    try:
        ssl.create_default_context(cadata=pem.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError):
        raise TLSError(f"bad setting {_flag(name)}={short(path)}: not a PEM CA certificate") from None
    return pem


def _together(a: str, a_value: str, b: str, b_value: str) -> None:
    if bool(a_value) != bool(b_value):
        raise TLSError(f"bad settings: {_flag(a)} and {_flag(b)} go together (one is set, the other is not)")


def server_credentials(cert_file: str, key_file: str, client_ca_file: str = "") -> grpc.ServerCredentials | None:
    """Credentials for ``add_secure_port``, or None when TLS is off (no cert and no key)."""
    _together("tls_cert_file", cert_file, "tls_key_file", key_file)
    if not cert_file:
        if client_ca_file:
            raise TLSError("bad settings: --tls-client-ca-file (mTLS) needs --tls-cert-file and --tls-key-file")
        return None
    cert, key = _check_pair("tls_cert_file", cert_file, "tls_key_file", key_file)
    client_ca = _check_ca("tls_client_ca_file", client_ca_file) if client_ca_file else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


@dataclass(frozen=True)
class ClientTLS:
    """How a client reaches TLS servers. Empty ``ca_file``: plaintext."""

    ca_file: str = ""
    cert_file: str = ""  # mTLS: the client's own certificate and key
    key_file: str = ""
    # The name the server certificate must carry when it is not the address' host (an exec probe
    # dialing 127.0.0.1 a certificate made for the Service's DNS name).
    server_name: str = ""

    @classmethod
    def from_settings(cls, s) -> "ClientTLS":
        return cls(s.tls_ca_file, s.tls_client_cert_file, s.tls_client_key_file, s.tls_server_name)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ClientTLS":
        """For processes without a settings object (the UI, the health probe): CRYPTOLENS_TLS_*."""
        env = os.environ if env is None else env
        return cls(*(env.get(f"CRYPTOLENS_TLS_{name}", "") for name in
                     ("CA_FILE", "CLIENT_CERT_FILE", "CLIENT_KEY_FILE", "SERVER_NAME")))

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file)

    def credentials(self) -> grpc.ChannelCredentials | None:
        """Channel credentials (files read now), or None for plaintext."""
        _together("tls_client_cert_file", self.cert_file, "tls_client_key_file", self.key_file)
        if not self.ca_file:
            if self.cert_file:
                raise TLSError("bad settings: --tls-client-cert-file (mTLS) needs --tls-ca-file")
            return None
        ca = _check_ca("tls_ca_file", self.ca_file)
        cert = key = None
        if self.cert_file:
            cert, key = _check_pair("tls_client_cert_file", self.cert_file, "tls_client_key_file", self.key_file)
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.enabled and self.server_name else []


def channel(addr: str, tls: ClientTLS, options: Sequence[tuple] = (), credentials=None) -> grpc.Channel:
    """A blocking channel to ``addr``: TLS when ``tls`` has a CA, else plaintext."""
    credentials = credentials or tls.credentials()
    options = [*options, *tls.options()]
    if credentials is None:
        return grpc.insecure_channel(addr, options=options)
    return grpc.secure_channel(addr, credentials, options=options)


def aio_channel(addr: str, tls: ClientTLS, options: Sequence[tuple] = (), credentials=None) -> grpc.aio.Channel:
    """The ``grpc.aio`` twin of ``channel``; pass ``credentials`` read once at start to reuse them."""
    credentials = credentials or tls.credentials()
    options = [*options, *tls.options()]
    if credentials is None:
        return grpc.aio.insecure_channel(addr, options=options)
    return grpc.aio.secure_channel(addr, credentials, options=options)
