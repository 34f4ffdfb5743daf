"""Stopping a server the benches started: SIGTERM, so it drains and removes its shared
memory, then SIGKILL if it has not exited in time."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_server(proc: subprocess.Popen[Any], timeout_s: float) -> None:
    """Stop ``proc`` (if it still runs) and close its stdout pipe."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
