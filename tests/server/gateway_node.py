"""Helpers of the gateway tests: a `voicegate serve` node in a subprocess with the
scripted first stage (gateway_fakes.py) and pass-through later stages, and small
websockets client routines."""

from __future__ import annotations

import asyncio
import contextlib
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

import numpy as np

REPO = Path(__file__).resolve().parents[2]
LOUD = (np.full(320, 6000, dtype=np.int16)).tobytes()  # 20 ms at 16 kHz pcm16
QUIET = bytes(640)


class Node:
    def __init__(self, tmp: Path, *extra: str, answer_ms: int = 400, config: str = "") -> None:
        self.name = f"gwt{os.getpid() % 10000}{int(time.time() * 1000) % 100000}"
        cfg = tmp / "node.toml"
        cfg.write_text(
            f'[node]\nname = "{self.name}"\ndrain_timeout_s = 3.0\n'
            '[workers.vad]\nstage = "gateway_fakes:ScriptedTurnStage"\n'
            f"[workers.vad.options]\nanswer_ms = {answer_ms}\nend_of_turn_ms = 200\n"
            + "".join(
                f'[workers.{s}]\nstage = "voicegate.workers.stages.passthrough:PassThroughStage"\n'
                f'[workers.{s}.options]\ntag = ""\n'
                for s in ("stt", "llm", "tts")
            )
            + config
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
            m = re.search(r"serving on https?://127.0.0.1:(\d+)", line)
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

    def processes_left(self, grace_s: float = 10.0) -> list[str]:
        """Processes of the node's process group (the serve process leads it) still alive
        after ``grace_s`` (multiprocessing's resource tracker exits on its own, shortly
        after its last user)."""
        deadline = time.monotonic() + grace_s
        while True:
            left = []
            for entry in os.listdir("/proc"):
                try:
                    if entry.isdigit() and os.getpgid(int(entry)) == self.proc.pid:
                        with open(f"/proc/{entry}/cmdline", "rb") as f:
                            cmdline = f.read().replace(bytes(1), b" ").decode()
                        left.append(f"{entry}: {cmdline}")
                except OSError:
                    continue
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def leftovers(self) -> list[str]:
        return [n for n in os.listdir("/dev/shm") if f"vg-{self.name}-" in n]


@contextlib.contextmanager
def synthetic_node(tmp: Path, name: str) -> Iterator[tuple[int, dict[str, str]]]:
    """``voicegate serve`` on the generated synthetic bundle (the model-backed stages) as
    node ``name``: its port and the environment that reaches it; on exit it must stop
    cleanly and leave no shared memory."""
    env = dict(os.environ, VOICEGATE_CACHE=str(tmp / "cache"), PYTHONPATH=str(REPO))
    env["VOICEGATE_NODE_NAME"] = name
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
        assert port, "the node did not start"
        yield port, env
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    left = [n for n in os.listdir("/dev/shm") if f"vg-{name}-" in n]
    assert not left, f"node {name} left shared memory: {left}"


async def start_session(ws: Any, output: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "session.start"}
    if output:
        msg["output"] = output
    await ws.send(json.dumps(msg))
    reply: dict[str, Any] = json.loads(await ws.recv())
    return reply


async def utterance(ws: Any, speech_frames: int = 10, silence_frames: int = 20) -> None:
    for _ in range(speech_frames):
        await ws.send(LOUD)
        await asyncio.sleep(0.005)
    for _ in range(silence_frames):
        await ws.send(QUIET)
        await asyncio.sleep(0.005)


async def collect_until(ws: Any, stop: str, timeout: float = 20.0) -> list[Any]:
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


def types_of(items: list[Any]) -> list[str]:
    return [i["type"] if isinstance(i, dict) else "audio" for i in items]


def squash(types: list[str]) -> list[str]:
    out: list[str] = []
    for t in types:
        if not out or out[-1] != t or t != "audio":
            out.append(t)
    return out
