"""The load generator of ``bench gateway``: many WebSocket sessions streaming 20 ms
frames, at a few microseconds of client CPU per frame.

A general WebSocket client (one coroutine and one sleep per session per frame, a frame
object per message) costs more per frame than the server under test does, so on one core
it measures itself. Here instead:

- each session is a raw ``asyncio.Protocol``; the HTTP upgrade is written by hand and
  its answer checked (101 and ``Sec-WebSocket-Accept``);
- client frames are built once per session, masked as RFC 6455 requires of a client,
  with a fixed mask key (a bench does not need the key to be unpredictable: the mask
  only protects proxies against cache poisoning); each send writes the masked stamp
  into the prebuilt frame;
- ONE timer per process sends every session's due frame in its 20 ms slot, the sessions
  spread evenly over the 20 ms;
- server frames go through a minimal incremental parser (TCP reads split and join
  frames anywhere); a binary frame carries the stamp back, text frames are skipped
  except the ``session.started`` that voicegate's JSON handshake waits for.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

FRAME_MS = 20
FRAME_BYTES = 640  # 20 ms of PCM16 at 16 kHz
_STAMP = struct.Struct("<qBxxx")  # send time (monotonic ns), 1 if measured; padded to 12
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MASK = b"\x5a\xa5\x3c\xc3"  # fixed client mask key, see the module docstring
_MASK_STAMP = int.from_bytes(_MASK * 3, "little")
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING = 0x0, 0x1, 0x2, 0x8, 0x9
_FIN = 0x80


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked with the fixed key."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", _FIN | opcode, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", _FIN | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, 0x80 | 127, n)
    key = (_MASK * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + _MASK + masked


def _accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


class HandshakeError(RuntimeError):
    pass


@dataclass
class Tally:
    """What the sessions of one load step measured."""

    sent: int = 0  # measured frames sent
    back: int = 0  # measured frames received back
    errors: int = 0  # sessions that failed (handshake, or lost during the step)
    latencies_ns: list[int] = field(default_factory=list)


class WsSession(asyncio.Protocol):
    """One client connection; ``ready`` resolves once frames may be streamed."""

    def __init__(self, host: str, path: str, handshake: bool, tally: Tally) -> None:
        self._host = host
        self._path = path
        self._json_handshake = handshake
        self.tally = tally
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._key = base64.b64encode(os.urandom(16))
        self._upgraded = False
        self._buf = bytearray()
        self._message_opcode = -1  # opcode of a fragmented message in progress
        self._message = bytearray()
        self.streaming = False  # loss of the connection while streaming is an error
        # Header of a final binary frame of FRAME_BYTES (16-bit length form), then the
        # payload of zeros as the fixed key masks it; the stamp goes in bytes 8..20.
        self.frame = bytearray(
            struct.pack("!BBH", _FIN | _OP_BINARY, 0x80 | 126, FRAME_BYTES) + _MASK
        ) + _MASK * (FRAME_BYTES // 4)

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            f"GET {self._path} HTTP/1.1\r\nHost: {self._host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                self._check_upgrade(bytes(buf[:end]))
            except HandshakeError as exc:
                self._fail(exc)
                return
            del buf[: end + 4]
            self._upgraded = True
            if self._json_handshake:
                self.send(_OP_TEXT, json.dumps({"type": "session.start"}).encode())
            else:
                self.ready.set_result(None)
        pos = 0
        size = len(buf)
        tally = self.tally
        while size - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1] & 0x7F  # server frames are not masked
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            opcode = b0 & 0x0F
            if opcode == _OP_BINARY and b0 & _FIN and length >= _STAMP.size:
                # The hot path: one whole binary frame carrying a stamp back.
                sent_ns, measured = _STAMP.unpack_from(buf, start)
                if measured:
                    tally.latencies_ns.append(now - sent_ns)
                    tally.back += 1
            else:
                self._on_frame(b0, opcode, bytes(buf[start:end]), now)
            pos = end
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed during the handshake"))
        if self.streaming:
            self.tally.errors += 1
            self.streaming = False
        if not self.closed.done():
            self.closed.set_result(None)

    # -- frames ----------------------------------------------------------------------

    def _check_upgrade(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise HandshakeError(f"upgrade refused: {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept", "").encode() != _accept_key(self._key):
            raise HandshakeError("wrong Sec-WebSocket-Accept")

    def _on_frame(self, b0: int, opcode: int, payload: bytes, now: int) -> None:
        if opcode == _OP_PING:
            self.send(0xA, payload)
            return
        if opcode == _OP_CLOSE:
            if self.transport is not None:
                self.transport.close()
            return
        if opcode >= 0x8:  # pong, or a control frame we do not use
            return
        if opcode == _OP_CONT:
            self._message += payload
            opcode = self._message_opcode
        elif not b0 & _FIN:
            self._message_opcode = opcode
            self._message = bytearray(payload)
        if not b0 & _FIN:
            return
        if self._message_opcode >= 0:
            payload, self._message = bytes(self._message), bytearray()
            self._message_opcode = -1
        if opcode == _OP_BINARY and len(payload) >= _STAMP.size:
            sent_ns, measured = _STAMP.unpack_from(payload)
            if measured:
                self.tally.latencies_ns.append(now - sent_ns)
                self.tally.back += 1
        elif opcode == _OP_TEXT and not self.ready.done():
            kind = json.loads(payload).get("type")
            if kind == "session.started":
                self.ready.set_result(None)
            else:
                self._fail(HandshakeError(f"no session.started: {kind!r}"))

    def _fail(self, exc: Exception) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload))

    def send_stamped(self, measured: bool) -> None:
        """Send the prebuilt audio frame with the current time in its first bytes."""
        frame = self.frame
        stamp = _STAMP.pack(time.monotonic_ns(), measured)
        frame[8:20] = (int.from_bytes(stamp, "little") ^ _MASK_STAMP).to_bytes(12, "little")
        assert self.transport is not None
        # A copy: the transport may keep a reference to what it could not send at once.
        self.transport.write(bytes(frame))

    def close(self) -> None:
        self.streaming = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(_OP_CLOSE, struct.pack("!H", 1000)))
            self.transport.close()


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
