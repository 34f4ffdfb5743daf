"""The body of one gateway process: uvicorn serving the gateway's Starlette app on a
SO_REUSEPORT socket shared by every gateway process of the node (the kernel spreads
connections across them).

A gateway never outlives the supervisor that started it (``parent_pid``): the kernel
sends it SIGKILL when its parent dies, so no orphan keeps accepting calls that nobody
answers, nor holds the port against the next start.

Signals: SIGINT is ignored (a Ctrl-C at the terminal reaches the whole process group;
the supervisor decides). SIGTERM alone (the supervisor died, or an operator) drains this
gateway with the node's drain timeout. The normal stop is the supervisor's DRAIN on the
control ring; once drained the process exits 0. SIGHUP (forwarded by the supervisor)
reloads the TLS certificate (``voicegate.server.tls``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
from collections.abc import Generator
from dataclasses import dataclass

import uvicorn
from setproctitle import setproctitle

from voicegate.core.clock import NS_PER_S, monotonic_ns
from voicegate.core.config import GatewayOptions, NodeConfig, SecuritySettings
from voicegate.core.log_limit import ClientErrorFilter
from voicegate.core.logs import setup_node_logging
from voicegate.server import event_loop, tls
from voicegate.server.auth import GatewaySecurity
from voicegate.server.gateway import Gateway
from voicegate.server.gateway.limits import handshake_protocol
from voicegate.server.ops_app import start_metrics_server
from voicegate.workers.procinfo import die_with_parent, pin_to

log = logging.getLogger("voicegate.gateway")


@dataclass(frozen=True)
class GatewaySpec:
    """Everything a spawned gateway process needs (picklable)."""

    config: NodeConfig
    index: int
    options: GatewayOptions
    host: str
    port: int
    parent_pid: int = 0  # the supervisor's process: the gateway dies with it; 0: none
    security: GatewaySecurity | None = None


def listen_socket(host: str, port: int, send_buffer_bytes: int = 0) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT, so that every gateway can bind the port.
    ``send_buffer_bytes`` (0: the kernel's autotuning) bounds what the kernel holds per
    client: accepted sockets inherit it, and a client that stops reading then shows in
    the gateway's own queue quickly instead of after megabytes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if send_buffer_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signals are the gateway's business (see the module docstring), not uvicorn's.
        yield


def gateway_main(spec: GatewaySpec) -> None:
    # Named like the workers, so ps, top and profilers tell the gateways apart.
    setproctitle(f"voicegate: gateway {spec.index}")
    if spec.parent_pid:
        die_with_parent(signal.SIGKILL)
        if os.getppid() != spec.parent_pid:
            os._exit(1)  # the supervisor died before the request took effect
    # Before the event loop starts a thread: every thread it makes inherits the CPUs.
    pin_to(spec.config.cpus_for("gateway"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop handles it (reload)
    setup_node_logging(spec.config.logging)
    # A client's bad bytes are logged in one line, and not one per connection forever.
    logging.getLogger("uvicorn.error").addFilter(ClientErrorFilter())
    event_loop.run(_serve(spec), spec.config.gateway.event_loop)


async def _serve(spec: GatewaySpec) -> None:
    sock = listen_socket(spec.host, spec.port, spec.options.send_buffer_bytes)
    sock.listen(1024)
    gateway = Gateway(spec.config, spec.index, spec.options, spec.security)
    settings = spec.config.security if spec.security is None else spec.security.settings
    limits = spec.options.limits

    def handshake_timed_out() -> None:
        gateway.counters["handshakes_timed_out"] += 1

    config = uvicorn.Config(
        gateway.build_app(),
        # A connection must complete its upgrade request within the handshake timeout.
        http=handshake_protocol(
            _http_protocol(), spec.config.limits.handshake_timeout_s, handshake_timed_out
        ),
        ws="websockets-sansio",
        # Above the protocol's own limit, so that an oversized message reaches
        # StreamConnection and gets its documented error event before the 1009 close.
        ws_max_size=2 * limits.max_message_bytes + 1024,
        lifespan="on",
        # uvicorn's own handlers would bypass the node's format and redaction: its
        # loggers propagate to the root handler that setup_node_logging installed.
        log_config=None,
        log_level=logging.WARNING,
        access_log=False,
        # uvicorn marks the scope https/wss from these; the context is ours (below).
        ssl_certfile=str(settings.ssl_certfile) if settings.tls else None,
        ssl_keyfile=str(settings.ssl_keyfile) if settings.tls else None,
    )
    ssl_context = tls.server_context(settings) if settings.tls else None
    if ssl_context is not None:
        config.load()
        # TLS 1.2 at least, client certificates as configured, reloadable on SIGHUP.
        config.ssl = ssl_context
    server = _Server(config)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, _reload, ssl_context, settings, spec.index)
    metrics = await start_metrics_server(gateway, settings.metrics_bind)
    drain_ns = int(spec.config.node.drain_timeout_s * NS_PER_S)
    loop.add_signal_handler(signal.SIGTERM, lambda: gateway.begin_drain(monotonic_ns() + drain_ns))

    async def exit_when_drained() -> None:
        await gateway.drained.wait()
        server.should_exit = True

    watcher = asyncio.create_task(exit_when_drained())
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        if metrics is not None:
            await metrics.stop()
        sock.close()
    log.info("gateway %d stopped", spec.index)


def _http_protocol() -> type:
    """uvicorn's HTTP protocol class, as its "auto" setting picks it."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: PLC0415

        return H11Protocol
    return HttpToolsProtocol


def _reload(context: ssl.SSLContext | None, settings: SecuritySettings, index: int) -> None:
    if context is None:
        log.info("gateway %d: SIGHUP: no TLS certificate to reload", index)
        return
    try:
        tls.reload(context, settings)
    except tls.TlsError as exc:
        log.error("gateway %d: certificate reload failed, the old one stays: %s", index, exc)
    else:
        log.info("gateway %d: TLS certificate reloaded", index)
