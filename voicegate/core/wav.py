"""Reading and writing 16-bit PCM mono WAV files.

Only the one format the project uses is accepted; anything else is refused with an
error naming the file and what it holds, rather than being converted silently.
"""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


class WavError(ValueError):
    """A WAV file that cannot be read or written as 16-bit PCM mono."""


@dataclass(frozen=True)
class Wav:
    samples: NDArray[np.int16]  # 1-D, native byte order
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def read_wav(path: str | os.PathLike[str]) -> Wav:
    """The samples and rate of a 16-bit PCM mono WAV file."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as file, wave.open(file, "rb") as reader:
            channels = reader.getnchannels()
            width = reader.getsampwidth()
            rate = reader.getframerate()
            frames = reader.readframes(reader.getnframes())
    except FileNotFoundError:
        raise WavError(f"{name}: no such file") from None
    except (wave.Error, EOFError) as exc:
        # wave.Error covers float, extensible and compressed files ("unknown format: 3").
        raise WavError(f"{name}: not a 16-bit PCM WAV file ({exc})") from None
    except OSError as exc:
        raise WavError(f"{name}: cannot read ({exc.strerror or exc})") from None
    if width != 2:
        raise WavError(f"{name}: expected 16-bit samples, got {8 * width}-bit")
    if channels != 1:
        raise WavError(f"{name}: expected mono, got {channels} channels")
    if rate <= 0:
        raise WavError(f"{name}: invalid sample rate {rate}")
    if len(frames) % 2:
        raise WavError(f"{name}: data chunk has an odd byte count ({len(frames)})")
    samples = np.frombuffer(frames, dtype="<i2").astype(np.int16)
    return Wav(samples=samples, sample_rate=rate)


def write_wav(path: str | os.PathLike[str], samples: NDArray[np.int16], sample_rate: int) -> None:
    """Write 1-D int16 samples as a 16-bit PCM mono WAV file."""
    name = os.fspath(path)
    if samples.dtype != np.int16:
        raise WavError(f"{name}: samples must be int16, got {samples.dtype}")
    if samples.ndim != 1:
        raise WavError(f"{name}: samples must be 1-D (mono), got shape {samples.shape}")
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise WavError(f"{name}: invalid sample rate {sample_rate!r}")
    try:
        # Opening the file first: a failed open inside `wave` leaves a half-built writer
        # whose finaliser raises.
        with open(name, "wb") as file, wave.open(file, "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(sample_rate)
            writer.setcomptype("NONE", "not compressed")
            writer.writeframes(samples.astype("<i2", copy=False).tobytes())
    except OSError as exc:
        raise WavError(f"{name}: cannot write ({exc.strerror or exc})") from None
