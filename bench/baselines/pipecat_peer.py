"""The Pipecat peer: a Pipecat 1.14 pipeline per caller, serving voicegate's
``/v1/stream`` protocol on voicegate's engines, in one server process.

``python -m bench.baselines.pipecat_peer --bundle DIR [--port 0]`` prints
``baseline: serving on ws://HOST:PORT/v1/stream`` once the models are loaded and the
socket listens; SIGTERM or SIGINT stops it.

This is how Pipecat serves many callers over WebSocket (its telephony examples and
runner): an ASGI WebSocket endpoint reads the protocol's opening message, then builds
one pipeline for the connection and runs it until the caller hangs up::

    FastAPIWebsocketTransport.input()     our serializer: binary audio -> frames
    VADProcessor(SileroVADAnalyzer)       Pipecat's Silero VAD, stop_secs = voicegate's
                                          end-of-turn silence
    BundleSTTService                      SegmentedSTTService around voicegate's Whisper
    BundleLLMService                      LLMService around voicegate's LLM engine
    TurnEvents                            protocol events (speech, transcript, text)
    BundleTTSService                      TTSService around voicegate's Piper voice
    AnswerEvents                          protocol events (answer audio, response.done)
    FastAPIWebsocketTransport.output()    our serializer: frames -> messages

run by a ``PipelineWorker`` under a ``WorkerRunner`` (Pipecat 1.14's names for the
pipeline task and runner). The models are loaded once (``pipecat_services.Engines``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import sys
from collections.abc import Generator
from pathlib import Path

import uvicorn
from loguru import logger
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench.baselines.pipecat_protocol import (
    SAMPLE_RATE,
    AnswerEvents,
    PositionedSileroVAD,
    StreamSerializer,
    TurnEvents,
    TurnLog,
)
from bench.baselines.pipecat_services import (
    BundleLLMService,
    BundleSTTService,
    BundleTTSService,
    Engines,
)
from voicegate.core.codec import PCM16_16K
from voicegate.server import event_loop
from voicegate.server.gateway_process import listen_socket
from voicegate.server.protocols.native_events import ErrorEvent, SessionStarted
from voicegate.server.protocols.native_wire import (
    DEFAULT_LIMITS,
    CloseCode,
    ErrorCode,
    ProtocolError,
    SessionStart,
    parse_client_text,
)

_READY = "baseline: serving on "
_START_TIMEOUT_S = 15.0  # for session.start after the upgrade


class PipecatPeer:
    def __init__(self, engines: Engines) -> None:
        self.engines = engines
        self._ids = itertools.count(1)
        self.workers: set[PipelineWorker] = set()

    def app(self) -> Starlette:
        return Starlette(routes=[WebSocketRoute("/v1/stream", self._stream)])

    async def _stream(self, websocket: WebSocket) -> None:
        await websocket.accept()
        sid = next(self._ids)
        try:
            start = await self._session_start(websocket)
        except ProtocolError as exc:
            await _fail(websocket, exc)
            return
        except (WebSocketDisconnect, TimeoutError):
            return
        await websocket.send_text(
            SessionStarted(f"{sid:08x}", start.input, start.output, None, DEFAULT_LIMITS).to_json()
        )
        await self._run_pipeline(websocket, sid, start)

    async def _session_start(self, websocket: WebSocket) -> SessionStart:
        """The opening message, read before the pipeline exists (as Pipecat's telephony
        endpoints read their provider's start message)."""
        message = await asyncio.wait_for(websocket.receive(), _START_TIMEOUT_S)
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(int(message.get("code", 1000)))
        text = message.get("text")
        if text is None:
            raise ProtocolError(ErrorCode.SESSION_NOT_STARTED, CloseCode.POLICY_VIOLATION,
                                "the first message must be session.start")  # fmt: skip
        start = parse_client_text(text)
        if not isinstance(start, SessionStart):
            raise ProtocolError(ErrorCode.SESSION_NOT_STARTED, CloseCode.POLICY_VIOLATION,
                                f"the first message must be session.start, not {start.type}")
        if start.input != PCM16_16K or start.output != PCM16_16K:
            raise ProtocolError(ErrorCode.UNSUPPORTED_SAMPLE_RATE, CloseCode.POLICY_VIOLATION,
                                "the Pipecat peer serves pcm16 at 16000 Hz both ways only")
        return start

    async def _run_pipeline(self, websocket: WebSocket, sid: int, start: SessionStart) -> None:
        engines = self.engines
        log = TurnLog()
        serializer = StreamSerializer(log)
        transport = FastAPIWebsocketTransport(
            websocket,
            FastAPIWebsocketParams(
                audio_in_enabled=True, audio_in_sample_rate=SAMPLE_RATE,
                audio_out_enabled=True, audio_out_sample_rate=SAMPLE_RATE,
                audio_out_10ms_chunks=2,  # 20 ms answer messages, as voicegate sends
                serializer=serializer, allowed_origins=[],
            ),
        )  # fmt: skip
        vad = PositionedSileroVAD(log, params=VADParams(stop_secs=engines.end_of_turn_s))
        pipeline = Pipeline([
            transport.input(),
            VADProcessor(vad_analyzer=vad),
            BundleSTTService(engines.stt),
            BundleLLMService(engines.llm, sid, start.instructions),
            TurnEvents(log),
            BundleTTSService(engines.voice),
            AnswerEvents(log),
            transport.output(),
        ])  # fmt: skip
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE,
                                  audio_out_sample_rate=SAMPLE_RATE),
            enable_rtvi=False, idle_timeout_secs=None,
        )  # fmt: skip

        async def hang_up(_transport: object, _websocket: object) -> None:
            await worker.cancel(reason="client disconnected")

        transport.add_event_handler("on_client_disconnected", hang_up)

        def protocol_error(exc: ProtocolError) -> None:
            async def fail() -> None:
                await _fail(websocket, exc)
                if exc.fatal:
                    await worker.cancel(reason=exc.code.value)

            asyncio.get_running_loop().create_task(fail())

        serializer.on_error = protocol_error
        self.workers.add(worker)
        try:
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()
        finally:
            self.workers.discard(worker)

    async def stop(self) -> None:
        for worker in list(self.workers):
            await worker.cancel(reason="server stopping")


async def _fail(websocket: WebSocket, exc: ProtocolError) -> None:
    with contextlib.suppress(Exception):
        fatal = exc.close_code is not None
        await websocket.send_text(ErrorEvent(exc.code.value, exc.message, fatal).to_json())
        if fatal:
            await websocket.close(int(exc.close_code or CloseCode.POLICY_VIOLATION))


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Our handlers only ask uvicorn to exit, so the models are released after it.
        yield


async def serve(bundle: Path, host: str, port: int) -> None:
    engines = Engines.load(bundle)
    peer = PipecatPeer(engines)
    sock = listen_socket(host, port)
    sock.listen(1024)
    config = uvicorn.Config(
        peer.app(), ws="websockets-sansio", lifespan="off", log_level=logging.WARNING,
        access_log=False, timeout_graceful_shutdown=5,
    )  # fmt: skip
    uv = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(uv, "should_exit", True))
    bound_host, bound_port = sock.getsockname()[:2]
    print(f"{_READY}ws://{bound_host}:{bound_port}/v1/stream", flush=True)
    try:
        await uv.serve(sockets=[sock])
    finally:
        await peer.stop()
        sock.close()
        engines.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines.pipecat_peer")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s pipecat-peer %(message)s")
    # Pipecat logs every frame decision at DEBUG through loguru; transcripts must not be
    # logged, and the log would cost the peer CPU the others do not spend.
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    event_loop.run(serve(args.bundle, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
