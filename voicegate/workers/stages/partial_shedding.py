"""Streaming partial transcripts give way under load.

A partial re-decodes the whole utterance so far, so at a fixed cadence it is most of
the STT stage's work, and it is the part nobody waits on: the answer starts from the
transcript decoded at the pause. When the stage is busy (or starved of CPU: the time it
measures is wall time) the spacing of partials is doubled, up to ``max_stretch`` times
the configured one; when it is idle again the spacing comes back, halving. So under
overload the caller still gets an answer in time, only with fewer partials on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voicegate.core.clock import NS_PER_S


@dataclass
class PartialGovernor:
    """Partial spacing from the fraction of each ``window_ns`` the stage spent busy."""

    base_interval: int  # samples between partials, as configured (0: no partials)
    busy_high: float = 0.5  # above this share of the window, stretch
    busy_low: float = 0.25  # below it, come back
    max_stretch: int = 8
    window_ns: int = NS_PER_S
    stretch: int = 1
    _window_start: int = field(default=-1, repr=False)
    _busy_ns: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.busy_low < self.busy_high <= 1:
            raise ValueError(f"need 0 <= busy_low < busy_high <= 1, got "
                             f"{self.busy_low}, {self.busy_high}")  # fmt: skip
        if self.max_stretch < 1:
            raise ValueError(f"max_stretch must be >= 1, got {self.max_stretch}")

    @property
    def interval(self) -> int:
        return self.base_interval * self.stretch

    def busy(self, start_ns: int, end_ns: int) -> bool:
        """Count ``[start_ns, end_ns)`` as work; True when the spacing changed."""
        if self._window_start < 0:
            self._window_start = start_ns
        self._busy_ns += max(0, end_ns - start_ns)
        elapsed = end_ns - self._window_start
        if elapsed < self.window_ns:
            return False
        share = self._busy_ns / elapsed
        self._window_start, self._busy_ns = end_ns, 0
        before = self.stretch
        if share > self.busy_high:
            self.stretch = min(self.max_stretch, self.stretch * 2)
        elif share < self.busy_low:
            self.stretch = max(1, self.stretch // 2)
        return self.stretch != before
