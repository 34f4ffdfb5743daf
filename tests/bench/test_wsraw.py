"""bench._wsraw: the raw client's control frames, messages and upgrade check."""

from __future__ import annotations

import asyncio
import struct

import pytest

from bench._wsraw import OP_BINARY, OP_TEXT, HandshakeError, RawWebSocket, accept_key


class _Recorder(RawWebSocket):
    def __init__(self) -> None:
        super().__init__("h:1", "/")
        self.messages: list[tuple[int, bytes]] = []
        self.written: list[bytes] = []
        self.closing = False
        self.transport = type("T", (), {
            "write": lambda _, d: self.written.append(d),
            "is_closing": lambda _: self.closing,
            "close": lambda _: setattr(self, "closing", True),
            "abort": lambda _: setattr(self, "closing", True),
        })()  # fmt: skip

    def on_message(self, opcode: int, payload: bytes, now_ns: int) -> None:
        self.messages.append((opcode, payload))


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return bytes([(0x80 if fin else 0) | opcode, len(payload)]) + payload


def _upgrade(ws: RawWebSocket, accept: bytes) -> bytes:
    return b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"


def test_messages_pings_and_close_after_a_checked_upgrade() -> None:
    async def main() -> None:
        ws = _Recorder()
        stream = _upgrade(ws, accept_key(ws._key)) + b"".join([
            _frame(OP_TEXT, b'{"a": 1}'),
            _frame(0x9, b"hi"),  # ping: answered with a pong carrying the same bytes
            _frame(OP_BINARY, b"ab", fin=False),
            _frame(0x0, b"cd"),
            _frame(0x8, struct.pack("!H", 1001)),
        ])  # fmt: skip
        for i in range(0, len(stream), 5):
            ws.data_received(stream[i : i + 5])
        assert ws.opened.done() and ws.opened.exception() is None
        assert ws.messages == [(OP_TEXT, b'{"a": 1}'), (OP_BINARY, b"abcd")]
        pong = ws.written[-1]
        assert pong[0] == 0x8A and pong[1] == 0x80 | 2
        assert ws.close_code == 1001 and ws.closing

    asyncio.run(main())


def test_a_wrong_accept_key_fails_the_upgrade() -> None:
    async def main() -> None:
        ws = _Recorder()
        ws.data_received(_upgrade(ws, b"bogus"))
        with pytest.raises(HandshakeError, match="Sec-WebSocket-Accept"):
            ws.opened.result()
        assert ws.closing and not ws.messages

    asyncio.run(main())
