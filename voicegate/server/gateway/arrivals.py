"""When each recent input frame of a session arrived, in two fixed int64 arrays: the
gateway dates VAD's decisions by it. A deque of tuples took about 140 bytes a frame
(560 KB per streaming session once full, so most of a busy gateway's memory); this takes
16."""

from __future__ import annotations

import numpy as np


class ArrivalLog:
    """The last ``capacity`` frames: (end sample at 16 kHz, arrival ns), oldest first."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._ends = np.zeros(capacity, dtype=np.int64)
        self._times = np.zeros(capacity, dtype=np.int64)
        self._next = 0  # frames recorded so far; the slot of the next is _next % capacity

    def __len__(self) -> int:
        return min(self._next, len(self._ends))

    def append(self, end_sample: int, arrival_ns: int) -> None:
        slot = self._next % len(self._ends)
        self._ends[slot] = end_sample
        self._times[slot] = arrival_ns
        self._next += 1

    def arrival_of(self, sample: int) -> int:
        """Arrival of the oldest recorded frame that ends after ``sample`` (the frame
        holding it); 0 when no recorded frame does."""
        count = len(self)
        if not count:
            return 0
        start = self._next % len(self._ends) if self._next > len(self._ends) else 0
        order = np.roll(np.arange(count), -start) if start else np.arange(count)
        ends = self._ends[order]
        # End samples grow with the stream, so the first one past ``sample`` is found by
        # bisection.
        index = int(np.searchsorted(ends, sample, side="right"))
        return int(self._times[order[index]]) if index < count else 0
