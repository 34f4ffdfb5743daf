"""The log-mel front end against a float64 reference written from the definitions:
an explicit DFT, explicit reflect padding and Slaney mel filters built scalar by scalar."""

from __future__ import annotations

import math
import os
import wave
from pathlib import Path

import numpy as np
import pytest

from voicegate.models import melspec

SR, N_FFT, HOP = 16000, 400, 160


def _hz_to_mel(hz: float) -> float:
    # Slaney's auditory toolbox scale: linear below 1 kHz, logarithmic above.
    if hz < 1000.0:
        return 3.0 * hz / 200.0
    return 15.0 + 27.0 * math.log(hz / 1000.0) / math.log(6.4)


def _mel_to_hz(mel: float) -> float:
    if mel < 15.0:
        return 200.0 * mel / 3.0
    return 1000.0 * math.exp((mel - 15.0) * math.log(6.4) / 27.0)


def _reference_filters(n_mels: int) -> np.ndarray:
    top = _hz_to_mel(SR / 2)
    centers = [_mel_to_hz(top * i / (n_mels + 1)) for i in range(n_mels + 2)]
    bins = [k * SR / N_FFT for k in range(N_FFT // 2 + 1)]
    out = np.zeros((n_mels, len(bins)))
    for m in range(n_mels):
        left, mid, right = centers[m], centers[m + 1], centers[m + 2]
        for k, f in enumerate(bins):
            rise = (f - left) / (mid - left)
            fall = (right - f) / (right - mid)
            out[m, k] = max(0.0, min(rise, fall)) * 2.0 / (right - left)
    return out


def _reference_log_mel(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float64)
    n = x.size
    half = N_FFT // 2
    index = np.arange(-half, n + half)
    index = np.where(index < 0, -index, index)
    index = np.where(index >= n, 2 * (n - 1) - index, index)
    padded = x[index]
    n_frames = 1 + n // HOP
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * i / N_FFT) for i in range(N_FFT)])
    k = np.arange(N_FFT // 2 + 1)[:, None]
    t = np.arange(N_FFT)[None, :]
    cos = np.cos(2 * np.pi * k * t / N_FFT)
    sin = np.sin(2 * np.pi * k * t / N_FFT)
    frames = np.stack([padded[i * HOP : i * HOP + N_FFT] * window for i in range(n_frames)])
    power = (frames @ cos.T) ** 2 + (frames @ sin.T) ** 2  # [frames, bins]
    mel = _reference_filters(n_mels) @ power[:-1].T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    result: np.ndarray = (log_spec + 4.0) / 4.0
    return result


def _speech_excerpt() -> np.ndarray:
    speech = Path(os.environ.get("VOICEGATE_SPEECH_DIR")
                  or Path(__file__).resolve().parents[2].parent / "shared" / "speech")
    path = next(iter(sorted(speech.glob("*.wav"))), None)
    if path is None:
        # A recorded-like signal when the shared samples are not present: formant-ish
        # harmonics with an envelope, plus a little noise.
        rng = np.random.default_rng(5)
        t = np.arange(3 * SR) / SR
        voiced = sum(np.sin(2 * np.pi * 140 * h * t) / h for h in range(1, 20))
        signal: np.ndarray = 0.2 * voiced * np.sin(np.pi * t / 3) ** 2
        return signal + 0.003 * rng.standard_normal(t.size)
    with wave.open(str(path)) as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return pcm.astype(np.float64) / 32768.0


def test_mel_filters_equal_the_slaney_definition() -> None:
    filters = melspec.mel_filters(80)
    assert filters.shape == (80, 201) and filters.dtype == np.float32
    np.testing.assert_allclose(filters, _reference_filters(80), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(melspec.mel_filters(128), _reference_filters(128), rtol=1e-6,
                               atol=1e-9)


@pytest.mark.parametrize("kind", ["speech", "noise", "tone+quiet", "short", "full_window"])
def test_input_features_match_float64_reference_to_1e5(kind: str) -> None:
    rng = np.random.default_rng(11)
    if kind == "speech":
        audio = _speech_excerpt()[: 6 * SR]
    elif kind == "noise":
        audio = 0.1 * rng.standard_normal(2 * SR)
    elif kind == "tone+quiet":
        t = np.arange(SR) / SR
        audio = np.concatenate([0.5 * np.sin(2 * np.pi * 440 * t), 1e-4 * rng.standard_normal(SR)])
    elif kind == "short":
        audio = 0.3 * rng.standard_normal(900)
    else:
        audio = 0.05 * rng.standard_normal(melspec.N_SAMPLES + 1234)
    features = melspec.input_features(audio.astype(np.float32))
    assert features.shape == (80, 3000) and features.dtype == np.float32
    padded = np.zeros(melspec.N_SAMPLES)
    clipped = audio.astype(np.float32)[: melspec.N_SAMPLES]
    padded[: clipped.size] = clipped
    reference = _reference_log_mel(padded)
    assert np.abs(features - reference).max() <= 1e-5


def test_log_mel_spectrogram_with_padding_matches_reference() -> None:
    rng = np.random.default_rng(3)
    audio = (0.2 * rng.standard_normal(SR // 2)).astype(np.float32)
    got = melspec.log_mel_spectrogram(audio, padding=8000)
    reference = _reference_log_mel(np.concatenate([audio.astype(np.float64), np.zeros(8000)]))
    assert got.shape == reference.shape == (80, (SR // 2 + 8000) // HOP)
    assert np.abs(got - reference).max() <= 1e-5


def test_silence_gives_the_floor_everywhere() -> None:
    features = melspec.input_features(np.zeros(100, dtype=np.float32))
    np.testing.assert_array_equal(features, np.full((80, 3000), (-10.0 + 4.0) / 4.0, np.float32))


def test_batch_features_stack_single_ones_and_bad_shapes_are_rejected() -> None:
    rng = np.random.default_rng(1)
    a = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    b = (0.1 * rng.standard_normal(SR // 3)).astype(np.float32)
    batch = melspec.batch_input_features([a, b])
    np.testing.assert_array_equal(batch[0], melspec.input_features(a))
    np.testing.assert_array_equal(batch[1], melspec.input_features(b))
    with pytest.raises(ValueError, match="mono"):
        melspec.input_features(np.zeros((2, 100), dtype=np.float32))
