"""A WebSocket client for load generators, at a few microseconds of client CPU a frame.

A general client (one coroutine and one sleep per session per frame, a frame object per
message) costs more per frame than the server under test, so on a small machine the load
generator measures itself. This one is a raw ``asyncio.Protocol``:

- the HTTP upgrade is written by hand and its answer checked (101 and
  ``Sec-WebSocket-Accept``);
- client frames are masked, as RFC 6455 requires of a client, with a fixed mask key: a
  bench does not need the key to be unpredictable (it only protects proxies against
  cache poisoning), and a fixed key lets whole frames be built once and sent many times;
- server frames go through a small incremental parser (TCP reads split and join frames
  anywhere); pings are answered, a close frame closes the connection, fragmented
  messages are joined.

Subclasses receive whole messages in ``on_message`` and learn of the upgrade in
``on_open``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import ssl
import struct
import time
from typing import cast

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FIN = 0x80
MASK = b"\x5a\xa5\x3c\xc3"  # the fixed client mask key, see the module docstring
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(RuntimeError):
    pass


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame carrying ``payload``, masked with the fixed key."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", FIN | opcode, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", FIN | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", FIN | opcode, 0x80 | 127, n)
    key = (MASK * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + MASK + masked


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


class RawWebSocket(asyncio.Protocol):
    """One client connection to ``ws://host/path``; ``opened`` resolves at the upgrade,
    ``closed`` when the connection is gone."""

    def __init__(self, host: str, path: str, headers: dict[str, str] | None = None) -> None:
        self._host = host
        self._path = path
        # Extra handshake headers (Authorization for a node with API keys).
        self._headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.close_code: int | None = None
        self._key = base64.b64encode(os.urandom(16))
        self._upgraded = False
        self._buf = bytearray()
        self._message_opcode = -1  # opcode of a fragmented message in progress
        self._message = bytearray()

    # -- what subclasses implement ---------------------------------------------------

    def on_open(self) -> None:
        """The upgrade succeeded: messages may be sent."""

    def on_message(self, opcode: int, payload: bytes, now_ns: int) -> None:
        """A whole text or binary message, received at ``now_ns`` (monotonic)."""

    def on_close(self, exc: Exception | None) -> None:
        """The connection is gone (after or without the upgrade)."""

    def on_binary(self, buf: bytearray, start: int, end: int, now_ns: int) -> None:
        """A whole binary message in one frame, at ``buf[start:end]`` (valid only during
        the call). A hot path may read it in place; by default it becomes a message."""
        self.on_message(OP_BINARY, bytes(buf[start:end]), now_ns)

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport; they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        transport.write(
            f"GET {self._path} HTTP/1.1\r\nHost: {self._host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key.decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{self._headers}\r\n".encode()
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
                self.fail(exc)
                return
            del buf[: end + 4]
            self._upgraded = True
            if not self.opened.done():
                self.opened.set_result(None)
            self.on_open()
        pos = 0
        size = len(buf)
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
            if b0 == FIN | OP_BINARY:
                self.on_binary(buf, start, end, now)
            else:
                self._on_frame(b0, bytes(buf[start:end]), now)
            pos = end
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.on_close(exc)

    # -- frames ----------------------------------------------------------------------

    def _check_upgrade(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise HandshakeError(f"upgrade refused: {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept", "").encode() != accept_key(self._key):
            raise HandshakeError("wrong Sec-WebSocket-Accept")

    def _on_frame(self, b0: int, payload: bytes, now: int) -> None:
        opcode = b0 & 0x0F
        if opcode == OP_PING:
            self.send(OP_PONG, payload)
            return
        if opcode == OP_CLOSE:
            if len(payload) >= 2:
                self.close_code = int.from_bytes(payload[:2], "big")
            if self.transport is not None:
                self.transport.close()
            return
        if opcode >= 0x8:  # pong, or a control frame not used here
            return
        if opcode == OP_CONT:
            self._message += payload
            opcode = self._message_opcode
        elif not b0 & FIN:
            self._message_opcode = opcode
            self._message = bytearray(payload)
        if not b0 & FIN:
            return
        if self._message_opcode >= 0:
            payload, self._message = bytes(self._message), bytearray()
            self._message_opcode = -1
        self.on_message(opcode, payload, now)

    def fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def send(self, opcode: int, payload: bytes) -> None:
        self.write(client_frame(opcode, payload))

    def write(self, frame: bytes) -> None:
        """Send a frame built by ``client_frame`` (bytes: the transport may keep it)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def close(self, code: int = 1000) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(OP_CLOSE, struct.pack("!H", code)))
            self.transport.close()


async def connect(
    protocol: RawWebSocket,
    host: str,
    port: int,
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
) -> RawWebSocket:
    """Open ``protocol``'s connection (over TLS with ``tls``) and wait for its upgrade."""
    loop = asyncio.get_running_loop()
    opening = loop.create_connection(
        lambda: protocol, host, port, ssl=tls, server_hostname=host if tls else None
    )
    await asyncio.wait_for(opening, timeout_s)
    await asyncio.wait_for(asyncio.shield(protocol.opened), timeout_s)
    return protocol
