"""The load generator of ``bench gateway``: its frames and its incremental parser."""

from __future__ import annotations

import asyncio
import struct
import time

from bench._gateway_load import FRAME_BYTES, Tally, WsSession
from bench._wsraw import MASK, client_frame


def _unmask(frame: bytes) -> tuple[int, bytes]:
    b0, b1 = frame[0], frame[1]
    assert b1 & 0x80, "client frames must be masked"
    n, pos = b1 & 0x7F, 2
    if n == 126:
        (n,), pos = struct.unpack_from("!H", frame, 2), 4
    key, body = frame[pos : pos + 4], frame[pos + 4 :]
    assert len(body) == n
    return b0, bytes(b ^ key[i % 4] for i, b in enumerate(body))


def _server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([n]) if n < 126 else bytes([126]) + struct.pack("!H", n)
    return head + payload


def test_client_frames_are_masked_and_unmask_to_the_payload() -> None:
    for payload in (b"", b"x", b'{"type": "session.start"}', bytes(range(256)) * 3):
        b0, body = _unmask(client_frame(0x1, payload))
        assert b0 == 0x81 and body == payload


def test_stamped_frame_unmasks_to_the_stamp_and_zeros() -> None:
    async def main() -> None:
        session = WsSession("h:1", "/", False, Tally())
        sent: list[bytes] = []
        session.transport = type(
            "T", (), {"write": lambda self, d: sent.append(d), "is_closing": lambda self: False}
        )()
        before = time.monotonic_ns()
        session.send_stamped(True)
        b0, body = _unmask(sent[0])
        assert b0 == 0x82 and len(body) == FRAME_BYTES
        sent_ns, measured = struct.unpack_from("<qB", body)
        assert before <= sent_ns <= time.monotonic_ns() and measured == 1
        assert body[9:] == bytes(FRAME_BYTES - 9)
        assert sent[0][4:8] == MASK

    asyncio.run(main())


def test_parser_takes_frames_split_and_joined_anywhere() -> None:
    async def main() -> None:
        tally = Tally()
        session = WsSession("h:1", "/", False, tally)
        session._upgraded = True
        stamp = struct.pack("<qBxxx", time.monotonic_ns(), 1)
        audio = stamp + bytes(FRAME_BYTES - len(stamp))
        stream = (
            _server_frame(0x1, b'{"type": "transcript.final"}')
            + _server_frame(0x2, audio)
            + _server_frame(0x2, audio[:100], fin=False)  # a fragmented message
            + _server_frame(0x0, audio[100:])
            + _server_frame(0x2, struct.pack("<qBxxx", 5, 0))  # sent before the window
        )
        for i in range(0, len(stream), 7):  # TCP reads cut frames anywhere
            session.data_received(stream[i : i + 7])
        assert tally.back == 2 and len(tally.latencies_ns) == 2
        assert all(0 <= ns < 10**10 for ns in tally.latencies_ns)
        assert not session._buf

    asyncio.run(main())
