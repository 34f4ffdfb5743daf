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
from pathlib import Path
from typing import Any

from voicegate.core.config import WEB_PAGE_MODES, ConfigError, NodeConfig, load_config
from voicegate.core.logs import setup_node_logging
from voicegate.models import named_bundles
from voicegate.models.bundle import load_bundle
from voicegate.models.errors import BundleError
from voicegate.server import security_setup
from voicegate.server.auth import GatewaySecurity
from voicegate.server.gateway import GatewayOptions
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
    p.add_argument(
        "--send-queue-frames",
        type=int,
        default=GatewayOptions.send_queue_frames,
        help="answer audio records queued per client before it counts as slow",
    )
    p.add_argument(
        "--stall-ms",
        type=float,
        default=GatewayOptions.stall_ms,
        help="a send to a client blocked this long (with a full queue) makes it slow",
    )
    p.add_argument(
        "--lead-ms",
        type=float,
        default=GatewayOptions.lead_ms,
        help="how far ahead of real time answer audio is sent",
    )
    p.add_argument(
        "--send-buffer-bytes",
        type=int,
        default=GatewayOptions.send_buffer_bytes,
        help="kernel send buffer per client socket (0: autotuned)",
    )
    p.add_argument(
        "--unread-limit-ms",
        type=float,
        default=GatewayOptions.unread_limit_ms,
        help="answer audio a client has not acknowledged (ms) that makes it slow",
    )
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
        config = load_config(args.config)
        # Command line over environment over file: load_config did the last two.
        log_settings = config.logging
        if args.log_level is not None:
            log_settings = dataclasses.replace(log_settings, level=args.log_level)
        if args.log_json is not None:
            log_settings = dataclasses.replace(log_settings, json=args.log_json)
        config = dataclasses.replace(config, logging=log_settings)
        config = security_setup.apply_cli(config, args)
        # Every process of the node logs as this one does: they get this config.
        setup_node_logging(config.logging)
        node = config.node
        bundle = named_bundles.resolve(args.bundle or node.bundle, progress=sys.stderr)
        name = _bundle_name(bundle)
        # stdout carries only the "serving on" line, which tools read.
        log.info("model bundle %s at %s", name, bundle)
        node = dataclasses.replace(
            node, bundle=bundle, gateways=args.gateways or node.gateways
        )
        config = dataclasses.replace(config, node=node)
        # Command line over environment over file, as for the rest.
        overrides = {
            name: getattr(args, name)
            for name, _, _ in _LIMIT_OPTIONS
            if getattr(args, name) is not None
        }
        config = dataclasses.replace(
            config, limits=dataclasses.replace(config.limits, **overrides)
        )
        web = resolve_page(config.web, args.host, args.web_page)
        config = dataclasses.replace(config, web=web)
        options = GatewayOptions(
            max_sessions=config.limits.max_sessions,
            send_queue_frames=args.send_queue_frames,
            stall_ms=args.stall_ms,
            lead_ms=args.lead_ms,
            send_buffer_bytes=args.send_buffer_bytes,
            unread_limit_ms=args.unread_limit_ms,
        )
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
