"""`voicegate serve` with the model-backed stages and the generated default bundle, driven
by the real `voicegate talk` client on the shipped demo utterance: the path `make run`
takes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import websockets

from voicegate.models.named_bundles import SYNTHETIC_REPLY, SYNTHETIC_TRANSCRIPT

REPO = Path(__file__).resolve().parents[2]

def test_make_run_path_talks_to_the_real_pipeline(tmp_path: Path) -> None:
    env = dict(os.environ, VOICEGATE_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    node = f"demo{os.getpid() % 100000}"
    env["VOICEGATE_NODE_NAME"] = node
    result = subprocess.run(
        [sys.executable, "-m", "voicegate.server.cli.run_demo", "--bundle", "synthetic",
         "--out", str(tmp_path / "a.wav")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"transcript:\s+{re.escape(SYNTHETIC_TRANSCRIPT)}", result.stdout)
    assert re.search(rf"answer:\s+{re.escape(SYNTHETIC_REPLY)}", result.stdout)
    assert "end_of_turn_silence" in result.stdout
    assert (tmp_path / "a.wav").stat().st_size > 44
    assert not [n for n in os.listdir("/dev/shm") if f"vg-{node}-" in n]


def test_turn_resumed_and_formats_with_real_stages(tmp_path: Path) -> None:
    env = dict(os.environ, VOICEGATE_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    env["VOICEGATE_NODE_NAME"] = f"formats{os.getpid() % 100000}"
    serve = subprocess.Popen(
        [sys.executable, "-m", "voicegate", "serve", "--port", "0", "--bundle", "synthetic"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        port = 0
        for line in serve.stdout:
            found = re.search(r"serving on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port
        for fmt in (["--output-encoding", "mulaw", "--output-rate", "8000"], []):
            talk = subprocess.run(
                [sys.executable, "-m", "voicegate", "talk", "--json", "--url",
                 f"ws://127.0.0.1:{port}/v1/stream", "--out", str(tmp_path / "b.wav"), *fmt],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert talk.returncode == 0, talk.stdout + talk.stderr
            assert SYNTHETIC_REPLY in talk.stdout
            assert json.dumps(SYNTHETIC_TRANSCRIPT)[1:-1] in talk.stdout
        # A typed turn: text.input, answered by the same (scripted) LLM and voice.
        typed = subprocess.run(
            [sys.executable, "-m", "voicegate", "talk", "--text", "Where is my order?",
             "--url", f"ws://127.0.0.1:{port}/v1/stream", "--out", str(tmp_path / "c.wav")],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert typed.returncode == 0, typed.stdout + typed.stderr
        assert re.search(rf"answer:\s+{re.escape(SYNTHETIC_REPLY)}", typed.stdout)
        assert "text-to-voice:" in typed.stdout
        assert (tmp_path / "c.wav").stat().st_size > 44
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0


def _demo_frames() -> list[bytes]:
    with wave.open(str(REPO / "voicegate" / "data" / "demo" / "order_status.wav")) as w:
        pcm = w.readframes(w.getnframes())
    return [pcm[i : i + 640] for i in range(0, len(pcm) - 639, 640)]


def test_voided_speculation_and_barge_in_with_real_stages(tmp_path: Path) -> None:
    env = dict(os.environ, VOICEGATE_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    env["VOICEGATE_NODE_NAME"] = f"barge{os.getpid() % 100000}"
    serve = subprocess.Popen(
        [sys.executable, "-m", "voicegate", "serve", "--port", "0", "--bundle", "synthetic"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        port = 0
        for line in serve.stdout:
            found = re.search(r"serving on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port
        frames = _demo_frames()
        speech = frames[25:]  # from the speech start (0.5 s)

        async def main() -> None:
            url = f"ws://127.0.0.1:{port}/v1/stream"
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"type": "session.start"}))
                got: list[Any] = [json.loads(await ws.recv())]

                async def stream(chunk: list[bytes]) -> None:
                    for frame in chunk:
                        await ws.send(frame)
                        await asyncio.sleep(0.02)

                sender = asyncio.create_task(stream(frames + [bytes(640)] * 50))
                async with asyncio.timeout(60):
                    while not any(isinstance(g, bytes) for g in got):
                        m = await ws.recv()
                        got.append(m if isinstance(m, bytes) else json.loads(m))
                    sender.cancel()  # only trailing silence was left to send
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
                    # Every answer event belongs to the answered turn: nothing of a
                    # voided speculation reached the client.
                    events = [g for g in got if isinstance(g, dict)]
                    answered = {e["turn"] for e in events if e["type"].startswith("response.")}
                    assert len(answered) == 1, events
                    # Talk over the answer.
                    sender = asyncio.create_task(stream(speech))
                    while True:
                        m = await ws.recv()
                        got.append(m if isinstance(m, bytes) else json.loads(m))
                        if isinstance(got[-1], dict) and got[-1]["type"] == "response.cancelled":
                            break
                    assert got[-1]["reason"] == "barge_in"
                    cancelled_turn = got[-1]["turn"]
                    await sender
                    await asyncio.gather(*[ws.send(bytes(640)) for _ in range(50)])
                    after: list[Any] = []
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(5):
                            while True:
                                m = await ws.recv()
                                after.append(m if isinstance(m, bytes) else json.loads(m))
                    turns = {a["turn"] for a in after if isinstance(a, dict) and "turn" in a}
                    assert cancelled_turn not in turns

        asyncio.run(main())
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
