"""Limits that hold under abuse (issue 15, defects 3, 6 and 8): capacity counts started
sessions, connections per address are bounded, handshakes, session.start and silence
time out, one session's input is rate-limited, /readyz says 503 when the node is full,
and every limit is set from TOML, the environment or the command line.

No wall-clock thresholds: each timeout is waited for as an event, with a generous cap."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from gateway_node import LOUD, Node, collect_until, start_session, types_of

from voicegate.core.config import ConfigError, LimitsSettings, load_config
from voicegate.core.config_show import render_config
from voicegate.server.gateway.limits import (
    FAIR_AHEAD_MS,
    AddressLimiter,
    TokenBucket,
    audio_bucket,
    fair_share_refuses,
)
from voicegate.server.protocols.native import Close, OpenSession, SendText, StreamConnection

LIMITS = (
    "[limits]\nmax_sessions = 2\nmax_connections_per_address = 5\n"
    "handshake_timeout_s = 1.0\nsession_start_timeout_s = 1.0\nidle_timeout_s = 2.0\n"
    "audio_burst_ms = 500.0\ntext_inputs_per_s = 1.0\ntext_input_burst = 3\n"
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Any:
    n = Node(tmp_path_factory.mktemp("limits"), config=LIMITS)
    yield n
    assert n.stop() == 0, "".join(n.lines)
    assert n.leftovers() == []


async def _refused(ws: Any, code: str, close: int) -> None:
    event = json.loads(await ws.recv())
    assert (event["type"], event["code"], event["fatal"]) == ("error", code, True), event
    with pytest.raises(websockets.ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == close


def _ready(node: Node) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{node.port}/readyz", timeout=10)


def test_silent_sockets_take_no_capacity_and_readyz_says_full(node: Node) -> None:
    async def main() -> None:
        async with (
            websockets.connect(node.url) as idle,
            websockets.connect(node.url) as s1,
            websockets.connect(node.url) as s2,
        ):
            assert _ready(node).status_code == 200  # a silent socket counts for nothing
            assert (await start_session(s1))["type"] == "session.started"
            assert (await start_session(s2))["type"] == "session.started"
            full = _ready(node)
            assert full.status_code == 503 and full.json()["free_sessions"] == 0
            # A third caller finds the node full.
            async with websockets.connect(node.url) as third:
                await _refused(third, "at_capacity", 1013)
            idle2 = idle
            # The silent one is closed when its session.start does not come.
            await _refused(idle2, "timeout", 1008)
            await s1.send(json.dumps({"type": "text.input", "text": "hello"}))
            assert "response.done" in types_of(await collect_until(s1, "response.done"))

    asyncio.run(main())


def test_connections_per_address_are_bounded(node: Node) -> None:
    async def attempt() -> bool:
        held = [await websockets.connect(node.url) for _ in range(5)]
        try:
            async with websockets.connect(node.url) as sixth:
                event = json.loads(await sixth.recv())
                if event["code"] == "too_many_connections":
                    with pytest.raises(websockets.ConnectionClosed) as info:
                        await sixth.recv()
                    assert info.value.rcvd is not None and info.value.rcvd.code == 1013
                    return True
                # Admitted: only because a held one had already timed out (a slow
                # machine), never beyond the limit.
                assert event["code"] == "timeout", event
                assert any(ws.close_code is not None for ws in held)
                return False
        finally:
            for ws in held:
                await ws.close()

    async def main() -> None:
        for _ in range(5):
            if await attempt():
                return
        raise AssertionError("the sixth connection from one address was never refused")

    asyncio.run(main())


def test_a_session_that_says_nothing_times_out(node: Node) -> None:
    async def main() -> None:
        async with websockets.connect(node.url) as ws:
            assert (await start_session(ws))["type"] == "session.started"
            await _refused(ws, "timeout", 1008)

    asyncio.run(main())


def test_a_slowloris_handshake_is_dropped(node: Node) -> None:
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
        sock.sendall(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        assert sock.recv(1024) == b""  # the server closed it


def test_text_input_faster_than_its_rate_is_closed(node: Node) -> None:
    async def main() -> None:
        async with websockets.connect(node.url) as ws, websockets.connect(node.url) as good:
            assert (await start_session(ws))["type"] == "session.started"
            assert (await start_session(good))["type"] == "session.started"
            for i in range(20):
                await ws.send(json.dumps({"type": "text.input", "text": f"hi {i}"}))
            got = await collect_until(ws, "error")
            assert got[-1]["code"] == "rate_limited" and got[-1]["fatal"] is True
            with pytest.raises(websockets.ConnectionClosed) as info:
                while True:
                    await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
            await good.send(json.dumps({"type": "text.input", "text": "hello"}))
            assert "response.done" in types_of(await collect_until(good, "response.done"))

    asyncio.run(main())


def test_audio_faster_than_real_time_is_closed(node: Node) -> None:
    async def main() -> None:
        async with websockets.connect(node.url) as ws:
            assert (await start_session(ws))["type"] == "session.started"
            for _ in range(250):  # 5 s of audio at once
                await ws.send(LOUD)
            got = await collect_until(ws, "error")
            assert got[-1]["code"] == "rate_limited", got[-1]

    asyncio.run(main())
    metrics = httpx.get(f"http://127.0.0.1:{node.port}/metrics").text
    assert 'voicegate_worker_restarts_total{process="vad"} 0' in metrics
    assert "voicegate_gateway_sessions_rate_limited_total" in metrics


def test_every_limit_is_set_by_file_env_and_shown(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[limits]\nmax_sessions = 7\nidle_timeout_s = 30.0\n")
    env = {"VOICEGATE_LIMITS_TEXT_INPUTS_PER_S": "0.5"}
    limits = load_config(path, env).limits
    assert (limits.max_sessions, limits.idle_timeout_s, limits.text_inputs_per_s) == (7, 30, 0.5)
    shown = render_config(path, env)
    for f in dataclasses.fields(LimitsSettings):
        assert f"\n{f.name} = " in shown, f.name
    assert "max_sessions = 7  # file" in shown
    assert "text_inputs_per_s = 0.5  # env VOICEGATE_LIMITS_TEXT_INPUTS_PER_S" in shown
    with pytest.raises(ConfigError, match=r"limits\.max_connections_per_address"):
        load_config(None, {"VOICEGATE_LIMITS_MAX_CONNECTIONS_PER_ADDRESS": "0"})


def test_token_bucket_and_address_limiter() -> None:
    now = [0.0]
    audio = audio_bucket(500.0, clock=lambda: now[0])
    assert audio.take(500.0) and not audio.take(20.0)
    now[0] += 0.02  # real time refills it
    assert audio.take(20.0) and not audio.take(20.0)
    text = TokenBucket(1.0, 2, clock=lambda: now[0])
    assert text.take(1) and text.take(1) and not text.take(1)
    addresses = AddressLimiter(2)
    assert addresses.acquire("a") and addresses.acquire("a") and not addresses.acquire("a")
    assert addresses.acquire("b")
    addresses.release("a")
    assert addresses.acquire("a")
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0, 1)


def test_a_session_ahead_of_real_time_gives_way_in_a_half_full_ring() -> None:
    now = [0.0]
    ahead = audio_bucket(5000.0, clock=lambda: now[0])
    steady = audio_bucket(5000.0, clock=lambda: now[0])
    for _ in range(50):  # 1 s of audio at once: 1 s ahead
        assert ahead.take(20.0)
    now[0] += 0.02
    assert steady.take(20.0)  # 20 ms in 20 ms: real time
    assert ahead.deficit() > FAIR_AHEAD_MS >= steady.deficit()
    capacity = 1 << 21
    assert fair_share_refuses(ahead.deficit(), capacity // 2 + 1, capacity)
    assert not fair_share_refuses(ahead.deficit(), capacity // 2, capacity)  # room for all
    assert not fair_share_refuses(steady.deficit(), capacity - 1, capacity)  # never refused


def test_a_session_start_is_refused_when_the_node_filled_since_the_connect() -> None:
    conn = StreamConnection("s1")
    conn.connect()
    conn.admit = lambda: False  # the node filled up after this connection was accepted
    actions = conn.receive_text(json.dumps({"type": "session.start"}))
    sent = [a for a in actions if isinstance(a, SendText)]
    assert [json.loads(a.text)["code"] for a in sent] == ["at_capacity"]
    assert [a.code for a in actions if isinstance(a, Close)] == [1013]
    assert not any(isinstance(a, OpenSession) for a in actions)
