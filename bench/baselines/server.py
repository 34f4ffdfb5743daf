"""A baseline server: the same WebSocket protocol (``/v1/stream``) and the same
connection object as voicegate's gateway (``Connection``: the protocol's state machine,
the turn logic, the paced sender), in front of a baseline ``Pipeline`` in the server's
own process.

``python -m bench.baselines.server --design sequential|single_process --bundle DIR
[--port 0]`` prints ``baseline: serving on ws://HOST:PORT/v1/stream`` once the models are
loaded and the socket listens; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import logging
import signal
import sys
from collections.abc import Generator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from bench.baselines.designs import Pipeline, SequentialPipeline, SingleProcessPipeline
from voicegate.core.clock import monotonic_ns
from voicegate.core.config import GatewayOptions
from voicegate.core.kinds import Kind
from voicegate.ext import Record
from voicegate.server import event_loop
from voicegate.server.gateway.connection import Connection
from voicegate.server.gateway_process import listen_socket
from voicegate.server.protocols.base import ForwardAudio
from voicegate.server.protocols.native import StreamConnection
from voicegate.server.protocols.native_events import ResponseDone
from voicegate.workers.gateway_link import Received

log = logging.getLogger("bench.baselines")

DESIGNS: dict[str, type[Pipeline]] = {
    "sequential": SequentialPipeline,
    "single_process": SingleProcessPipeline,
}


class BaselineServer:
    """The host of the gateway's ``Connection`` in front of an in-process pipeline: the
    same send queue, pacing and slow-client policy as the gateway, with the gateway's
    default options and no admission limits."""

    def __init__(self, pipeline_cls: type[Pipeline], bundle: Path) -> None:
        self.loop = asyncio.get_running_loop()
        self.pipeline = pipeline_cls(bundle, self._from_pipeline)
        self.options = GatewayOptions()
        self.counters: dict[str, int] = collections.defaultdict(int)
        self.connections: dict[int, Connection] = {}
        self._ids = itertools.count(1)

    def app(self) -> Starlette:
        return Starlette(routes=[WebSocketRoute("/v1/stream", self._stream)])

    # -- pipeline side ------------------------------------------------------------

    def _from_pipeline(self, record: Received) -> None:
        """Called on pipeline threads: the record is dispatched on the event loop."""
        self.loop.call_soon_threadsafe(self._dispatch, record)

    def _dispatch(self, record: Received) -> None:
        live = self.connections.get(record.session)
        if live is not None:
            live.on_record(record, monotonic_ns())

    # -- what a connection asks of its host --------------------------------------------

    def write(self, record: Record[bytes]) -> None:
        self.pipeline.submit(record)

    def forward_audio(self, connection: Connection, action: ForwardAudio) -> None:
        now = monotonic_ns()
        turns = connection.turns
        turns.input_arrived(action.stream_ms + action.audio.duration_ms, now)
        self.write(
            Record(
                kind=Kind.AUDIO_IN,
                session=connection.sid,
                turn=turns.turn,
                seq=connection.next_seq(),
                origin_ns=now,
                payload=action.audio.data,
            )
        )

    def session_opened(self, connection: Connection) -> None:
        self.counters["sessions"] += 1

    def turn_done(self, done: ResponseDone) -> None:
        pass  # the bench measures latency at its client

    def holds(self, connection: Connection) -> bool:
        return connection.sid in self.connections

    # -- one connection -------------------------------------------------------------

    async def _stream(self, websocket: WebSocket) -> None:
        sid = next(self._ids)
        wire = StreamConnection(f"{sid:08x}")
        live = Connection(self, sid, wire, websocket, self.pipeline.end_of_turn_ms)
        self.connections[sid] = live
        try:
            await live.run(wire.connect())
        finally:
            self.connections.pop(sid, None)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Our handlers (below) only ask uvicorn to exit; uvicorn's would re-raise the
        # signal after serving, before the pipeline threads were stopped.
        yield


async def serve(design: str, bundle: Path, host: str, port: int) -> None:
    server = BaselineServer(DESIGNS[design], bundle)
    sock = listen_socket(host, port)
    sock.listen(1024)
    config = uvicorn.Config(
        server.app(),
        ws="websockets-sansio",
        lifespan="off",
        log_level=logging.WARNING,
        access_log=False,
    )
    uv = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(uv, "should_exit", True))
    bound_host, bound_port = sock.getsockname()[:2]
    print(f"baseline: serving on ws://{bound_host}:{bound_port}/v1/stream", flush=True)
    try:
        await uv.serve(sockets=[sock])
    finally:
        sock.close()
        server.pipeline.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines.server")
    parser.add_argument("--design", choices=sorted(DESIGNS), required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s baseline %(message)s")
    event_loop.run(serve(args.design, args.bundle, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
