"""PcmHistory against a plain list of the stream's samples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.workers.stages.audio_history import PcmHistory

# (frame size, how far behind ``fed`` to keep) per append
_steps = st.lists(
    st.tuples(st.integers(0, 700), st.integers(0, 3000)), min_size=1, max_size=60
)


@settings(max_examples=200, deadline=None)
@given(steps=_steps, capacity=st.integers(1, 1024))
def test_history_matches_the_stream_it_was_fed(
    steps: list[tuple[int, int]], capacity: int
) -> None:
    history = PcmHistory(capacity)
    stream: list[int] = []
    base = 0
    for size, keep in steps:
        frame = (np.arange(len(stream), len(stream) + size) % 30011).astype(np.int16)
        keep_from = len(stream) + size - keep
        history.append(frame, keep_from)
        stream.extend(frame.tolist())
        base = min(max(base, keep_from), len(stream) - size)
        assert history.fed == len(stream)
        assert history.base == base
        assert len(history) == len(stream) - base
        assert history.since(base).tolist() == stream[base:]
        middle = (base + len(stream)) // 2
        assert history.since(middle).tolist() == stream[middle:]
        assert history.since(base - 5).tolist() == stream[base:]  # clamped to base


def test_the_frame_just_appended_is_never_forgotten() -> None:
    history = PcmHistory(8)
    history.append(np.arange(10, dtype=np.int16), keep_from=10**6)
    assert history.since(0).tolist() == list(range(10))
    assert history.base == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        PcmHistory(0)
