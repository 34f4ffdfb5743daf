"""A client that does not read is degraded, then closed, while another session is served;
SIGTERM lets the answer in flight finish, closes with 1001 and leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import mmap
import os
import re
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from gateway_node import LOUD, Node, collect_until, start_session, utterance
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from voicegate.core.layout import CONTROL_OFFSETS

FALLBACK = {
    "encoding": "pcm16",
    "sample_rate": 48000,
    "fallback": {"encoding": "mulaw", "sample_rate": 8000},
}


def _not_reading_client(port: int) -> list[Any]:
    """A client that stops reading its socket (sans-io websockets on a blocking socket
    with a small receive buffer), asks for three long answers, then reads everything:
    the events it got, ending with the close."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(30)
    client = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/v1/stream"), max_size=None)
    client.send_request(client.connect())
    sock.sendall(b"".join(client.data_to_send()))
    while client.handshake_exc is None and client.state is not State.OPEN:
        client.receive_data(sock.recv(4096))
    assert client.handshake_exc is None
    texts: list[Any] = []
    closed: list[int] = []

    def drain() -> None:
        for event in client.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                texts.append(json.loads(bytes(event.data)))
            elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                closed.append(Close.parse(event.data).code)

    client.send_text(json.dumps({"type": "session.start", "output": FALLBACK}).encode())
    sock.sendall(b"".join(client.data_to_send()))
    # Still not reading: the first answers overflow its queue (degrade), a later one
    # overflows again in the fallback format (close).
    for text in ("one", "two", "three"):
        client.send_text(json.dumps({"type": "text.input", "text": text}).encode())
        sock.sendall(b"".join(client.data_to_send()))
        time.sleep(1.5)
    while not closed:
        data = sock.recv(65536)
        if not data:
            break
        client.receive_data(data)
        drain()
    sock.close()
    assert closed == [1008], texts
    return texts


def test_slow_client_degraded_then_closed_without_slowing_others(tmp_path: Path) -> None:
    # No pacing (a huge lead): the answer goes out as fast as the socket takes it.
    n = Node(
        tmp_path,
        "--send-queue-frames", "20", "--stall-ms", "100", "--lead-ms", "600000",
        "--send-buffer-bytes", "16384",
        answer_ms=20000,
    )  # fmt: skip
    try:

        async def slow() -> list[Any]:
            return await asyncio.to_thread(_not_reading_client, n.port)

        async def normal() -> list[Any]:
            await asyncio.sleep(0.5)
            async with websockets.connect(n.url) as ws:
                await start_session(ws)
                await ws.send(json.dumps({"type": "text.input", "text": "hello"}))
                return await collect_until(ws, "response.done", timeout=60)

        async def main() -> None:
            slow_events, normal_items = await asyncio.gather(slow(), normal())
            types = [e["type"] for e in slow_events]
            assert "output.degraded" in types, types
            degraded = slow_events[types.index("output.degraded")]
            assert (degraded["encoding"], degraded["sample_rate"]) == ("mulaw", 8000)
            assert slow_events[-1]["type"] == "error", types
            assert slow_events[-1]["code"] == "slow_client"
            assert types.index("output.degraded") < len(types) - 1
            assert normal_items[-1]["type"] == "response.done"
            assert normal_items[-1]["text"] == "answer 1."

        asyncio.run(main())
    finally:
        assert n.stop() == 0, "".join(n.lines)
        assert n.leftovers() == []


def test_sigterm_finishes_the_answer_then_closes_1001(tmp_path: Path) -> None:
    n = Node(tmp_path, answer_ms=1000)
    code = None
    try:

        async def main() -> list[Any]:
            async with websockets.connect(n.url) as ws:
                await start_session(ws)
                await ws.send(json.dumps({"type": "text.input", "text": "hi"}))
                got: list[Any] = []
                async with asyncio.timeout(30):
                    while not any(isinstance(g, bytes) for g in got):
                        m = await ws.recv()
                        got.append(m if isinstance(m, bytes) else json.loads(m))
                    n.proc.send_signal(15)
                    with pytest.raises(websockets.ConnectionClosed) as info:
                        while True:
                            m = await ws.recv()
                            got.append(m if isinstance(m, bytes) else json.loads(m))
                assert info.value.rcvd is not None and info.value.rcvd.code == 1001
                return got

        got = asyncio.run(main())
        events = [g["type"] for g in got if isinstance(g, dict)]
        assert events[-2:] == ["response.done", "error"], events
        assert sum(isinstance(g, bytes) for g in got) == 50  # the whole 1 s answer
    finally:
        code = n.stop()
    assert code == 0, "".join(n.lines)
    assert n.leftovers() == []
    assert n.processes_left() == []


