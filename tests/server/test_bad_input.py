# ruff: noqa: E501 - one case a line reads best
"""Bad input from one caller hurts nobody (issue 15): each case gets its documented
error event and close code (docs/protocol.md), a healthy session served at the same
time gets its answer, and no worker restarts."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
from gateway_node import LOUD, Node, collect_until, start_session, types_of

START = json.dumps({"type": "session.start"})


@dataclass(frozen=True)
class Case:
    name: str
    messages: tuple[str | bytes, ...]  # sent after session.start when ``started``
    code: str
    close: int | None  # None: not fatal, the session goes on
    started: bool = True


def _start(**fields: Any) -> str:
    return json.dumps({"type": "session.start", **fields})


def _pcm(rate: int) -> dict[str, Any]:
    return {"encoding": "pcm16", "sample_rate": rate}


NOT_STARTED = [
    Case("text before start", ('{"type": "text.input", "text": "hi"}',), "session_not_started", 1008, False),
    Case("audio before start", (LOUD,), "session_not_started", 1008, False),
    Case("not json", ("hello",), "invalid_json", 1008, False),
    Case("truncated json", ('{"type": "session.start"',), "invalid_json", 1008, False),
    Case("trailing garbage", ('{"type": "session.start"} x',), "invalid_json", 1008, False),
    Case("deeply nested", ("[" * 5000 + "]" * 5000,), "invalid_json", 1008, False),
    Case("json array", ("[]",), "invalid_message", 1008, False),
    Case("json number", ("1",), "invalid_message", 1008, False),
    Case("json string", ('"session.start"',), "invalid_message", 1008, False),
    Case("json null", ("null",), "invalid_message", 1008, False),
    Case("no type", ("{}",), "missing_field", 1008, False),
    Case("unknown type", ('{"type": "bogus"}',), "unknown_type", 1008, False),
    Case("type not a string", ('{"type": 5}',), "invalid_field", 1008, False),
    Case("unknown field", (_start(bogus=1),), "unknown_field", 1008, False),
    Case("unknown input field", (_start(input={**_pcm(16000), "x": 1}),), "unknown_field", 1008, False),
    Case("input encoding", (_start(input={"encoding": "opus", "sample_rate": 16000}),), "unsupported_encoding", 1008, False),
    Case("input rate", (_start(input=_pcm(44100)),), "unsupported_sample_rate", 1008, False),
    Case("input not an object", (_start(input="pcm16"),), "invalid_field", 1008, False),
    Case("rate as text", (_start(input={"encoding": "pcm16", "sample_rate": "16000"}),), "invalid_field", 1008, False),
    Case("rate as bool", (_start(input={"encoding": "pcm16", "sample_rate": True}),), "invalid_field", 1008, False),
    Case("rate as float", (_start(input={"encoding": "pcm16", "sample_rate": 16000.5}),), "invalid_field", 1008, False),
    Case("output encoding", (_start(output={"encoding": "flac", "sample_rate": 16000}),), "unsupported_encoding", 1008, False),
    Case("output rate", (_start(output=_pcm(11025)),), "unsupported_sample_rate", 1008, False),
    Case("fallback encoding", (_start(output={**_pcm(16000), "fallback": {"encoding": "aac", "sample_rate": 8000}}),), "unsupported_encoding", 1008, False),
    Case("instructions not text", (_start(instructions=5),), "invalid_field", 1008, False),
    Case("instructions too long", (_start(instructions="x" * 8001),), "text_too_long", 1008, False),
    Case("text message too big", (_start(instructions="x" * 140_000),), "message_too_big", 1009, False),
    # Before session.start any binary message is refused as such, whatever its size.
    Case("binary too big before start", (bytes(140_000),), "session_not_started", 1008, False),
]

STARTED = [
    Case("second session.start", (START,), "session_already_started", 1008),
    Case("odd pcm16 bytes", (bytes(641),), "bad_audio_frame", 1008),
    Case("not whole 10 ms", (bytes(100),), "bad_audio_frame", 1008),
    Case("binary too big", (bytes(140_000),), "message_too_big", 1009),
    Case("text.input without text", ('{"type": "text.input"}',), "missing_field", 1008),
    Case("text.input text a number", ('{"type": "text.input", "text": 5}',), "invalid_field", 1008),
    Case("text.input text null", ('{"type": "text.input", "text": null}',), "invalid_field", 1008),
    Case("text.input extra field", ('{"type": "text.input", "text": "a", "x": 1}',), "unknown_field", 1008),
    Case("session.end extra field", ('{"type": "session.end", "x": 1}',), "unknown_field", 1008),
    Case("unknown type after start", ('{"type": "response.create"}',), "unknown_type", 1008),
    Case("invalid json after start", ("{{",), "invalid_json", 1008),
    Case("array after start", ("[1, 2]",), "invalid_message", 1008),
    Case("text flood", tuple(json.dumps({"type": "text.input", "text": f"t{i}"}) for i in range(120)), "rate_limited", 1008),
    Case("audio far ahead of real time", (LOUD,) * 300, "rate_limited", 1008),
    Case("empty text", ('{"type": "text.input", "text": ""}',), "invalid_field", None),
    Case("blank text", ('{"type": "text.input", "text": "   "}',), "invalid_field", None),
    Case("text too long", (json.dumps({"type": "text.input", "text": "y" * 4001}),), "text_too_long", None),
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    config = "[limits]\ntext_inputs_per_s = 20.0\ntext_input_burst = 40\naudio_burst_ms = 2000.0\n"
    n = Node(tmp_path_factory.mktemp("bad"), config=config)
    yield n
    assert n.stop() == 0, "".join(n.lines)
    assert n.leftovers() == []


async def _bad(url: str, case: Case) -> dict[str, Any]:
    async with websockets.connect(url, max_size=None) as ws:
        if case.started:
            assert (await start_session(ws))["type"] == "session.started"
        for message in case.messages:
            try:
                await ws.send(message)
            except websockets.ConnectionClosed:
                break  # closed already: the error is waiting to be read
        error: dict[str, Any] | None = None
        while error is None:
            m = await ws.recv()
            if isinstance(m, str) and json.loads(m)["type"] == "error":
                error = json.loads(m)
        if case.close is None:
            assert error["fatal"] is False, error
            # The session goes on.
            await ws.send(json.dumps({"type": "text.input", "text": "still here"}))
            assert "response.done" in types_of(await collect_until(ws, "response.done"))
        else:
            assert error["fatal"] is True, error
            with pytest.raises(websockets.ConnectionClosed) as info:
                while True:
                    await ws.recv()
            assert info.value.rcvd is not None, "the server did not close"
            assert info.value.rcvd.code == case.close, (info.value.rcvd, error)
        return error


async def _healthy(url: str) -> list[str]:
    async with websockets.connect(url) as ws:
        assert (await start_session(ws))["type"] == "session.started"
        await ws.send(json.dumps({"type": "text.input", "text": "hello"}))
        return types_of(await collect_until(ws, "response.done"))


def _restarts(node: Node) -> int:
    text = httpx.get(f"http://127.0.0.1:{node.port}/metrics").text
    return sum(int(v) for v in re.findall(r"^voicegate_worker_restarts_total\{.*\} (\d+)$", text, re.M))


@pytest.mark.parametrize("case", NOT_STARTED + STARTED, ids=lambda c: c.name)
def test_bad_input_is_refused_and_hurts_nobody(node: Node, case: Case) -> None:
    async def main() -> tuple[dict[str, Any], list[str]]:
        return await asyncio.gather(_bad(node.url, case), _healthy(node.url))

    error, healthy = asyncio.run(main())
    assert error["code"] == case.code, error
    assert "response.done" in healthy
    assert _restarts(node) == 0


def test_the_suite_is_large_enough() -> None:
    assert len(NOT_STARTED + STARTED) >= 40
