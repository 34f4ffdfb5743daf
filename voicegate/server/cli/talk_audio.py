"""Audio side of `voicegate talk`: where speech ends, wire frames, pacing, the answer."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import numpy as np
import soxr
from numpy.typing import NDArray

from voicegate.core import codec
from voicegate.core.codec import AudioFormat
from voicegate.core.wav import Wav

# Speech-end detection when neither --speech-end nor a manifest gives it: 10 ms windows,
# the noise floor is the 10th percentile of their RMS levels, and speech is any window
# at least 6 dB above that floor and above -50 dBFS. The end of speech is the end of the
# last such window.
DETECT_WINDOW_MS: Final[int] = 10
DETECT_FLOOR_DBFS: Final[float] = -50.0
DETECT_ABOVE_NOISE_DB: Final[float] = 6.0


def _rms_dbfs(samples: NDArray[np.int16], window: int) -> NDArray[np.float64]:
    n = len(samples) // window * window
    frames = samples[:n].astype(np.float64).reshape(-1, window)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    levels: NDArray[np.float64] = 20.0 * np.log10(np.maximum(rms, 1e-3) / 32768.0)
    return levels


def detect_speech_end(wav: Wav) -> float:
    """End of the last 10 ms window with speech energy, in seconds (see DETECT_*)."""
    window = wav.sample_rate * DETECT_WINDOW_MS // 1000
    levels = _rms_dbfs(wav.samples, window)
    if len(levels) == 0:
        raise ValueError("the file is shorter than one 10 ms window")
    threshold = max(DETECT_FLOOR_DBFS, float(np.percentile(levels, 10)) + DETECT_ABOVE_NOISE_DB)
    active = np.flatnonzero(levels > threshold)
    if len(active) == 0:
        raise ValueError(f"no 10 ms window is above {threshold:.1f} dBFS: no speech found")
    return float(active[-1] + 1) * DETECT_WINDOW_MS / 1000.0


def speech_end_from_manifest(wav_path: Path) -> float | None:
    """speech_end_s of this file in a manifest.json beside it, if there is one."""
    manifest = wav_path.parent / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{manifest}: cannot read ({exc})") from None
    entries = data.get("utterances") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{manifest}: field 'utterances' must be a list")
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get("file") == wav_path.name:
            end = entry.get("speech_end_s")
            if isinstance(end, bool) or not isinstance(end, int | float) or end < 0:
                raise ValueError(
                    f"{manifest}: field 'utterances[{i}].speech_end_s' must be a number >= 0"
                )
            return float(end)
    return None


def resample(samples: NDArray[np.int16], rate_in: int, rate_out: int) -> NDArray[np.int16]:
    if rate_in == rate_out:
        return samples
    out: NDArray[np.int16] = soxr.resample(samples, rate_in, rate_out, quality="HQ")
    return out


def split_frames(samples: NDArray[np.int16], fmt: AudioFormat, frame_ms: int) -> list[bytes]:
    """Wire frames of `frame_ms`, the last one padded with silence."""
    per_frame = fmt.samples_per_frame(frame_ms)
    count = -(-len(samples) // per_frame)
    padded = np.zeros(count * per_frame, dtype=np.int16)
    padded[: len(samples)] = samples
    data = codec.encode(padded, fmt.encoding)
    size = fmt.frame_bytes(frame_ms)
    return [data[i : i + size] for i in range(0, len(data), size)]


def speech_end_frame(speech_end_s: float, rate: int, samples_per_frame: int) -> int:
    """Index of the frame that holds the last sample of speech."""
    last_sample = max(0, math.ceil(round(speech_end_s * rate, 6)) - 1)
    return last_sample // samples_per_frame


class FramePacer:
    """Waits until frame `index` is due: `index * interval` after frame 0 went out.

    Deadlines are absolute, so a late frame does not delay the ones after it; after a
    stall the overdue frames go out at once, as a microphone's buffer would deliver them.
    """

    def __init__(
        self,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None

    async def wait(self, index: int) -> None:
        now = self._clock()
        if self._start is None:
            self._start = now
        due = self._start + index * self.interval_s
        if due > now:
            await self._sleep(due - now)


class AnswerAudio:
    """The answer audio as received, in whatever format each part arrived in."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.base = fmt
        self._segments: list[tuple[AudioFormat, bytearray]] = [(fmt, bytearray())]
        self.messages = 0
        self.nbytes = 0

    def switch(self, fmt: AudioFormat) -> None:
        if fmt != self._segments[-1][0]:
            self._segments.append((fmt, bytearray()))

    def add(self, data: bytes) -> None:
        self._segments[-1][1].extend(data)
        self.messages += 1
        self.nbytes += len(data)

    def samples(self) -> NDArray[np.int16]:
        """All of it as 16-bit samples at the negotiated output rate."""
        parts = [
            resample(
                codec.decode(bytes(data), fmt.encoding), fmt.sample_rate, self.base.sample_rate
            )
            for fmt, data in self._segments
            if data
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
