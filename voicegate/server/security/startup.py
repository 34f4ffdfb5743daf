"""``voicegate serve``'s security options and the checks made before a node starts.

Each option of ``[security]`` has a command line flag (the TLS ones named as uvicorn
names them); the flag beats ``VOICEGATE_SECURITY_*``, which beats the file.

Secure defaults, checked once at start (``prepare``):

- a node bound to a non-loopback address refuses to start without API keys
  (``security.keys_file`` with at least one active key) unless ``--no-auth`` says so;
- on loopback without keys it serves and warns once;
- certificate, key and CA files are loaded here first, so a bad one is a configuration
  error (exit 2) naming the file, not a gateway that fails to start.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
from pathlib import Path
from typing import Any

from voicegate.core.config import SSL_CLIENT_CERT, NodeConfig, SecuritySettings
from voicegate.server.security import tls, tokens
from voicegate.server.security.auth import GatewaySecurity
from voicegate.server.security.keys import KeyFileError, read_keys

log = logging.getLogger("voicegate.serve")

# flag dest -> SecuritySettings field
_FLAGS: dict[str, str] = {
    "ssl_certfile": "ssl_certfile",
    "ssl_keyfile": "ssl_keyfile",
    "ssl_ca_certs": "ssl_ca_certs",
    "ssl_client_cert": "ssl_client_cert",
    "keys_file": "keys_file",
    "no_auth": "no_auth",
    "token_secret_file": "token_secret_file",
    "token_audience": "token_audience",
    "token_ttl_min": "token_ttl_min",
    "allowed_origin": "allowed_origins",
    "metrics_bind": "metrics_bind",
}


def add_arguments(p: Any) -> None:
    g = p.add_argument_group("security (docs/security.md; each overrides [security])")
    g.add_argument("--ssl-certfile", type=Path, help="PEM certificate chain: serve TLS >= 1.2")
    g.add_argument("--ssl-keyfile", type=Path, help="the certificate's private key")
    g.add_argument("--ssl-ca-certs", type=Path, help="CAs of client certificates (mutual TLS)")
    g.add_argument("--ssl-client-cert", choices=SSL_CLIENT_CERT, help="client certificates")
    g.add_argument("--keys-file", type=Path, help="API keys (voicegate keys create): auth on")
    g.add_argument(
        "--no-auth",
        action="store_const",
        const=True,
        default=None,
        help="serve a non-loopback address without API keys (anyone reaching it may talk)",
    )
    g.add_argument("--token-secret-file", type=Path, help="session token signing secret")
    g.add_argument("--token-audience", help="aud claim of session tokens")
    g.add_argument("--token-ttl-min", type=float, help="longest session token lifetime")
    g.add_argument(
        "--allowed-origin",
        action="append",
        help="browser Origin allowed to open sessions (repeat; '*': any)",
    )
    g.add_argument("--metrics-bind", help="HOST:PORT serving /metrics without a key")


def apply_cli(config: NodeConfig, args: argparse.Namespace) -> NodeConfig:
    """``config`` with the flags given on the command line (raises ConfigError)."""
    changes: dict[str, Any] = {}
    for dest, name in _FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            changes[name] = tuple(value) if name == "allowed_origins" else value
    if not changes:
        return config
    merged = {
        f.name: getattr(config.security, f.name) for f in dataclasses.fields(SecuritySettings)
    }
    merged.update(changes)
    return dataclasses.replace(config, security=SecuritySettings(**merged))


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def prepare(config: NodeConfig, host: str) -> GatewaySecurity:
    """What the gateways need; raises ValueError with the operator's message when the
    node must not start as configured."""
    settings = config.security
    if settings.tls:
        tls.server_context(settings)  # raises TlsError naming the file
    loopback = is_loopback(host)
    where = f"{host} (not a loopback address)"
    if settings.keys_file is not None and not settings.no_auth:
        try:
            active = [k for k in read_keys(settings.keys_file) if k.active]
        except KeyFileError as exc:
            raise ValueError(f"security.keys_file: {exc}") from None
        if not active and not loopback:
            raise ValueError(
                f"refusing to serve {where}: no active API key in {settings.keys_file} "
                "(voicegate keys create NAME), or pass --no-auth"
            )
        if not active:
            log.warning(
                "no active API key in %s: every session is refused until one is created",
                settings.keys_file,
            )
    elif not loopback and not settings.no_auth:
        raise ValueError(
            f"refusing to serve {where} without API keys: set security.keys_file "
            "(--keys-file; voicegate keys create NAME makes one), or pass --no-auth"
        )
    elif not settings.no_auth:
        log.warning(
            "serving on %s without API keys: anyone on this host can open sessions "
            "(docs/security.md)",
            host,
        )
    else:
        log.warning("--no-auth: anyone who reaches %s can open sessions", host)
    if not settings.tls and not loopback:
        log.warning(
            "serving %s without TLS: voice travels in plaintext unless a TLS proxy fronts "
            "this node (--ssl-certfile, --ssl-keyfile)",
            host,
        )
    secret = tokens.load_secret(settings.token_secret_file)
    return GatewaySecurity(settings, secret, config.node.name)
