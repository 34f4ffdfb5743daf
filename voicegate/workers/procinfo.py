"""Linux process facts the supervisor and workers rely on: identity that survives pid
reuse, liveness that sees through zombies, CPU pinning and parent-death signals."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from collections.abc import Iterable

_PR_SET_PDEATHSIG = 1


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (/proc/<pid>/stat field 22), or
    None when no such process exists. A (pid, start) pair names one process for good:
    a reused pid has a later start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (R, S, D, T, Z, ...), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat[stat.rindex(b")") + 2 :].split()[0].decode()


def is_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True when ``pid`` runs (a zombie counts as dead) and, if ``start_ticks`` is given,
    is the same process that had that start time."""
    if pid <= 0:
        return False
    state = process_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    return start_ticks is None or process_start_ticks(pid) == start_ticks


def pin_to(cpus: Iterable[int]) -> None:
    """Restrict the calling process to ``cpus``."""
    os.sched_setaffinity(0, set(cpus))


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies, so that a
    worker never outlives a supervisor killed with -9."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
