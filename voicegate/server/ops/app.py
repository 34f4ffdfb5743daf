"""``security.metrics_bind``: /metrics, /healthz and /readyz on a second address.

Operators who scrape from a private network bind this to an address only that network
reaches (e.g. ``10.0.0.5:9100`` or ``127.0.0.1:9100``); it needs no key, while /metrics
on the node's public port keeps requiring one. Every gateway process binds it with
SO_REUSEPORT, as it does the public port, so each scrape reads one gateway (the same
as on the public port). Plain HTTP: it carries counters, never session content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from voicegate.server.gateway import Gateway


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]  # uvicorn's signature
        # The gateway process owns its signals (gateway_process).
        yield


class MetricsServer:
    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None]) -> None:
        self.server = server
        self.task = task

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.task, timeout=5.0)


def ops_app(gateway: Gateway) -> Starlette:
    async def metrics(request: Request) -> Response:
        return gateway.metrics_response()

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", gateway._healthz),
            Route("/readyz", gateway._readyz),
        ]
    )


async def start_metrics_server(gateway: Gateway, bind: str) -> MetricsServer | None:
    """Serve ``ops_app`` on ``bind`` ("HOST:PORT"); None when ``bind`` is empty."""
    if not bind:
        return None
    # Late import: gateway_process imports this module.
    from voicegate.server.gateway.process import listen_socket  # noqa: PLC0415

    host, _, port = bind.rpartition(":")
    sock = listen_socket(host.strip("[]"), int(port))
    sock.listen(128)
    config = uvicorn.Config(
        ops_app(gateway),
        lifespan="off",
        log_config=None,
        log_level=logging.WARNING,
        access_log=False,
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="metrics-server")
    return MetricsServer(server, task)
