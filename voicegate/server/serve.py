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
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from voicegate.core.config import WEB_PAGE_MODES, ConfigError, NodeConfig, load_config
from voicegate.core.logs import setup_node_logging
from voicegate.server.gateway import GatewayOptions
from voicegate.server.gateway_process import GatewaySpec, gateway_main, listen_socket
from voicegate.server.sdnotify import Notifier
from voicegate.server.web import resolve_page
from voicegate.workers.status import State, StatusBlock
from voicegate.workers.supervisor import Supervisor
from voicegate.workers.topology import Topology

log = logging.getLogger("voicegate.serve")

DEMO_TRANSCRIPT = "Can you check where my order is? It has not arrived yet."
DEMO_REPLY = "Your order shipped yesterday. It will arrive tomorrow."
_GATEWAY_READY_S = 60.0


def default_bundle_dir() -> Path:
    """Where the default bundle lives: $VOICEGATE_CACHE, else ~/.cache/voicegate."""
    root = os.environ.get("VOICEGATE_CACHE") or str(Path.home() / ".cache" / "voicegate")
    return Path(root) / "bundle-demo"


def ensure_default_bundle(directory: Path | None = None) -> Path:
    """The default bundle (small generated models whose STT, LLM and TTS are scripted for
    the demo utterance), generated on first use."""
    # onnx is only needed on first use: keep it out of every `voicegate` start.
    from voicegate.models.synth import Scripted, synth_bundle  # noqa: PLC0415

    directory = directory or default_bundle_dir()
    if not (directory / "bundle.toml").exists():
        log.info("generating the default model bundle in %s (first use)", directory)
        tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
        synth_bundle(
            tmp,
            seed=7,
            scripted=Scripted(reply=DEMO_REPLY, transcript=DEMO_TRANSCRIPT, tts=True),
            overwrite=True,
        )
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.rename(directory)
        except OSError:
            # Another process generated it meanwhile.
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def add_parser(commands: Any) -> None:
    p = commands.add_parser("serve", help="run a node: workers and gateways on one port")
    p.add_argument("--bundle", type=Path, help="model bundle directory (default: generated)")
    p.add_argument("--config", type=Path, help="node configuration (TOML)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--gateways", type=int, help="gateway processes (default: node.gateways)")
    p.add_argument("--max-sessions", type=int, default=GatewayOptions.max_sessions)
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
        # Every process of the node logs as this one does: they get this config.
        setup_node_logging(config.logging)
        node = config.node
        bundle = args.bundle or node.bundle
        if bundle is None:
            bundle = ensure_default_bundle()
        node = dataclasses.replace(
            node, bundle=Path(bundle), gateways=args.gateways or node.gateways
        )
        web = resolve_page(config.web, args.host, args.web_page)
        config = dataclasses.replace(config, node=node, web=web)
        options = GatewayOptions(
            max_sessions=args.max_sessions,
            send_queue_frames=args.send_queue_frames,
            stall_ms=args.stall_ms,
            lead_ms=args.lead_ms,
            send_buffer_bytes=args.send_buffer_bytes,
        )
        notifier = Notifier()
        notifier.watchdog_interval()  # a malformed $WATCHDOG_USEC is a configuration error
    except (ConfigError, ValueError, OSError) as exc:
        print(f"voicegate serve: {exc}", file=sys.stderr)
        return 2
    try:
        reserve = listen_socket(args.host, args.port)
    except OSError as exc:
        print(f"voicegate serve: cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    port = reserve.getsockname()[1]
    node_runner = _Node(config, options, args.host, port, notifier=notifier)
    try:
        code = node_runner.run()
    finally:
        reserve.close()
    return code


class _Node:
    def __init__(
        self,
        config: NodeConfig,
        options: GatewayOptions,
        host: str,
        port: int,
        *,
        notifier: Notifier,
    ) -> None:
        self.config = config
        self.options = options
        self.host = host
        self.port = port
        self.gateways: list[BaseProcess] = []
        self.supervisor = Supervisor(config, on_ready=self._start_gateways, notifier=notifier)

    def run(self) -> int:
        try:
            code = self.supervisor.run()
        finally:
            self._stop_gateways()
        if code:
            print(f"voicegate serve: {self.supervisor.reason}", file=sys.stderr)
        return code

    def _start_gateways(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        for index in range(self.config.node.gateways):
            spec = GatewaySpec(self.config, index, self.options, self.host, self.port)
            process = ctx.Process(target=gateway_main, args=(spec,), name=f"voicegate-gw{index}")
            process.start()
            self.gateways.append(process)
        topology = Topology(self.config)
        deadline = time.monotonic() + _GATEWAY_READY_S
        for index, name in enumerate(topology.gateways):
            block = StatusBlock.attach(topology.status_block(name))
            try:
                while block.state is not State.READY or not _port_open(self.host, self.port):
                    if self.gateways[index].exitcode is not None:
                        raise RuntimeError(f"gateway {index} exited during start")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"gateway {index} not ready in {_GATEWAY_READY_S} s")
                    time.sleep(0.02)
            finally:
                block.close()
        print(f"voicegate: serving on http://{self.host}:{self.port}", flush=True)
        if self.config.web.page == "on":
            print(f"voicegate: talk page on http://{self.host}:{self.port}/talk", flush=True)

    def _stop_gateways(self) -> None:
        deadline = time.monotonic() + self.config.node.stop_timeout_s
        for process in self.gateways:
            if process.exitcode is None and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        for process in self.gateways:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join(timeout=5)
            process.close()
        self.gateways.clear()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
