"""bench._wsraw: the raw client's control frames, messages and upgrade check."""

from __future__ import annotations

import asyncio
import ssl
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import serve

from bench._wsraw import OP_BINARY, OP_TEXT, HandshakeError, RawWebSocket, accept_key, connect


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


def test_tls_and_an_authorization_header(tmp_path: Path) -> None:
    """The load generator's path to a secured node: TLS, and the key on the upgrade."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
    from certs import issue, make_ca  # noqa: PLC0415 - tests/server's helper

    ca = make_ca()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issue(ca, cert, key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(ca.write(tmp_path / "ca.pem")))

    class _Echoed(RawWebSocket):
        def __init__(self, headers: dict[str, str] | None) -> None:
            super().__init__("127.0.0.1", "/", headers)
            self.got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def on_open(self) -> None:
            self.send(OP_BINARY, b"frame")

        def on_message(self, opcode: int, payload: bytes, now_ns: int) -> None:
            if not self.got.done():
                self.got.set_result(payload)

    def check(connection: Any, request: Any) -> Any:
        if request.headers.get("Authorization") != "Bearer k1":
            return connection.respond(401, "no key\n")
        return None

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, ssl=server_ctx, process_request=check) as srv:
            port = srv.sockets[0].getsockname()[1]
            ws = await connect(_Echoed({"Authorization": "Bearer k1"}), "127.0.0.1", port, 5,
                               client_ctx)  # fmt: skip
            assert await asyncio.wait_for(ws.got, 5) == b"frame"
            ws.close()
            with pytest.raises(HandshakeError, match="401"):
                await connect(_Echoed(None), "127.0.0.1", port, 5, client_ctx)

    asyncio.run(main())
