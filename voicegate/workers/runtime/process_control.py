"""Linux process facts the supervisor and workers rely on: identity that survives pid
reuse, liveness that sees through zombies (both read /proc through the ring's own
``voicegate.ext.procinfo``), CPU pinning and parent-death signals."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
from collections.abc import Iterable

from voicegate.ext.procinfo import process_state

_PR_SET_PDEATHSIG = 1


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when it is gone. A
    (pid, start) pair names one process for good: a reused pid has a later start time."""
    state = process_state(pid)
    return None if state is None else state.start_time


def is_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True when ``pid`` runs (a zombie counts as dead) and, if ``start_ticks`` is given,
    is the same process that had that start time."""
    state = process_state(pid)
    if state is None or state.state in ("Z", "X", "x"):
        return False
    return start_ticks is None or state.start_time == start_ticks


def pin_to(cpus: Iterable[int]) -> None:
    """Restrict the calling process, every thread of it, to ``cpus``.

    ``sched_setaffinity(0)`` moves only the calling thread: threads that imports started
    before (OpenBLAS's pool, for one) would stay on every CPU."""
    wanted = set(cpus)
    os.sched_setaffinity(0, wanted)
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task), wanted)


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies, so that a
    worker never outlives a supervisor killed with -9."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
