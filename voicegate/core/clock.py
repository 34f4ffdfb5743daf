"""The one clock every process compares: CLOCK_MONOTONIC in integer nanoseconds.

Record headers carry ``origin_ns``, heartbeats and send stamps are compared across
processes, so every timestamp in voicegate comes from here: a system-wide monotonic clock
that never jumps with wall-clock adjustments. ``time.monotonic_ns`` is CLOCK_MONOTONIC
on Linux, the same clock the native ring reads.
"""

from __future__ import annotations

import time
from typing import Final

NS_PER_S: Final[int] = 1_000_000_000
NS_PER_MS: Final[int] = 1_000_000

monotonic_ns = time.monotonic_ns


def seconds_since(start_ns: int, now_ns: int | None = None) -> float:
    """Seconds elapsed since ``start_ns`` (a ``monotonic_ns`` reading)."""
    return ((monotonic_ns() if now_ns is None else now_ns) - start_ns) / NS_PER_S


def deadline_ns(timeout_s: float, now_ns: int | None = None) -> int:
    """The ``monotonic_ns`` reading ``timeout_s`` seconds from now."""
    return (monotonic_ns() if now_ns is None else now_ns) + int(timeout_s * NS_PER_S)
