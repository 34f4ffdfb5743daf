"""The floor of ``bench gateway``: a bare Starlette WebSocket endpoint on the same
uvicorn (``ws="websockets-sansio"``), on the event loop the gateway runs on
(``voicegate.server.gateway.event_loop``), that sends every binary message straight back.

``python -m bench._echo_app [--port 0]`` prints ``echo: serving on ws://HOST:PORT/v1/stream``
once it listens; SIGTERM stops it."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from voicegate.server.gateway import event_loop
from voicegate.server.gateway.process import listen_socket


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is not None:
            await websocket.send_bytes(data)


async def serve(host: str, port: int) -> None:
    sock = listen_socket(host, port)
    sock.listen(1024)
    app = Starlette(routes=[WebSocketRoute("/v1/stream", echo)])
    config = uvicorn.Config(
        app, ws="websockets-sansio", lifespan="off", log_level=logging.WARNING,
        access_log=False,
    )
    bound_host, bound_port = sock.getsockname()[:2]
    print(f"echo: serving on ws://{bound_host}:{bound_port}/v1/stream", flush=True)
    try:
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._echo_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    event_loop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
