"""Gateway memory does not grow with streamed audio (issue 15, defect 9): what a session
keeps per input frame (arrival times, to date VAD events) is bounded and small, so 256
streaming sessions cost the gateway little and a long stream costs no more than a short
one."""

from __future__ import annotations

import tracemalloc
from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from voicegate.core.codec import PCM16_16K
from voicegate.server.gateway.arrivals import ArrivalLog
from voicegate.server.gateway.send_queue import SendQueue
from voicegate.server.gateway.turns import SessionTurns

MS = 1_000_000


def _allocated_by_frames(frames: int) -> int:
    turns = SessionTurns(PCM16_16K, SendQueue(100))
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(frames):
            turns.input_arrived((i + 1) * 20, 1_700_000_000_000_000_000 + i * 20 * MS)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert turns.arrival_of(frames * 320 - 1) != 0  # the newest frame is still known
    return sum(s.size_diff for s in after.compare_to(before, "filename"))


def test_arrival_times_of_streamed_audio_stay_small_and_bounded() -> None:
    ten_minutes = _allocated_by_frames(30_000)  # 10 min of 20 ms frames
    assert ten_minutes < 100 * 1024  # per session
    assert ten_minutes <= _allocated_by_frames(5_000) + 4096  # flat, not growing


@given(st.integers(1, 40), st.lists(st.integers(1, 50), max_size=120), st.integers(-5, 3000))
def test_arrival_log_answers_as_a_bounded_deque_would(
    capacity: int, steps: list[int], sample: int
) -> None:
    log, reference = ArrivalLog(capacity), deque(maxlen=capacity)
    end = 0
    for i, step in enumerate(steps):
        end += step
        log.append(end, i + 1)
        reference.append((end, i + 1))
    expected = next((t for e, t in reference if sample < e), 0)
    assert log.arrival_of(sample) == expected
    assert len(log) == len(reference)
