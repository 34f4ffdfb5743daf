"""Input audio of a Realtime session: client chunks of any size into whole 10 ms frames.

``input_audio_buffer.append`` carries whatever a client's audio callback produced (an
odd number of bytes, 21.3 ms, a whole second), while the pipeline takes whole 10 ms
units (docs/protocol.md). ``InputFramer`` passes on the largest whole-unit prefix of
what it has, in pieces of at most ``max_bytes``, and keeps the rest for the next append;
``flush`` (a manual commit) pads the rest with silence to a whole unit; ``clear`` drops
it. It counts the audio received, which is what audio positions (``audio_start_ms``)
are measured against.
"""

from __future__ import annotations

from voicegate.core import codec
from voicegate.core.codec import FRAME_UNIT_MS, AudioFormat


class InputFramer:
    def __init__(self, fmt: AudioFormat, max_bytes: int = 65536) -> None:
        self.format = fmt
        self.unit = fmt.frame_bytes(FRAME_UNIT_MS)
        # At least one unit per piece, and whole units only.
        self.max_bytes = max(self.unit, max_bytes - max_bytes % self.unit)
        self._pending = bytearray()
        self.received_bytes = 0

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    @property
    def received_ms(self) -> float:
        return self.format.duration_ms(self.received_bytes)

    def append(self, data: bytes) -> list[bytes]:
        """The whole 10 ms units now complete, as pieces of at most ``max_bytes``."""
        self.received_bytes += len(data)
        self._pending += data
        whole = len(self._pending) - len(self._pending) % self.unit
        return self._take(whole)

    def flush(self) -> list[bytes]:
        """Everything held, the last unit completed with silence."""
        if not self._pending:
            return []
        short = self.unit - len(self._pending) % self.unit
        if short != self.unit:
            pad = codec.silence(self.format, FRAME_UNIT_MS)[:short]
            self._pending += pad
        return self._take(len(self._pending))

    def clear(self) -> None:
        self._pending.clear()

    def _take(self, nbytes: int) -> list[bytes]:
        if not nbytes:
            return []
        view = bytes(self._pending[:nbytes])
        del self._pending[:nbytes]
        return [view[i : i + self.max_bytes] for i in range(0, nbytes, self.max_bytes)]
