"""A `voicegate serve` node for the fault and soak benches: its own process group, the
generated demo bundle, and what it leaves behind (processes, /dev/shm objects)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench._stop import stop_server

REPO = Path(__file__).resolve().parent.parent
_SERVING = re.compile(r"serving on http://127\.0\.0\.1:(\d+)")


def demo_bundle(directory: Path) -> Path:
    """The generated demo bundle (small synthetic models, scripted answers)."""
    from voicegate.models.graphs.synth import Scripted, synth_bundle  # noqa: PLC0415

    if not (directory / "bundle.toml").exists():
        synth_bundle(
            directory,
            seed=7,
            scripted=Scripted(
                reply="Your order shipped yesterday. It will arrive tomorrow.",
                transcript="Can you check where my order is? It has not arrived yet.",
                tts=True,
            ),
            overwrite=True,
        )
    return directory


class BenchNode:
    def __init__(self, bundle: Path, log_path: Path, name: str, port: int = 0) -> None:
        self.name = name
        self.log = log_path.open("a")
        env = dict(os.environ, VOICEGATE_NODE_NAME=name)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voicegate", "serve", "--bundle", str(bundle),
             "--port", str(port), "--log-level", "WARNING"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True,
            start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.port = 0
        for line in self.proc.stdout:
            found = _SERVING.search(line)
            if found:
                self.port = int(found.group(1))
                break
        if not self.port:
            raise RuntimeError(f"voicegate serve did not start (exit {self.proc.poll()})")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def processes(self) -> dict[str, int]:
        """Live processes of the node's group by role (supervisor, vad, ..., gateway 0,
        janitor, resource tracker)."""
        found: dict[str, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                if os.getpgid(pid) != self.pid:
                    continue
                stat = Path(f"/proc/{pid}/stat").read_text()
                if stat[stat.rindex(")") + 2] in "ZX":
                    continue
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError):
                continue
            if pid == self.pid:
                role = "supervisor"
            elif cmd.startswith("voicegate: "):
                role = cmd.strip()[len("voicegate: ") :]
            elif "janitor" in cmd:
                role = "janitor"
            elif "resource_tracker" in cmd:
                role = "resource tracker"
            else:
                role = f"other {pid} ({cmd.strip()[:60]})"
            found[role] = pid
        return found

    def shm(self) -> list[str]:
        return [n for n in os.listdir("/dev/shm") if f"vg-{self.name}-" in n]

    def shm_bytes(self) -> int:
        total = 0
        for n in self.shm():
            with contextlib.suppress(OSError):
                total += os.stat(f"/dev/shm/{n}").st_blocks * 512
        return total

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)
        stop_server(self.proc, 60.0)
        self.log.close()

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        for n in self.shm():
            with contextlib.suppress(OSError):
                os.unlink(f"/dev/shm/{n}")


async def one_turn(ws: object, text: str, timeout_s: float = 30.0) -> tuple[bool, float]:
    """One text turn: whether it ended with response.done, and when its first answer
    audio arrived (time.monotonic(); 0.0 if none did)."""
    send = getattr(ws, "send")  # noqa: B009 - websockets connection, untyped here
    recv = getattr(ws, "recv")  # noqa: B009
    await send(json.dumps({"type": "text.input", "text": text}))
    first_audio = 0.0
    async with asyncio.timeout(timeout_s):
        while True:
            m = await recv()
            if isinstance(m, bytes):
                first_audio = first_audio or time.monotonic()
                continue
            event = json.loads(m)
            if event["type"] == "response.done":
                return True, first_audio
            if event["type"] in ("response.cancelled", "error"):
                return False, first_audio


def wait_for(predicate: object, timeout_s: float) -> float | None:
    """Seconds until ``predicate()`` held, or None after ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.02)
    return None
