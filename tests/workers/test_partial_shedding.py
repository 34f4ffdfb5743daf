"""PartialGovernor: partial spacing against the stage's busy share, on explicit times."""

from __future__ import annotations

import pytest

from voicegate.core.clock import NS_PER_S
from voicegate.workers.stages.partial_shedding import PartialGovernor

MS = 1_000_000


def _second(governor: PartialGovernor, start: int, busy_ms: int) -> bool:
    """One window with ``busy_ms`` of work in it, as ten slices."""
    changed = False
    for i in range(10):
        begin = start + i * 100 * MS
        changed |= governor.busy(begin, begin + busy_ms // 10 * MS)
    # the window closes on the first work after it ends
    return changed | governor.busy(start + NS_PER_S, start + NS_PER_S)


def test_busy_stretches_doubling_to_the_cap_and_idle_comes_back_halving() -> None:
    g = PartialGovernor(base_interval=8000, max_stretch=4)
    t = 0
    seen = []
    for busy in (800, 800, 800, 300, 100, 100, 100):
        _second(g, t, busy)
        seen.append(g.interval)
        t += NS_PER_S
    # 80%: x2, x4, capped; 30% holds; 10%: x2, x1, stays
    assert seen == [16000, 32000, 32000, 32000, 16000, 8000, 8000]


def test_nothing_changes_inside_a_window() -> None:
    g = PartialGovernor(base_interval=8000)
    assert not g.busy(0, 900 * MS)
    assert g.stretch == 1
    assert g.busy(999 * MS, 1001 * MS)  # the window closes: 90% busy
    assert g.stretch == 2


def test_bad_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="busy_low"):
        PartialGovernor(base_interval=1, busy_low=0.6, busy_high=0.5)
    with pytest.raises(ValueError, match="max_stretch"):
        PartialGovernor(base_interval=1, max_stretch=0)
