"""``voicegate serve``: the supervisor, its workers and N gateway processes on one port.

Exit status: 0 after a clean stop (SIGTERM or SIGINT: drain, then stop); 1 when the node
cannot run or stopped on a failure (a worker failing too often, a gateway that could not
start; the reason is logged); 2 for bad arguments or configuration.

The supervisor runs in the main process (it owns the shared memory); once every worker is
ready it starts the gateway processes, each attached as gateway i. The port is bound here
first (SO_REUSEPORT), so ``--port 0`` picks a free port that every gateway then shares;
the line ``voicegate: serving on http://HOST:PORT`` on stdout says which.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from voicegate.core.config import (
    WEB_PAGE_MODES,
    ConfigError,
    GatewayOptions,
    GatewaySettings,
    LimitsSettings,
    NodeConfig,
    NodeSettings,
    load_config,
)
from voicegate.core.logs import setup_node_logging
from voicegate.models import named_bundles
from voicegate.models.bundle import load_bundle
from voicegate.models.errors import BundleError
from voicegate.server import security_setup
from voicegate.server.auth import GatewaySecurity
from voicegate.server.gateway_process import listen_socket
from voicegate.server.gateway_supervision import GatewayPool
from voicegate.server.sdnotify import Notifier
from voicegate.server.web import resolve_page
from voicegate.workers.supervisor import Supervisor

log = logging.getLogger("voicegate.serve")

# [limits] keys that the command line can set: (key, type, help).
_LIMIT_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("max_sessions", int, "started sessions, node-wide"),
    ("max_connections_per_address", int, "open connections from one client address"),
    ("handshake_timeout_s", float, "seconds to complete the WebSocket upgrade request"),
    ("session_start_timeout_s", float, "seconds from WebSocket open to session.start"),
    ("idle_timeout_s", float, "seconds without any client message that end a session"),
    ("audio_burst_ms", float, "how far a session's audio may run ahead of real time"),
    ("text_inputs_per_s", float, "sustained text.input rate per session"),
    ("text_input_burst", int, "text.input messages allowed above that rate at once"),
)

# [gateway] keys that the command line can set: (key, type, help).
_GATEWAY_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("send_queue_frames", int, "answer audio records queued per client before it counts as slow"),
    ("stall_ms", float, "a send to a client blocked this long (with a full queue) makes it slow"),
    ("lead_ms", float, "how far ahead of real time answer audio is sent"),
    ("send_buffer_bytes", int, "kernel send buffer per client socket (0: autotuned)"),
    ("unread_limit_ms", float, "unacknowledged answer audio (ms) that makes a client slow"),
)


def add_parser(commands: Any) -> None:
    p = commands.add_parser("serve", help="run a node: workers and gateways on one port")
    p.add_argument(
        "--bundle",
        help="model bundle: a directory, or 'real' (the default: built from the installed "
        "weight packages on first use) or 'synthetic' (scripted test models)",
    )
    p.add_argument("--config", type=Path, help="node configuration (TOML)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--gateways", type=int, help="gateway processes (default: node.gateways)")
    limits = p.add_argument_group(
        "limits", "override [limits] of the configuration (VOICEGATE_LIMITS_*)"
    )
    for name, kind, what in _LIMIT_OPTIONS:
        limits.add_argument("--" + name.replace("_", "-"), type=kind, help=what)
    gateway = p.add_argument_group(
        "gateway", "override [gateway] of the configuration (VOICEGATE_GATEWAY_*)"
    )
    for name, kind, what in _GATEWAY_OPTIONS:
        gateway.add_argument("--" + name.replace("_", "-"), type=kind, help=what)
    p.add_argument(
        "--web-page",
        choices=WEB_PAGE_MODES,
        help="the talk page at /talk (overrides [web] page; auto: on for a loopback --host)",
    )
    p.add_argument("--log-level", help="overrides [logging] level (DEBUG, INFO, ...)")
    p.add_argument(
        "--log-json",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one JSON object per log line (overrides [logging] json)",
    )
    security_setup.add_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = effective_config(args)
        # Every process of the node logs as this one does: they get this config.
        setup_node_logging(config.logging)
        bundle = named_bundles.resolve(args.bundle or config.node.bundle, progress=sys.stderr)
        name = _bundle_name(bundle)
        # stdout carries only the "serving on" line, which tools read.
        log.info("model bundle %s at %s", name, bundle)
        web = resolve_page(config.web, args.host, args.web_page)
        config = dataclasses.replace(
            config, node=dataclasses.replace(config.node, bundle=bundle), web=web
        )
        options = GatewayOptions.from_config(config)
        notifier = Notifier()
        notifier.watchdog_interval()  # a malformed $WATCHDOG_USEC is a configuration error
        security = security_setup.prepare(config, args.host)
    except (ConfigError, BundleError, ValueError, OSError) as exc:
        print(f"voicegate serve: {exc}", file=sys.stderr)
        return 2
    try:
        reserve = listen_socket(args.host, args.port)
    except OSError as exc:
        print(f"voicegate serve: cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    port = reserve.getsockname()[1]
    node_runner = _Node(config, options, args.host, port, notifier=notifier, security=security)
    try:
        code = node_runner.run()
    finally:
        reserve.close()
    return code


# The sections whose keys have flags.
_Settings = TypeVar("_Settings", NodeSettings, LimitsSettings, GatewaySettings)


def effective_config(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> NodeConfig:
    """The configuration ``voicegate serve`` runs with: the file, then ``VOICEGATE_*``
    from ``env`` (default: the process environment), both by ``load_config``, then the
    flags in ``args``. Raises ``ConfigError`` naming the file, variable or flag."""
    config = load_config(args.config, env)
    log_settings = config.logging
    if args.log_level is not None:
        log_settings = dataclasses.replace(log_settings, level=args.log_level)
    if args.log_json is not None:
        log_settings = dataclasses.replace(log_settings, json=args.log_json)
    config = security_setup.apply_cli(config, args)
    return dataclasses.replace(
        config,
        logging=log_settings,
        node=_with_flags(config.node, args, (("gateways", int, ""),)),
        limits=_with_flags(config.limits, args, _LIMIT_OPTIONS),
        gateway=_with_flags(config.gateway, args, _GATEWAY_OPTIONS),
    )


def _with_flags(
    settings: _Settings, args: argparse.Namespace, flags: tuple[tuple[str, type, str], ...]
) -> _Settings:
    """``settings`` with the keys given on the command line replaced; a bad value's
    error names its flag, as a bad file or environment value names its source."""
    overrides = {name: getattr(args, name) for name, _, _ in flags}
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return dataclasses.replace(settings, **given)
    except ConfigError as exc:
        field_name = exc.key.rpartition(".")[2]
        if field_name not in given:
            raise
        flag = "--" + field_name.replace("_", "-")
        raise ConfigError(exc.key, exc.value, exc.problem, flag) from None


def _bundle_name(bundle: Path) -> str:
    """The bundle's name for the log; its stages check the rest when they load it (a
    node of stages without models runs on a directory without bundle.toml)."""
    try:
        return load_bundle(bundle, require=()).name
    except BundleError:
        return "(unnamed)"


class _Node:
    def __init__(
        self,
        config: NodeConfig,
        options: GatewayOptions,
        host: str,
        port: int,
        *,
        notifier: Notifier,
        security: GatewaySecurity | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.host = host
        self.port = port
        self.security = security
        # Supervised like the workers (voicegate.server.gateway_supervision).
        self.gateways = GatewayPool(config, options, host, port, security)
        self.supervisor = Supervisor(
            config, on_ready=self._start_gateways, notifier=notifier, children=self.gateways
        )
        self.supervisor.on_reload = self.gateways.reload

    def run(self) -> int:
        try:
            code = self.supervisor.run()
        finally:
            self.gateways.stop()
        if code:
            print(f"voicegate serve: {self.supervisor.reason}", file=sys.stderr)
        return code

    def _start_gateways(self) -> None:
        self.gateways.start()
        scheme = "https" if self.config.security.tls else "http"
        print(f"voicegate: serving on {scheme}://{self.host}:{self.port}", flush=True)
        if self.config.web.page == "on":
            print(f"voicegate: talk page on {scheme}://{self.host}:{self.port}/talk", flush=True)
