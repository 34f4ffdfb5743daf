"""The load generator of ``bench gateway``: many WebSocket sessions streaming 20 ms
frames, at a few microseconds of client CPU per frame.

Each session is a ``bench._wsraw`` raw WebSocket protocol (hand-made upgrade, frames
masked with a fixed key, an incremental parser). Here:

- each session's audio frame is built once; each send writes the masked stamp into it;
- ONE timer per process sends every session's due frame in its 20 ms slot, the sessions
  spread evenly over the 20 ms;
- a binary frame carries the stamp back and is read in place; text frames are skipped
  except the ``session.started`` that voicegate's JSON handshake waits for.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench._wsraw import FIN, MASK, OP_BINARY, OP_TEXT, HandshakeError, RawWebSocket

FRAME_MS = 20
FRAME_BYTES = 640  # 20 ms of PCM16 at 16 kHz
_STAMP = struct.Struct("<qBxxx")  # send time (monotonic ns), 1 if measured; padded to 12
_MASK_STAMP = int.from_bytes(MASK * 3, "little")


@dataclass
class Tally:
    """What the sessions of one load step measured."""

    sent: int = 0  # measured frames sent
    back: int = 0  # measured frames received back
    errors: int = 0  # sessions that failed (handshake, or lost during the step)
    latencies_ns: list[int] = field(default_factory=list)


class WsSession(RawWebSocket):
    """One client connection; ``ready`` resolves once frames may be streamed."""

    def __init__(self, host: str, path: str, handshake: bool, tally: Tally) -> None:
        super().__init__(host, path)
        self._json_handshake = handshake
        self.tally = tally
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.streaming = False  # loss of the connection while streaming is an error
        # Header of a final binary frame of FRAME_BYTES (16-bit length form), then the
        # payload of zeros as the fixed key masks it; the stamp goes in bytes 8..20.
        self.frame = bytearray(
            struct.pack("!BBH", FIN | OP_BINARY, 0x80 | 126, FRAME_BYTES) + MASK
        ) + MASK * (FRAME_BYTES // 4)

    def on_open(self) -> None:
        if self._json_handshake:
            self.send(OP_TEXT, json.dumps({"type": "session.start"}).encode())
        else:
            self.ready.set_result(None)

    def on_binary(self, buf: bytearray, start: int, end: int, now_ns: int) -> None:
        # The hot path: a frame carrying its stamp back, read in place.
        if end - start >= _STAMP.size:
            sent_ns, measured = _STAMP.unpack_from(buf, start)
            if measured:
                self.tally.latencies_ns.append(now_ns - sent_ns)
                self.tally.back += 1

    def on_message(self, opcode: int, payload: bytes, now_ns: int) -> None:
        if opcode == OP_BINARY:  # a fragmented one: rare, not the hot path
            self.on_binary(bytearray(payload), 0, len(payload), now_ns)
        elif opcode == OP_TEXT and not self.ready.done():
            kind = json.loads(payload).get("type")
            if kind == "session.started":
                self.ready.set_result(None)
            else:
                self.fail(HandshakeError(f"no session.started: {kind!r}"))

    def on_close(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed during the handshake"))
        if self.streaming:
            self.tally.errors += 1
            self.streaming = False

    def fail(self, exc: Exception) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        super().fail(exc)

    def send_stamped(self, measured: bool) -> None:
        """Send the prebuilt audio frame with the current time in its first bytes."""
        frame = self.frame
        stamp = _STAMP.pack(time.monotonic_ns(), measured)
        frame[8:20] = (int.from_bytes(stamp, "little") ^ _MASK_STAMP).to_bytes(12, "little")
        # A copy: the transport may keep a reference to what it could not send at once.
        self.write(bytes(frame))

    def close(self, code: int = 1000) -> None:
        self.streaming = False
        super().close(code)


class Pacer:
    """The one timer: session ``i`` of ``n`` sends at ``begin + i * 20 ms / n + k * 20 ms``
    until ``stop_at``; frames due at or after ``measure_from`` are measured."""

    def __init__(
        self, sessions: Sequence[WsSession], *, begin: float, stop_at: float,
        measure_from: float,
    ) -> None:  # fmt: skip
        self._sessions = list(sessions)
        self._period = FRAME_MS / 1000
        self._offsets = [i * self._period / len(sessions) for i in range(len(sessions))]
        self._begin = begin
        self._stop_at = stop_at
        self._measure_from = measure_from
        self._cycle = 0
        self._next = 0
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        self.late_ms_max = 0.0  # how late the timer ran at worst: a busy client shows here

    def start(self) -> None:
        self._loop.call_at(self._begin, self._tick)

    def _due(self) -> float:
        return self._begin + self._cycle * self._period + self._offsets[self._next]

    def _tick(self) -> None:
        now = self._loop.time()
        sessions = self._sessions
        tally = sessions[0].tally
        due = self._due()
        self.late_ms_max = max(self.late_ms_max, (now - due) * 1000)
        while due <= now:
            if due >= self._stop_at:
                self.done.set_result(None)
                return
            measured = due >= self._measure_from
            session = sessions[self._next]
            if session.streaming:
                session.send_stamped(measured)
                tally.sent += measured
            self._next += 1
            if self._next == len(sessions):
                self._next = 0
                self._cycle += 1
            due = self._due()
        self._loop.call_at(due, self._tick)


async def open_sessions(
    host: str, port: int, path: str, count: int, *, handshake: bool, tally: Tally,
    timeout_s: float = 30.0,
) -> list[WsSession]:  # fmt: skip
    """Connect ``count`` sessions (at most 64 handshakes at a time); failed ones are
    counted in ``tally.errors`` and left out."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(64)

    async def one() -> WsSession:
        async with gate:
            _, session = await loop.create_connection(
                lambda: WsSession(f"{host}:{port}", path, handshake, tally), host, port
            )
            await session.ready
            session.streaming = True
            return session

    results = await asyncio.wait_for(
        asyncio.gather(*(one() for _ in range(count)), return_exceptions=True), timeout_s
    )
    sessions = []
    for result in results:
        if isinstance(result, BaseException):
            tally.errors += 1
        else:
            sessions.append(result)
    return sessions


async def close_sessions(sessions: Sequence[WsSession], timeout_s: float = 5.0) -> None:
    for session in sessions:
        session.close()
    if sessions:
        await asyncio.wait([s.closed for s in sessions], timeout=timeout_s)
    for session in sessions:
        if session.transport is not None and not session.closed.done():
            session.transport.abort()
