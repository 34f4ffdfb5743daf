"""Audio sample utilities: PCM16 <-> float32 and soxr resampling.

Float audio is float32 in [-1, 1). PCM16 is little-endian signed 16-bit, the format of
the WebSocket frames. Wire encodings (mu-law) live in ``voicegate.core.codec``.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import soxr

FloatAudio = npt.NDArray[np.float32]
Pcm16 = npt.NDArray[np.int16]

_PCM16_SCALE: Final[float] = 32768.0


def pcm16_to_float32(pcm: bytes | bytearray | memoryview | Pcm16) -> FloatAudio:
    """Decode little-endian PCM16 (bytes or an int16 array) to float32 in [-1, 1)."""
    if isinstance(pcm, np.ndarray):
        if pcm.dtype != np.int16:
            raise TypeError(f"PCM16 array must have dtype int16, found {pcm.dtype}")
        samples = pcm
    else:
        if len(pcm) % 2:
            raise ValueError(f"PCM16 data has an odd number of bytes ({len(pcm)})")
        samples = np.frombuffer(pcm, dtype="<i2")
    return (samples.astype(np.float32) / np.float32(_PCM16_SCALE)).astype(np.float32)


def float32_to_pcm16(audio: npt.NDArray[np.floating]) -> Pcm16:
    """Encode float audio to int16, rounding to nearest and clipping at full scale."""
    scaled = np.rint(np.asarray(audio, dtype=np.float64) * _PCM16_SCALE)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def float32_to_pcm16_bytes(audio: npt.NDArray[np.floating]) -> bytes:
    """Encode float audio as little-endian PCM16 bytes (the wire format)."""
    return float32_to_pcm16(audio).astype("<i2").tobytes()


def resample(audio: npt.NDArray[np.floating], in_rate: int, out_rate: int) -> FloatAudio:
    """Resample a whole float signal with soxr (high quality). For streams of chunks use
    StreamResampler, which keeps the filter state across chunk boundaries."""
    _check_rate(in_rate)
    _check_rate(out_rate)
    x = np.ascontiguousarray(audio, dtype=np.float32)
    if in_rate == out_rate:
        return x.copy()
    if x.size == 0:
        return np.zeros(0, dtype=np.float32)
    out: FloatAudio = soxr.resample(x, in_rate, out_rate, quality="HQ").astype(np.float32)
    return out


class StreamResampler:
    """One stream's resampler: chunks in, chunks out, no clicks at chunk boundaries.

    soxr holds back a short tail (its filter delay) until more input or ``last=True``
    arrives; passing ``last=True`` at the end of a stream flushes it, after which the
    resampler is ready for a new stream.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        _check_rate(in_rate)
        _check_rate(out_rate)
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream: soxr.ResampleStream | None = (
            None if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
        )

    def process(self, chunk: npt.NDArray[np.floating], *, last: bool = False) -> FloatAudio:
        x = np.ascontiguousarray(chunk, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"StreamResampler takes mono 1-D audio, found shape {x.shape}")
        if self._stream is None:
            return x.copy()
        out: FloatAudio = self._stream.resample_chunk(x, last=last).astype(np.float32)
        if last:
            self._stream.clear()
        return out

    def reset(self) -> None:
        """Drop any held-back tail (a cancelled stream) without emitting it."""
        if self._stream is not None:
            self._stream.clear()


def _check_rate(rate: int) -> None:
    if not isinstance(rate, int) or rate <= 0:
        raise ValueError(f"sample rate must be a positive int, found {rate!r}")
