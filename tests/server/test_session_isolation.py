"""A record that makes a stage raise fails that session's turn, with an ``error`` event,
and nothing else: the worker is not restarted and a concurrent caller gets its answer
(issue 15, defect 1 at the node level)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from gateway_node import Node, collect_until, start_session, types_of


def _metric(text: str, name: str, process: str) -> float:
    m = re.search(rf'^{name}{{[^}}]*process="{process}"[^}}]*}} (\S+)$', text, re.MULTILINE)
    assert m, f"{name} for {process} not in /metrics"
    return float(m.group(1))


async def _turn(ws: Any, text: str, stop: str) -> list[Any]:
    await ws.send(json.dumps({"type": "text.input", "text": text}))
    return await collect_until(ws, stop)


async def _scenario(url: str) -> None:
    async with websockets.connect(url) as bad, websockets.connect(url) as good:
        assert (await start_session(bad))["type"] == "session.started"
        assert (await start_session(good))["type"] == "session.started"
        failing = asyncio.create_task(_turn(bad, "boom " * 800, "error"))
        healthy = asyncio.create_task(_turn(good, "hello", "response.done"))
        got = await failing
        error = got[-1]
        assert error["code"] == "internal_error" and error["fatal"] is False, error
        assert "boom" not in error["message"]
        assert "response.done" in types_of(await healthy)
        # Both sessions go on.
        assert "response.done" in types_of(await _turn(bad, "hello again", "response.done"))
        assert "response.done" in types_of(await _turn(good, "and again", "response.done"))


def test_a_record_that_makes_a_stage_raise_fails_only_its_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICEGATE_WORKERS_LLM_STAGE", "gateway_fakes:RaisingPassStage")
    node = Node(tmp_path)
    try:
        asyncio.run(_scenario(node.url))
        text = httpx.get(f"http://127.0.0.1:{node.port}/metrics").text
        assert _metric(text, "voicegate_worker_restarts_total", "llm") == 0
        assert _metric(text, "voicegate_process_session_failures_total", "llm") == 1
    finally:
        assert node.stop() == 0
    log = "".join(node.lines)
    assert "boom" not in log  # the input is never logged
    assert node.leftovers() == []