def test_worker_restart_fails_the_turn_in_flight_and_the_session_goes_on(tmp_path: Path) -> None:
    n = Node(tmp_path, answer_ms=3000)
    try:

        def vad_pid() -> int:
            text = httpx.get(f"http://127.0.0.1:{n.port}/metrics").text
            found = re.search(
                r'voicegate_process_up\{process="vad",state="READY",pid="(\d+)"', text
            )
            return int(found.group(1)) if found else 0

        async def main() -> None:
            async with websockets.connect(n.url) as ws:
                await start_session(ws)
                for _ in range(5):  # speech: turn 1 is in flight
                    await ws.send(LOUD)
                got: list[Any] = []
                async with asyncio.timeout(30):
                    while not any(isinstance(g, str) and "speech.started" in g for g in got):
                        got.append(await ws.recv())
                    old = vad_pid()
                    os.kill(old, signal.SIGKILL)
                    while True:
                        m = await ws.recv()
                        if isinstance(m, str) and json.loads(m)["type"] == "error":
                            error = json.loads(m)
                            break
                    assert error["fatal"] is False
                    while vad_pid() in (0, old):  # the replacement is up
                        await asyncio.sleep(0.1)
                    await ws.send(json.dumps({"type": "text.input", "text": "two"}))
                    items = await collect_until(ws, "response.done", timeout=30)
                    assert items[-1]["text"].startswith("answer ")
                    finals = [i["text"] for i in items if isinstance(i, dict)
                              and i["type"] == "transcript.final"]  # fmt: skip
                    assert finals == ["two"]
                    text = httpx.get(f"http://127.0.0.1:{n.port}/metrics").text
                    for process, restarts in (("vad", 1), ("stt", 0), ("gw0", 0)):
                        assert (
                            f'voicegate_worker_restarts_total{{process="{process}"}} {restarts}\n'
                            in text
                        ), process
                    assert 'voicegate_process_generation{process="vad"} 2\n' in text
                    assert 'voicegate_gateway_turns_failed_total{gateway="0"} 1\n' in text

        asyncio.run(main())
    finally:
        assert n.stop() == 0, "".join(n.lines)
        assert n.leftovers() == []


def test_rings_closed_under_the_gateway_close_its_sessions_1001(tmp_path: Path) -> None:
    """The supervisor marks a ring closed before it unlinks it. A gateway still reading
    it used to die in its egress task (RingClosed), leaving its sessions hanging and
    uvicorn reporting a failed shutdown; it must close them with 1001 instead."""
    n = Node(tmp_path)
    try:

        async def main() -> None:
            async with websockets.connect(n.url) as ws:
                await start_session(ws)
                ring = f"/dev/shm/vg-{n.name}-ctl-gw0"
                with open(ring, "r+b") as f, mmap.mmap(f.fileno(), 4096) as control:
                    struct.pack_into("<I", control, CONTROL_OFFSETS["closed"], 1)
                # Caller audio makes the egress task run and read its rings again.
                with pytest.raises(websockets.ConnectionClosed) as info:
                    async with asyncio.timeout(30):
                        while True:
                            await utterance(ws)
                assert info.value.rcvd is not None and info.value.rcvd.code == 1001

        asyncio.run(main())
    finally:
        n.stop()
    assert "Application shutdown failed" not in "".join(n.lines)
    assert n.leftovers() == []


def test_a_client_that_does_not_read_is_found_with_large_kernel_buffers(
    tmp_path: Path,
) -> None:
    # Default pacing and the kernel's autotuned send buffer (issue 15, defect 8): no send
    # ever blocks for long, the socket's unacknowledged backlog finds the client.
    n = Node(tmp_path, "--unread-limit-ms", "1000", answer_ms=20000)
    try:
        events = _not_reading_client(n.port)
        types = [e["type"] for e in events]
        assert "output.degraded" in types, types
        assert events[-1]["type"] == "error" and events[-1]["code"] == "slow_client", types
        metrics = httpx.get(f"http://127.0.0.1:{n.port}/metrics").text
        assert re.search(r"^voicegate_gateway_slow_client_closed_total\S* 1$", metrics, re.M)
    finally:
        assert n.stop() == 0, "".join(n.lines)
        assert n.leftovers() == []
