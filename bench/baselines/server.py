"""A baseline server: the same WebSocket protocol (``/v1/stream``) and the same
connection and turn logic as voicegate's gateway (``StreamConnection``, ``SessionTurns``),
in front of a baseline ``Pipeline`` in the server's own process.

``python -m bench.baselines.server --design sequential|single_process --bundle DIR
[--port 0]`` prints ``baseline: serving on ws://HOST:PORT/v1/stream`` once the models are
loaded and the socket listens; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import signal
import sys
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench.baselines.designs import Pipeline, SequentialPipeline, SingleProcessPipeline
from voicegate.core.clock import monotonic_ns
from voicegate.core.codec import PCM16_16K
from voicegate.core.kinds import Kind
from voicegate.ext import Record
from voicegate.server import event_loop
from voicegate.server.gateway_process import listen_socket
from voicegate.server.gateway_session import (
    AudioItem,
    CloseItem,
    DoneItem,
    EventItem,
    Item,
    SendQueue,
    SessionTurns,
    TextItem,
)
from voicegate.server.session_state import (
    Action,
    Close,
    CloseSession,
    ConnectionState,
    ForwardAudio,
    ForwardText,
    OpenSession,
    SendText,
    StreamConnection,
    SwitchOutput,
)
from voicegate.workers.gateway_link import Received

log = logging.getLogger("bench.baselines")

DESIGNS: dict[str, type[Pipeline]] = {
    "sequential": SequentialPipeline,
    "single_process": SingleProcessPipeline,
}
_SEND_QUEUE_FRAMES = 100  # as the gateway's default
_LEAD_MS = 300.0  # answer audio goes at most this far ahead of real time, as the gateway's


@dataclass
class _Connection:
    sid: int
    conn: StreamConnection
    turns: SessionTurns
    websocket: WebSocket
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    seq: int = 0
    play_start_ns: int = 0
    play_sent_ms: float = 0.0


class BaselineServer:
    def __init__(self, pipeline_cls: type[Pipeline], bundle: Path) -> None:
        self.loop = asyncio.get_running_loop()
        self.pipeline = pipeline_cls(bundle, self._from_pipeline)
        self.connections: dict[int, _Connection] = {}
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
            live.turns.on_record(record, monotonic_ns())

    def _send(self, live: _Connection, kind: Kind, payload: bytes, origin_ns: int = 0) -> None:
        live.seq += 1
        now = monotonic_ns()
        record = Record(
            kind=kind, session=live.sid, turn=live.turns.turn, seq=live.seq,
            origin_ns=origin_ns or now, payload=payload, sent_ns=now,
        )  # fmt: skip
        self.pipeline.submit(record)

    # -- one connection -------------------------------------------------------------

    async def _stream(self, websocket: WebSocket) -> None:
        sid = next(self._ids)
        queue = SendQueue(_SEND_QUEUE_FRAMES)
        turns = SessionTurns(PCM16_16K, queue, self.pipeline.end_of_turn_ms)
        live = _Connection(sid, StreamConnection(f"{sid:08x}"), turns, websocket)
        queue.on_push = live.wake.set
        queue.stalled = lambda: False
        self.connections[sid] = live
        sender = asyncio.create_task(self._sender(live))
        try:
            self._perform(live, live.conn.connect())
            await websocket.accept()
            while live.conn.state is not ConnectionState.CLOSED:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is not None:
                    self._perform(live, live.conn.receive_bytes(data))
                else:
                    self._perform(live, live.conn.receive_text(message.get("text") or ""))
            if not sender.done() and live.conn.close_code is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(sender), timeout=5.0)
        finally:
            self._perform(live, live.conn.disconnected())
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            self.connections.pop(sid, None)

    def _perform(self, live: _Connection, actions: Sequence[Action]) -> None:
        if any(isinstance(a, Close) for a in actions):
            live.turns.queue.drop_pipeline_items()
        for action in actions:
            if isinstance(action, ForwardAudio):
                now = monotonic_ns()
                live.turns.input_arrived(action.stream_ms + action.audio.duration_ms, now)
                self._send(live, Kind.AUDIO_IN, action.audio.data, now)
            elif isinstance(action, SendText):
                live.turns.queue.push(TextItem(action.text, action.type))
            elif isinstance(action, OpenSession):
                start = action.start
                live.turns.output = start.output
                payload = {
                    "input": start.input.to_dict(),
                    "output": start.output.to_dict(),
                    "instructions": start.instructions,
                }
                self._send(live, Kind.SESSION_OPEN, json.dumps(payload).encode())
            elif isinstance(action, ForwardText):
                self._send(live, Kind.TEXT_INPUT, action.text.encode())
            elif isinstance(action, SwitchOutput):
                live.turns.output = action.format
                live.turns.awaiting_format = True
                self._send(live, Kind.OUTPUT_FORMAT, json.dumps(action.format.to_dict()).encode())
            elif isinstance(action, CloseSession):
                self._send(live, Kind.SESSION_CLOSE, b"")
            elif isinstance(action, Close):
                live.turns.queue.push(CloseItem(int(action.code), action.reason))

    # -- sending ------------------------------------------------------------------

    async def _sender(self, live: _Connection) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            queue = live.turns.queue
            while True:
                item = queue.pop()
                if item is None:
                    live.wake.clear()
                    await live.wake.wait()
                    continue
                if isinstance(item, CloseItem):
                    await live.websocket.close(item.code, item.reason)
                    return
                await self._send_item(live, item)

    async def _send_item(self, live: _Connection, item: Item) -> None:
        ws, turns = live.websocket, live.turns
        if isinstance(item, TextItem):
            await ws.send_text(item.text)
        elif isinstance(item, AudioItem):
            if item.turn < turns.stale_below:
                return
            now = monotonic_ns()
            if turns.playing != item.turn:
                turns.playing = item.turn
                live.play_start_ns, live.play_sent_ms = now, 0.0
                answer = turns.answers.get(item.turn)
                if answer is not None and not answer.audio_sent_ns:
                    answer.audio_sent_ns = now
                self._send(live, Kind.PLAYBACK, b"\x01")
            ahead_ms = live.play_sent_ms - (now - live.play_start_ns) / 1e6
            if ahead_ms > _LEAD_MS:
                await asyncio.sleep((ahead_ms - _LEAD_MS) / 1000)
            if item.data:
                await ws.send_bytes(item.data)
                live.play_sent_ms += turns.output.duration_ms(len(item.data))
            if item.last:
                remaining = live.play_sent_ms - (monotonic_ns() - live.play_start_ns) / 1e6
                self.loop.call_later(max(0.0, remaining) / 1000, self._playback_ended, live,
                                     item.turn)
        elif isinstance(item, DoneItem):
            if item.turn < turns.stale_below:
                return
            done = turns.render_done(item.turn, monotonic_ns())
            if done is not None:
                await self._deliver(live, live.conn.send_event(done))
        elif isinstance(item, EventItem):
            await self._deliver(live, live.conn.send_event(item.event))

    def _playback_ended(self, live: _Connection, turn: int) -> None:
        if live.turns.playing == turn and live.sid in self.connections:
            live.turns.playing = None
            self._send(live, Kind.PLAYBACK, b"\x00")

    async def _deliver(self, live: _Connection, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, SendText):
                await live.websocket.send_text(action.text)
            else:
                self._perform(live, [action])


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
        server.app(), ws="websockets-sansio", lifespan="off", log_level=logging.WARNING,
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
