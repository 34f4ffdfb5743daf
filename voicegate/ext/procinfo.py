"""Process identity from /proc: pid plus start time, so that a reused pid or a zombie
(a kill -9'd child not yet reaped, for which ``os.kill(pid, 0)`` still succeeds) is
never mistaken for a live peer."""

from __future__ import annotations

import functools
import os
from typing import NamedTuple


class ProcessState(NamedTuple):
    state: str  # one letter: R, S, D, Z, X, ...
    start_time: int  # field 22 of /proc/<pid>/stat: clock ticks since boot


def process_state(pid: int) -> ProcessState | None:
    """State and start time of ``pid``, or None when no such process exists."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or
    # parentheses, so the fixed fields are counted from the last ')'.
    close = text.rfind(b")")
    fields = text[close + 2 :].split()
    if close < 0 or len(fields) < 20:
        return None
    # fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    return ProcessState(fields[0].decode("ascii", "replace"), int(fields[19]))


def self_start_time() -> int:
    """Start time of the calling process (keyed by pid, so a forked child re-reads it)."""
    return _start_time_of(os.getpid())


@functools.lru_cache(maxsize=4)
def _start_time_of(pid: int) -> int:
    state = process_state(pid)
    if state is None:
        raise RuntimeError(f"cannot read /proc/{pid}/stat: voicegate rings need Linux /proc")
    return state.start_time


def process_alive(pid: int, start_time: int) -> bool:
    """True when ``pid`` runs and is the process that started at ``start_time``."""
    state = process_state(pid)
    if state is None or state.state in ("Z", "X", "x"):
        return False
    return state.start_time == start_time
