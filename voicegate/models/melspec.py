"""Whisper's log-mel front end in numpy, equal to openai/whisper's ``log_mel_spectrogram``.

16 kHz audio; periodic Hann window of 400 samples (n_fft), hop 160, centred frames with
reflect padding, power spectrum, the last frame dropped; Slaney-normalised mel filters on
the Slaney mel scale (librosa's defaults, which whisper's ``mel_filters.npz`` holds);
log10 with a 1e-10 floor, values clamped to 8 below the maximum, then (x + 4) / 4.

The STFT and filter products run in float64 so that the float32 result matches a
float64 reference to 1e-5: in float32 the bins just above the dynamic-range floor carry
relative errors large enough to show after the log.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt

SAMPLE_RATE: Final[int] = 16000
N_FFT: Final[int] = 400
HOP_LENGTH: Final[int] = 160
CHUNK_SECONDS: Final[int] = 30
N_SAMPLES: Final[int] = CHUNK_SECONDS * SAMPLE_RATE  # 480000 samples in one window
N_FRAMES: Final[int] = N_SAMPLES // HOP_LENGTH  # 3000 frames: the encoder's input length
_LOG_FLOOR: Final[float] = 1e-10


# The Slaney mel scale: linear below 1 kHz, logarithmic above.
_F_SP: Final[float] = 200.0 / 3
_MIN_LOG_HZ: Final[float] = 1000.0
_MIN_LOG_MEL: Final[float] = _MIN_LOG_HZ / _F_SP
_LOGSTEP: Final[float] = float(np.log(6.4) / 27.0)


def _hz_to_mel_slaney(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    mels = hz / _F_SP
    above = hz >= _MIN_LOG_HZ
    mels[above] = _MIN_LOG_MEL + np.log(hz[above] / _MIN_LOG_HZ) / _LOGSTEP
    return mels


def _mel_to_hz_slaney(mels: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    hz = _F_SP * mels
    above = mels >= _MIN_LOG_MEL
    hz[above] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[above] - _MIN_LOG_MEL))
    return hz


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> (
    npt.NDArray[np.float32]
):
    """Mel filter bank [n_mels, n_fft // 2 + 1] as librosa.filters.mel computes it with
    its defaults (htk=False, norm="slaney", fmin=0, fmax=sr/2), in float32 like
    whisper's mel_filters.npz."""
    if n_mels < 1:
        raise ValueError(f"n_mels must be >= 1, found {n_mels}")
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = np.array([0.0, sample_rate / 2.0])
    mel_lo, mel_hi = _hz_to_mel_slaney(edges)
    mel_points = _mel_to_hz_slaney(np.linspace(mel_lo, mel_hi, n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    filters: npt.NDArray[np.float32] = weights.astype(np.float32)
    filters.flags.writeable = False
    return filters


@lru_cache(maxsize=1)
def _hann_window() -> npt.NDArray[np.float64]:
    # Periodic Hann, as torch.hann_window(N_FFT) builds it.
    n = np.arange(N_FFT, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)
    window.flags.writeable = False
    return window


def _frames_power(padded: npt.NDArray[np.float64], n_frames: int) -> npt.NDArray[np.float64]:
    """Power spectra [n_freq, n_frames] of the first n_frames centred frames of an
    already reflect-padded signal."""
    # A strided view, not a gather: the only copy is the windowing product.
    windows = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    frames = windows[:n_frames] * _hann_window()
    spectrum = np.fft.rfft(frames, axis=1)
    power: npt.NDArray[np.float64] = (spectrum.real**2 + spectrum.imag**2).T
    return power


def _log_compress(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    log_spec = np.log10(np.maximum(mel, _LOG_FLOOR))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    result: npt.NDArray[np.float32] = ((log_spec + 4.0) / 4.0).astype(np.float32)
    return result


def _as_audio(audio: npt.ArrayLike) -> npt.NDArray[np.float64]:
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"audio must be mono 1-D samples, found shape {x.shape}")
    return x


def log_mel_spectrogram(
    audio: npt.ArrayLike, n_mels: int = 80, padding: int = 0
) -> npt.NDArray[np.float32]:
    """openai/whisper's log_mel_spectrogram: [n_mels, n_frames] for 16 kHz mono audio,
    with ``padding`` zero samples appended first."""
    x = _as_audio(audio)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, found {padding}")
    if padding:
        x = np.concatenate([x, np.zeros(padding)])
    if x.size <= N_FFT // 2:
        raise ValueError(
            f"audio of {x.size} samples is too short for reflect padding of {N_FFT // 2}"
        )
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    n_frames = 1 + x.size // HOP_LENGTH  # torch.stft's count; the last one is dropped
    power = _frames_power(padded, n_frames)[:, :-1]
    mel = mel_filters(n_mels).astype(np.float64) @ power
    return _log_compress(mel)


def pad_or_trim(audio: npt.ArrayLike, length: int = N_SAMPLES) -> npt.NDArray[np.float64]:
    x = _as_audio(audio)
    if x.size >= length:
        return x[:length]
    return np.concatenate([x, np.zeros(length - x.size)])


def input_features(audio: npt.ArrayLike, n_mels: int = 80) -> npt.NDArray[np.float32]:
    """The encoder input [n_mels, 3000] for up to 30 s of audio: the audio zero-padded
    (or cut) to 30 s, then log_mel_spectrogram, exactly as whisper and the Hugging Face
    feature extractor compute it.

    Only the frames that overlap the audio are transformed: every later frame sees only
    zero padding, whose power is exactly zero, so its values are filled in directly.
    For a short utterance this is most of the 3000 frames."""
    x = _as_audio(audio)[:N_SAMPLES]
    nonzero = np.flatnonzero(x)
    used = int(nonzero[-1]) + 1 if nonzero.size else 0
    # Frame t covers samples [t*HOP - N_FFT/2, t*HOP + N_FFT/2).
    n_live = (used + N_FFT // 2 + HOP_LENGTH - 1) // HOP_LENGTH + 1 if used else 0
    if n_live * HOP_LENGTH + N_FFT > N_SAMPLES:
        # The live frames reach the reflect padding at the end: no shortcut.
        return log_mel_spectrogram(pad_or_trim(x), n_mels)
    out = np.empty((n_mels, N_FRAMES), dtype=np.float32)
    floor = np.log10(_LOG_FLOOR)  # what zero power becomes
    top = floor
    if n_live:
        head = np.zeros(n_live * HOP_LENGTH + N_FFT // 2)
        take = min(x.size, head.size)
        head[:take] = x[:take]
        head = np.pad(head, (N_FFT // 2, 0), mode="reflect")
        mel = mel_filters(n_mels).astype(np.float64) @ _frames_power(head, n_live)
        live = np.log10(np.maximum(mel, _LOG_FLOOR))
        top = max(top, float(live.max()))
        out[:, :n_live] = (np.maximum(live, top - 8.0) + 4.0) / 4.0
    out[:, n_live:] = (max(floor, top - 8.0) + 4.0) / 4.0
    return out


def content_frames(samples: int) -> int:
    """The audio's own frames as faster-whisper counts them: one per whole hop (at most
    3000); the frame centred on the audio's last partial hop counts as padding."""
    return min(N_FRAMES, max(samples, 0) // HOP_LENGTH)


def padded_features(audio: npt.ArrayLike, n_mels: int = 80) -> npt.NDArray[np.float32]:
    """The encoder input [n_mels, 3000] as faster-whisper (CTranslate2) builds it: the
    log-mel of the audio's own frames (equal to ``input_features`` there), then 0.0 for
    every frame after them, where openai/whisper has the dynamic-range floor.

    Bundles imported from CTranslate2 use it (``mel_padding = "zeros"``): it is the
    convention of the implementation those weights are run with, and on
    ../shared/speech Whisper tiny.en makes fewer errors with it (14.5% WER against 21%
    with the floor)."""
    x = _as_audio(audio)
    out = input_features(x, n_mels)
    out[:, content_frames(x.size):] = 0.0
    return out


def batch_input_features(
    audios: list[npt.NDArray[np.float32]], n_mels: int = 80
) -> npt.NDArray[np.float32]:
    """Encoder input [B, n_mels, 3000] for several utterances."""
    out = np.empty((len(audios), n_mels, N_FRAMES), dtype=np.float32)
    for i, audio in enumerate(audios):
        out[i] = input_features(audio, n_mels)
    return out
