"""No audio or text of a caller at rest: a real node (the four model-backed stages on a
scripted bundle, DEBUG logs) serves a session in each mode (pcm16 with instructions,
mu-law, text input), then everything it could have written is searched for what the
callers sent and heard: its log, its cache, its HOME and TMPDIR (each private to this
test: nothing may appear there at all) and the files of /tmp written meanwhile."""

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

from websockets.asyncio.client import ClientConnection, connect

from voicegate.core.codec import mulaw_encode
from voicegate.core.wav import read_wav
from voicegate.models.graphs.synth import Scripted, synth_bundle

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "voicegate" / "data" / "demo" / "order_status.wav"
TRANSCRIPT = "Please move my Zorvexa appointment to Thursday morning."
REPLY = "Your Quillmarsh appointment moved to Thursday at nine."
INSTRUCTIONS = "Speak like a lighthouse keeper named Ortolanix."
TEXT_INPUT = "Is the Pelivrand invoice settled already?"
# One made-up word of each: found alone, a piece of any of them is this test's.
MARKERS = ("Zorvexa", "Quillmarsh", "Ortolanix", "Pelivrand")


def _files(root: Path) -> dict[Path, int]:
    found: dict[Path, int] = {}
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                found[path] = path.stat().st_mtime_ns
        except OSError:
            continue
    return found


def _recent_tmp_files(since_ns: int, mine: Path) -> Iterator[Path]:
    """Files of /tmp modified since ``since_ns`` (other users of the machine write there
    too: their files cannot hold what this test's callers said)."""
    for dirpath, _, names in os.walk("/tmp"):
        if Path(dirpath).is_relative_to(mine):
            continue
        for name in names:
            path = Path(dirpath) / name
            try:
                if path.is_file() and path.stat().st_mtime_ns >= since_ns:
                    yield path
            except OSError:
                continue


def _audio_windows(data: bytes, count: int = 12, size: int = 48) -> list[bytes]:
    """Pieces of what a caller sent, from where the signal is not silent."""
    step = max(1, (len(data) - size) // (4 * count))
    windows = [data[i : i + size] for i in range(0, len(data) - size, step)]
    return [w for w in windows if len(set(w)) > 8][:count]


def test_sessions_in_every_mode_leave_nothing_at_rest(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    synth_bundle(bundle, seed=5, scripted=Scripted(reply=REPLY, transcript=TRANSCRIPT, tts=True))
    private = {name: tmp_path / name for name in ("home", "tmp", "cache")}
    for path in private.values():
        path.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    name = f"rest{os.getpid() % 100000}"
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'[node]\nname = "{name}"\n[logging]\nlevel = "DEBUG"\n')
    env = dict(
        os.environ, PYTHONPATH=str(REPO), HOME=str(private["home"]), TMPDIR=str(private["tmp"]),
        VOICEGATE_CACHE=str(private["cache"]), XDG_CACHE_HOME=str(private["cache"]),
    )  # fmt: skip
    before = {path: _files(path) for path in private.values()}
    started_ns = time.time_ns()
    log_path = logs / "node.log"
    with log_path.open("w") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "voicegate", "serve", "--config", str(cfg), "--port", "0",
             "--bundle", str(bundle)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
        try:
            assert serve.stdout is not None
            port = 0
            for line in serve.stdout:
                found = re.search(r"serving on http://127\.0\.0\.1:(\d+)", line)
                if found:
                    port = int(found.group(1))
                    break
            assert port, log_path.read_text()
            try:
                heard = asyncio.run(_sessions(f"ws://127.0.0.1:{port}/v1/stream"))
            except Exception:
                print(log_path.read_text()[-4000:])  # the node's side of the failure
                raise
        finally:
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(timeout=60) == 0
    # The pipeline carried what is searched for: its absence below means something.
    assert TRANSCRIPT in heard["transcripts"] and REPLY in heard["answers"]
    samples = read_wav(DEMO).samples
    secrets_text = [TRANSCRIPT, REPLY, INSTRUCTIONS, TEXT_INPUT]
    secrets_audio = _audio_windows(samples.astype("<i2").tobytes()) + _audio_windows(
        mulaw_encode(samples)
    )
    assert len(secrets_audio) >= 20

    def holds_secret(path: Path) -> str | None:
        try:
            data = path.read_bytes()
        except OSError:
            return None
        for piece in (*secrets_text, *MARKERS):
            if piece.encode() in data or piece.lower().encode() in data:
                return f"{path} holds {piece!r}"
        for window in secrets_audio:
            if window in data:
                return f"{path} holds the caller's audio"
        return None

    log_text = log_path.read_text()
    # Logged at DEBUG; the audit trail names each session's start and end, nothing said.
    assert log_text.count("session start: key - via open from 127.0.0.1:") == 3
    assert log_text.count("session end: key - from 127.0.0.1:") == 3
    assert log_text.count("without API keys") == 1  # warned once, by the supervisor
    assert holds_secret(log_path) is None
    for root, old in before.items():
        new = {p for p, mtime in _files(root).items() if old.get(p) != mtime}
        assert not new, f"the node wrote {sorted(map(str, new))}"
    leaks = [why for p in _recent_tmp_files(started_ns, tmp_path) if (why := holds_secret(p))]
    assert not leaks
    assert not [n for n in os.listdir("/dev/shm") if f"vg-{name}-" in n]


async def _sessions(url: str) -> dict[str, list[str]]:
    wav = read_wav(DEMO)
    samples = wav.samples
    heard: dict[str, list[str]] = {"transcripts": [], "answers": []}
    modes = [
        ("pcm16", samples.astype("<i2").tobytes(), 640, INSTRUCTIONS),
        ("mulaw", mulaw_encode(samples), 320, None),
    ]
    for encoding, data, frame, instructions in modes:
        fmt = {"encoding": encoding, "sample_rate": 16000}
        start: dict[str, object] = {"type": "session.start", "input": fmt, "output": fmt}
        if instructions:
            start["instructions"] = instructions
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps(start))
            assert json.loads(await ws.recv())["type"] == "session.started"
            for i in range(0, len(data) - frame + 1, frame):
                await ws.send(data[i : i + frame])
                await asyncio.sleep(0.005)
            silence = bytes(frame) if encoding == "pcm16" else b"\xff" * frame
            for _ in range(50):
                await ws.send(silence)
                await asyncio.sleep(0.005)
            await _until_done(ws, heard)
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.start"}))
        assert json.loads(await ws.recv())["type"] == "session.started"
        await ws.send(json.dumps({"type": "text.input", "text": TEXT_INPUT}))
        await _until_done(ws, heard)
    return heard


async def _until_done(ws: ClientConnection, heard: dict[str, list[str]]) -> None:
    answer: list[str] = []
    async with asyncio.timeout(60):
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                continue
            event = json.loads(message)
            kind = event["type"]
            if kind == "transcript.final":
                heard["transcripts"].append(event["text"])
            elif kind == "response.text.delta":
                answer.append(event["delta"])
            elif kind == "error":
                raise AssertionError(event)
            elif kind == "response.done":
                heard["answers"].append("".join(answer))
                return
