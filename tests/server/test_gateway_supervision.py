"""Gateways are supervised like workers, and nothing outlives the supervisor (issue 15,
defects 4 and 5): a gateway killed with -9 is reaped, logged, counted and replaced, and
new calls are answered again; a supervisor killed with -9 takes every process of the
node with it, and the next start on the same port serves every call.

No wall-clock thresholds: every wait is for an event, with a generous timeout."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import websockets
from gateway_node import Node, collect_until, start_session, types_of


def _wait(predicate: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def _titled(title: str) -> list[int]:
    """Pids of live processes whose command line is ``title`` (setproctitle's)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").strip().decode(errors="replace")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if cmdline == title and state not in (b"Z", b"X"):
            pids.append(int(entry))
    return pids


def _in_group(node: Node, pid: int) -> bool:
    try:
        return os.getpgid(pid) == node.proc.pid
    except ProcessLookupError:
        return False


def _gateway_pids(node: Node, index: int = 0) -> list[int]:
    return [p for p in _titled(f"voicegate: gateway {index}") if _in_group(node, p)]


async def _answered(url: str) -> bool:
    async with websockets.connect(url, open_timeout=10) as ws:
        assert (await start_session(ws))["type"] == "session.started"
        await ws.send(json.dumps({"type": "text.input", "text": "hello"}))
        return "response.done" in types_of(await collect_until(ws, "response.done"))


def test_a_killed_gateway_is_reaped_logged_counted_and_replaced(tmp_path: Path) -> None:
    node = Node(tmp_path)
    try:
        [victim] = _gateway_pids(node)
        assert asyncio.run(_answered(node.url))
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: not os.path.exists(f"/proc/{victim}"), "the dead gateway to be reaped")
        _wait(lambda: _gateway_pids(node), "a replacement gateway")
        _wait(
            lambda: httpx.get(f"http://127.0.0.1:{node.port}/readyz", timeout=5).status_code
            == 200,
            "the replacement to serve",
        )
        for _ in range(3):
            assert asyncio.run(_answered(node.url))
        metrics = httpx.get(f"http://127.0.0.1:{node.port}/metrics").text
        assert re.search(r'^voicegate_worker_restarts_total\{process="gw0"\} 1$', metrics, re.M)
    finally:
        assert node.stop() == 0
    log = "".join(node.lines)
    assert f"gateway 0 (pid {victim}) was killed by SIGKILL; replacing it" in log
    assert node.processes_left() == []
    assert node.leftovers() == []


def test_nothing_outlives_a_killed_supervisor_and_a_restart_serves_every_call(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    first = Node(tmp_path / "a")
    port = first.port
    [gateway] = _gateway_pids(first)
    assert first.leftovers()
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(30)
    _wait(lambda: first.processes_left(grace_s=0) == [], "every process of the node to exit")
    assert gateway not in _titled("voicegate: gateway 0")
    _wait(lambda: first.leftovers() == [], "the janitor to remove the node's shared memory")
    (tmp_path / "b").mkdir()
    second = Node(tmp_path / "b", "--port", str(port))
    try:
        assert second.port == port
        for _ in range(6):
            assert asyncio.run(_answered(second.url))
    finally:
        assert second.stop() == 0
    assert second.leftovers() == []


def _worker_pid(node: Node, stage: str) -> int:
    [pid] = [p for p in _titled(f"voicegate: {stage}") if _in_group(node, p)]
    return pid


async def _answer_through_a_restart(node: Node) -> list[object]:
    async with websockets.connect(node.url) as ws:
        assert (await start_session(ws))["type"] == "session.started"
        await ws.send(json.dumps({"type": "text.input", "text": "hello"}))
        got: list[object] = []
        while not any(isinstance(m, bytes) for m in got):
            m = await ws.recv()
            got.append(m if isinstance(m, bytes) else json.loads(m))
        # The whole answer is at the gateway (the stages made it in one go); it plays at
        # real time. A worker dies meanwhile: what the gateway holds plays on.
        os.kill(_worker_pid(node, "llm"), signal.SIGKILL)
        got += await collect_until(ws, "response.done", timeout=30)
        return got


def test_audio_the_gateway_holds_plays_on_through_a_worker_restart(tmp_path: Path) -> None:
    node = Node(tmp_path, answer_ms=3000)
    try:
        got = asyncio.run(_answer_through_a_restart(node))
        types = types_of([m for m in got if not isinstance(m, bytes)])  # type: ignore[misc]
        assert "response.cancelled" not in types and "error" not in types, types
        audio = sum(len(m) for m in got if isinstance(m, bytes))
        assert audio == 3000 * 32  # every 20 ms frame of 3 s at 16 kHz pcm16
    finally:
        assert node.stop() == 0
    assert "worker llm" in "".join(node.lines)
