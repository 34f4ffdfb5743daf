"""The recent audio of one stream, as PCM16, addressed by stream position.

The VAD stage keeps the last couple of seconds of each caller (for the pre-roll before a
detected start, and the utterance not yet sent downstream). Appending a 20 ms frame must
not copy the whole history, as ``np.concatenate`` would: the samples live in a buffer with
room at the end, and the live part is moved to the front only when that room runs out,
so each sample is copied a bounded number of times. PCM16 rather than float32 because
that is what goes downstream (little-endian, the wire format): forwarding is a slice,
not a conversion.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Pcm16 = npt.NDArray[np.int16]


class PcmHistory:
    """Samples from stream position ``base`` to ``fed`` (exclusive)."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._buf: Pcm16 = np.zeros(capacity, dtype="<i2")
        self._start = 0  # index in _buf of position ``base``
        self._end = 0
        self.base = 0

    @property
    def fed(self) -> int:
        return self.base + self._end - self._start

    def __len__(self) -> int:
        return self._end - self._start

    def append(self, samples: Pcm16, keep_from: int) -> None:
        """Add ``samples`` at ``fed``, forgetting what lies before position ``keep_from``."""
        drop = min(max(0, keep_from - self.base), self._end - self._start)
        self._start += drop
        self.base += drop
        size = samples.shape[0]
        if self._end + size > self._buf.shape[0]:
            live = self._end - self._start
            if live + size > self._buf.shape[0] // 2:
                grown = np.zeros(max(2 * (live + size), self._buf.shape[0]), dtype="<i2")
                grown[:live] = self._buf[self._start : self._end]
                self._buf = grown
            else:
                self._buf[:live] = self._buf[self._start : self._end]
            self._start, self._end = 0, live
        self._buf[self._end : self._end + size] = samples
        self._end += size

    def since(self, position: int) -> Pcm16:
        """A view of the samples from ``position`` (clamped to ``base``) to ``fed``; valid
        until the next append."""
        offset = max(0, position - self.base)
        return self._buf[self._start + offset : self._end]
