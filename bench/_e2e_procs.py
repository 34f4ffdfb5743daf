"""Processes around `bench e2e`: the spawned node under test and CPU accounting of every
process (server tree and load generator) from /proc/<pid>/stat."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench._stop import stop_server
from voicegate.server.protocols.native_wire import STREAM_PATH

_TICKS = os.sysconf("SC_CLK_TCK")
_SERVING = re.compile(r"serving on (https?://[\w.\[\]:-]+:\d+)")
_PIN_AND_EXEC = (
    "import os, sys; os.sched_setaffinity(0, [int(c) for c in sys.argv[1].split(',')]); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CpuSample:
    name: str
    seconds: float  # utime + stime


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces: split after its closing parenthesis.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def is_running(pid: int) -> bool:
    """The process exists and has not exited (a zombie has)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def process_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return str(pid)
    words = [a.decode(errors="replace") for a in argv if a]
    if "-m" in words:
        tail = words[words.index("-m") + 1 :][:2]
        return f"{comm} ({' '.join(tail)})"
    if any("multiprocessing" in w for w in words):
        return f"{comm} (mp child)"
    return comm


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class CpuMeter:
    """utime+stime deltas of a set of processes between `start` and `stop`."""

    def __init__(self) -> None:
        self._before: dict[int, float] = {}

    def start(self, pids: Sequence[int]) -> None:
        self._before = {pid: s for pid in pids if (s := cpu_seconds(pid)) is not None}

    def stop(self, pids: Sequence[int], wall_s: float, role: str) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for pid in pids:
            now = cpu_seconds(pid)
            if now is None:
                continue
            used = now - self._before.get(pid, 0.0)
            rows.append(
                {
                    "role": role,
                    "pid": pid,
                    "name": process_name(pid),
                    "cpu_s": round(used, 3),
                    "cpu_pct": round(100.0 * used / wall_s, 1) if wall_s > 0 else None,
                }
            )
        return rows


@contextlib.contextmanager
def spawn_node(
    bundle: Path | None,
    cpus: Sequence[int],
    node_name: str,
    log_path: Path,
    ready_timeout_s: float = 300.0,
    *,
    extra_args: Sequence[str] = (),
) -> Iterator[tuple[str, int]]:
    """``voicegate serve --port 0`` pinned to ``cpus`` (its own layout spreads its stages
    over them); yields the stream URL and the server's pid, stops it with SIGTERM. The
    node's log (never audio or transcripts) goes to ``log_path``."""
    # Every caller of the load comes from this one address.
    env = dict(
        os.environ,
        VOICEGATE_NODE_NAME=node_name,
        VOICEGATE_LIMITS_MAX_CONNECTIONS_PER_ADDRESS="100000",
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "voicegate", "serve", "--port", "0", "--log-level", "WARNING"]
    if bundle is not None:
        cmd += ["--bundle", str(bundle)]
    cmd += list(extra_args)  # e.g. TLS and API keys (bench/_secure_node.py)
    if cpus:
        # Pinned before the interpreter starts, so every process it forks inherits the set.
        cmd = [sys.executable, "-c", _PIN_AND_EXEC, ",".join(map(str, cpus)), *cmd]
    log = log_path.open("w")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + ready_timeout_s
        base = None
        for line in proc.stdout:
            found = _SERVING.search(line)
            if found:
                base = found.group(1)
                break
            if time.monotonic() > deadline:
                break
        if base is None:
            raise RuntimeError(f"voicegate serve did not start (exit {proc.poll()})")
        # Keep the pipe drained so the server never blocks on a full stdout.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield base.replace("http", "ws", 1) + STREAM_PATH, proc.pid
    finally:
        stop_server(proc, 60.0)
        log.close()
