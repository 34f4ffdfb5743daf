"""End to end through real processes on loopback: `voicegate serve` with a scripted first
stage (tests/server/gateway_fakes.py) and pass-through later stages, driven by a
websockets client."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from gateway_node import LOUD, REPO, Node, collect_until, squash, start_session, types_of, utterance

from voicegate.core import codec
from voicegate.core.codec import Encoding


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("gw"), "--max-sessions", "24", "--gateways", "2")
    try:
        yield n
    finally:
        code = n.stop()
        assert code == 0, "".join(n.lines)
        assert n.leftovers() == []


def test_events_in_order_and_audio_in_requested_format(node: Node) -> None:
    async def main() -> None:
        for enc, rate in (("pcm16", 24000), ("mulaw", 8000)):
            async with websockets.connect(node.url) as ws:
                started = await start_session(ws, {"encoding": enc, "sample_rate": rate})
                assert started["type"] == "session.started"
                send = asyncio.create_task(utterance(ws))
                items = await collect_until(ws, "response.done")
                await send
                types = squash(types_of(items))
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
            await start_session(ws)
            # Speech, a short pause (below the 200 ms end-of-turn silence), more speech.
            await utterance(ws, speech_frames=5, silence_frames=3)
            send = asyncio.create_task(utterance(ws, speech_frames=5, silence_frames=20))
            items = await collect_until(ws, "response.done")
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
                await start_session(ws)
                await utterance(ws)
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
                    await utterance(ws, speech_frames=0, silence_frames=20)
                    after = await collect_until(ws, "response.done")
                    turns = {e["turn"] for e in after if isinstance(e, dict) and "turn" in e}
                    assert turns == {2}, after

        asyncio.run(main())
    finally:
        assert n.stop() == 0, "".join(n.lines)
        assert n.leftovers() == []


def test_capacity_across_gateways_and_oversized_message(tmp_path: Path) -> None:
    n = Node(tmp_path, "--max-sessions", "2", "--gateways", "2")
    try:

        async def main() -> None:
            async with (
                websockets.connect(n.url) as first,
                websockets.connect(n.url) as second,
            ):
                await start_session(first)
                await start_session(second)
                ready = httpx.get(f"http://127.0.0.1:{n.port}/readyz").json()
                assert ready["free_sessions"] == 0
                async with websockets.connect(n.url) as third:
                    ev = json.loads(await third.recv())
                    assert ev["code"] == "at_capacity"
                    with pytest.raises(websockets.ConnectionClosed) as info:
                        await third.recv()
                    assert info.value.rcvd is not None and info.value.rcvd.code == 1013
                await first.send(bytes(200 * 1024))
                ev = json.loads(await first.recv())
                assert ev["code"] == "message_too_big"
                with pytest.raises(websockets.ConnectionClosed) as info:
                    await first.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == 1009
            # Both closed: the places are free again, on whichever gateway answers.
            for _ in range(100):
                if httpx.get(f"http://127.0.0.1:{n.port}/readyz").json()["free_sessions"] == 2:
                    break
                await asyncio.sleep(0.05)
            async with websockets.connect(n.url) as again:
                assert (await start_session(again))["type"] == "session.started"

        asyncio.run(main())
    finally:
        assert n.stop() == 0, "".join(n.lines)
        assert n.leftovers() == []


def test_twenty_concurrent_sessions_get_their_own_answers(node: Node) -> None:
    async def one(i: int) -> list[Any]:
        async with websockets.connect(node.url) as ws:
            await start_session(ws)
            await ws.send(json.dumps({"type": "text.input", "text": f"question {i}"}))
            return await collect_until(ws, "response.done", timeout=60)

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


def test_talk_client_gets_an_answer_in_the_fallback_rate(node: Node, tmp_path: Path) -> None:
    out = tmp_path / "answer.wav"
    talk = subprocess.run(
        [sys.executable, "-m", "voicegate", "talk", "--url", node.url, "--pace", "4",
         "--output-encoding", "mulaw", "--output-rate", "8000", "--out", str(out)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert talk.returncode == 0, talk.stdout + talk.stderr
    assert re.search(r"answer:\s+answer \d+\.", talk.stdout), talk.stdout
    assert "mulaw 8000 Hz" in talk.stdout
    assert out.stat().st_size > 44


def test_gateway_processes_run_on_their_configured_cpus(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    n = Node(tmp_path, "--gateways", "2", config=f"[gateway]\ncpus = [{cpu}]\n")
    try:
        titles = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        titles[int(entry)] = f.read().split(b"\0")[0].decode()
                except OSError:
                    continue
        gateways = [pid for pid, title in titles.items() if title.startswith("voicegate: gateway")]
        gateways = [pid for pid in gateways if os.getsid(pid) == n.proc.pid]
        assert len(gateways) == 2
        for pid in gateways:
            for task in os.listdir(f"/proc/{pid}/task"):
                assert os.sched_getaffinity(int(task)) == {cpu}
    finally:
        assert n.stop() == 0
        assert not n.leftovers()
