"""End to end through real processes on loopback: `voicegate serve` with a scripted first
stage (tests/server/gateway_fakes.py) and pass-through later stages, driven by a
websockets client."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from voicegate.core import codec
from voicegate.core.codec import Encoding

REPO = Path(__file__).resolve().parents[2]
LOUD = (np.full(320, 6000, dtype=np.int16)).tobytes()  # 20 ms at 16 kHz pcm16
QUIET = bytes(640)


class Node:
    def __init__(self, tmp: Path, *extra: str, answer_ms: int = 400) -> None:
        self.name = f"gwt{os.getpid() % 10000}{int(time.time() * 1000) % 100000}"
        cfg = tmp / "node.toml"
        cfg.write_text(
            f'[node]\nname = "{self.name}"\ndrain_timeout_s = 3.0\n'
            '[workers.vad]\nstage = "gateway_fakes:ScriptedTurnStage"\n'
            f"[workers.vad.options]\nanswer_ms = {answer_ms}\nend_of_turn_ms = 200\n"
            + "".join(
                f'[workers.{s}]\nstage = "voicegate.workers.passthrough:PassThroughStage"\n'
                f'[workers.{s}.options]\ntag = ""\n'
                for s in ("stt", "llm", "tts")
            )
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(Path(__file__).parent)])
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voicegate",
                "serve",
                "--config",
                str(cfg),
                "--port",
                "0",
                "--bundle",
                str(tmp),
                *extra,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.port = 0
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"serving on http://127.0.0.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        assert self.port, "".join(self.lines)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate()
        self.lines.append(out or "")
        return self.proc.returncode

    def leftovers(self) -> list[str]:
        return [n for n in os.listdir("/dev/shm") if f"vg-{self.name}-" in n]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("gw"), "--max-sessions", "24", "--gateways", "2")
    try:
        yield n
    finally:
        code = n.stop()
        assert code == 0, "".join(n.lines)
        assert n.leftovers() == []


async def _start(ws: Any, output: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "session.start"}
    if output:
        msg["output"] = output
    await ws.send(json.dumps(msg))
    reply: dict[str, Any] = json.loads(await ws.recv())
    return reply


async def _utterance(ws: Any, speech_frames: int = 10, silence_frames: int = 20) -> None:
    for _ in range(speech_frames):
        await ws.send(LOUD)
        await asyncio.sleep(0.005)
    for _ in range(silence_frames):
        await ws.send(QUIET)
        await asyncio.sleep(0.005)


async def _collect_until(ws: Any, stop: str, timeout: float = 20.0) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            m = await ws.recv()
            if isinstance(m, bytes):
                got.append(m)
                continue
            ev = json.loads(m)
            got.append(ev)
            if ev["type"] == stop:
                return got


def _types(items: list[Any]) -> list[str]:
    return [i["type"] if isinstance(i, dict) else "audio" for i in items]


def _squash(types: list[str]) -> list[str]:
    out: list[str] = []
    for t in types:
        if not out or out[-1] != t or t != "audio":
            out.append(t)
    return out


def test_events_in_order_and_audio_in_requested_format(node: Node) -> None:
    async def main() -> None:
        for enc, rate in (("pcm16", 24000), ("mulaw", 8000)):
            async with websockets.connect(node.url) as ws:
                started = await _start(ws, {"encoding": enc, "sample_rate": rate})
                assert started["type"] == "session.started"
                send = asyncio.create_task(_utterance(ws))
                items = await _collect_until(ws, "response.done")
                await send
                types = _squash(_types(items))
                assert types == [
                    "speech.started",
                    "transcript.partial",
                    "speech.stopped",
                    "transcript.final",
                    "response.started",
                    "response.text.delta",
                    "response.audio.started",
                    "audio",
                    "response.done",
                ], types
                audio = [i for i in items if isinstance(i, bytes)]
                assert {len(a) for a in audio} == {codec.frame_bytes(Encoding(enc), rate, 20)}
                assert len(audio) == 20  # answer_ms 400 / 20 ms
                done = items[-1]
                assert done["text"] == "answer 1." and done["speculative"] is True
                lat = done["latency_ms"]
                assert lat["voice_to_voice"] == pytest.approx(
                    lat["end_of_turn_silence"] + lat["after_end_of_turn"], abs=0.01
                )
                await ws.send(json.dumps({"type": "session.end"}))

    asyncio.run(main())


def test_resumed_turn_cancels_speculation(node: Node) -> None:
    async def main() -> None:
        async with websockets.connect(node.url) as ws:
            await _start(ws)
            # Speech, a short pause (below the 200 ms end-of-turn silence), more speech.
            await _utterance(ws, speech_frames=5, silence_frames=3)
            send = asyncio.create_task(_utterance(ws, speech_frames=5, silence_frames=20))
            items = await _collect_until(ws, "response.done")
            await send
            events = [i for i in items if isinstance(i, dict)]
            answer_turns = {e["turn"] for e in events if e["type"].startswith("response.")}
            assert answer_turns == {2}, events  # nothing of the voided turn 1 was sent
            assert events[-1]["text"] == "answer 2."

    asyncio.run(main())


def test_barge_in_stops_audio(tmp_path: Path) -> None:
    n = Node(tmp_path, answer_ms=4000)
    try:

        async def main() -> None:
            async with websockets.connect(n.url) as ws:
                await _start(ws)
                await _utterance(ws)
                got: list[Any] = []
                async with asyncio.timeout(20):
                    while not any(isinstance(g, bytes) for g in got):
                        m = await ws.recv()
                        got.append(m if isinstance(m, bytes) else json.loads(m))
                    for _ in range(10):  # talk over the answer
                        await ws.send(LOUD)
                        await asyncio.sleep(0.01)
                    while True:
                        m = await ws.recv()
                        got.append(m if isinstance(m, bytes) else json.loads(m))
                        if isinstance(got[-1], dict) and got[-1]["type"] == "response.cancelled":
                            break
                    assert got[-1] == {
                        "type": "response.cancelled",
                        "turn": 1,
                        "reason": "barge_in",
                    }
                    audio_before = sum(isinstance(g, bytes) for g in got)
                    assert audio_before < 200  # the 4 s answer was cut short
                    # Nothing of turn 1 after the cancel; the new turn is answered.
                    await _utterance(ws, speech_frames=0, silence_frames=20)
                    after = await _collect_until(ws, "response.done")
                    turns = {e["turn"] for e in after if isinstance(e, dict) and "turn" in e}
                    assert turns == {2}, after

        asyncio.run(main())
    finally:
        assert n.stop() == 0, "".join(n.lines)
        assert n.leftovers() == []


def test_capacity_and_oversized_message(tmp_path: Path) -> None:
    n = Node(tmp_path, "--max-sessions", "1")
    try:

        async def main() -> None:
            async with websockets.connect(n.url) as first:
                await _start(first)
                async with websockets.connect(n.url) as second:
                    ev = json.loads(await second.recv())
                    assert ev["code"] == "at_capacity"
                    with pytest.raises(websockets.ConnectionClosed) as info:
                        await second.recv()
                    assert info.value.rcvd is not None and info.value.rcvd.code == 1013
                await first.send(bytes(200 * 1024))
                ev = json.loads(await first.recv())
                assert ev["code"] == "message_too_big"
                with pytest.raises(websockets.ConnectionClosed) as info:
                    await first.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == 1009

        asyncio.run(main())
    finally:
        assert n.stop() == 0, "".join(n.lines)
        assert n.leftovers() == []


def test_twenty_concurrent_sessions_get_their_own_answers(node: Node) -> None:
    async def one(i: int) -> list[Any]:
        async with websockets.connect(node.url) as ws:
            await _start(ws)
            await ws.send(json.dumps({"type": "text.input", "text": f"question {i}"}))
            return await _collect_until(ws, "response.done", timeout=60)

    async def main() -> None:
        results = await asyncio.gather(*(one(i) for i in range(20)))
        for i, items in enumerate(results):
            finals = [
                e["text"] for e in items if isinstance(e, dict) and e["type"] == "transcript.final"
            ]
            assert finals == [f"question {i}"]
            assert items[-1]["text"] == "answer 1."

    asyncio.run(main())


def test_health_ready_metrics(node: Node) -> None:
    base = f"http://127.0.0.1:{node.port}"
    assert httpx.get(f"{base}/healthz").json()["status"] == "alive"
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.json()["free_sessions"] == 24
    text = httpx.get(f"{base}/metrics").text
    assert "voicegate_gateway_sessions_total" in text
    assert 'voicegate_process_up{process="vad"' in text
