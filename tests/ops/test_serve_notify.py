"""`voicegate serve` talking sd_notify to a datagram socket the test owns, as systemd's
would be: READY=1 once the port listens, WATCHDOG=1 pings, the session count in STATUS,
STOPPING=1 on SIGTERM, STATUS=failed when the node cannot start."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[2]
PASS = "voicegate.workers.stages.passthrough:PassThroughStage"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()


def _start(
    tmp_path: Path, notify_path: str, vad_stage: str = PASS
) -> tuple[subprocess.Popen[str], str]:
    name = f"ntf{os.getpid() % 10000}{int(time.time() * 1000) % 100000}"
    cfg = tmp_path / "node.toml"
    stages = {"vad": vad_stage, "stt": PASS, "llm": PASS, "tts": PASS}
    cfg.write_text(
        f'[node]\nname = "{name}"\ndrain_timeout_s = 1.0\n'
        + "".join(f'[workers.{s}]\nstage = "{stage}"\n' for s, stage in stages.items())
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), NOTIFY_SOCKET=notify_path)
    env["WATCHDOG_USEC"] = "400000"
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicegate", "serve", "--config", str(cfg), "--port", "0",
         "--bundle", str(tmp_path)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    return proc, name


def _receive(sock: socket.socket, timeout_s: float = 60.0) -> list[str]:
    sock.settimeout(timeout_s)
    return sock.recv(4096).decode().split("\n")


def _wait_for(sock: socket.socket, line: str, seen: list[list[str]]) -> list[str]:
    while True:
        message = _receive(sock)
        seen.append(message)
        if any(x == line or (line.endswith("*") and x.startswith(line[:-1])) for x in message):
            return message


def _leftovers(name: str) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if f"vg-{name}-" in n]


def test_ready_watchdog_status_and_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    proc, name = _start(tmp_path, path)
    try:
        seen: list[list[str]] = []
        ready = _wait_for(sock, "READY=1", seen)
        # The port is printed before READY is sent: it is there to read now.
        assert proc.stdout is not None
        found = re.search(r"serving on http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
        assert found
        port = int(found.group(1))
        # Nothing before READY claimed the node ready or pinged it.
        assert all("WATCHDOG=1" not in m for m in seen[:-1])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        assert "STATUS=0 sessions" in ready
        pings = 0
        while pings < 3:
            pings += _receive(sock).count("WATCHDOG=1")
        with connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
            # A connection counts as a session once its session.start is accepted.
            ws.send('{"type": "session.start"}')
            ws.recv()
            _wait_for(sock, "STATUS=1 session", seen)
        _wait_for(sock, "STATUS=0 sessions", seen)
        proc.send_signal(signal.SIGTERM)
        stopping = _wait_for(sock, "STOPPING=1", seen)
        assert any(x.startswith("STATUS=stopping (SIGTERM)") for x in stopping)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not _leftovers(name)


def test_failure_to_start_is_reported_in_status(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    missing = "voicegate.workers.stages.passthrough:NoSuchStage"
    proc, name = _start(tmp_path, path, vad_stage=missing)
    try:
        seen: list[list[str]] = []
        failed = _wait_for(sock, "STATUS=failed: *", seen)
        assert "worker vad failed to start" in failed[0]
        assert all("READY=1" not in m for m in seen)
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not _leftovers(name)
