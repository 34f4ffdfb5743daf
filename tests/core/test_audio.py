from __future__ import annotations

import numpy as np
import pytest

from voicegate.core.audio import (
    StreamResampler,
    float32_to_pcm16,
    float32_to_pcm16_bytes,
    pcm16_to_float32,
    resample,
)


def test_pcm16_bytes_round_trip_is_exact() -> None:
    pcm = np.arange(-32768, 32768, 7, dtype=np.int16)
    audio = pcm16_to_float32(pcm.astype("<i2").tobytes())
    assert audio.dtype == np.float32
    assert audio.min() == -1.0 and audio.max() < 1.0
    np.testing.assert_array_equal(float32_to_pcm16(audio), pcm)
    assert float32_to_pcm16_bytes(audio) == pcm.astype("<i2").tobytes()


def test_pcm16_encoding_rounds_and_clips() -> None:
    audio = np.array([0.0, 1.0, -1.0, 2.0, -2.0, 0.5 / 32768, 1.6 / 32768], dtype=np.float32)
    np.testing.assert_array_equal(float32_to_pcm16(audio), [0, 32767, -32768, 32767, -32768, 0, 2])


def test_pcm16_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="odd number of bytes"):
        pcm16_to_float32(b"\x00\x01\x02")
    with pytest.raises(TypeError, match="int16"):
        pcm16_to_float32(np.zeros(4, dtype=np.int32))


def _tone(freq: float, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.fft.rfftfreq(audio.size, 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize(("in_rate", "out_rate"), [(22050, 16000), (16000, 8000), (16000, 48000)])
def test_resample_keeps_length_ratio_and_pitch(in_rate: int, out_rate: int) -> None:
    audio = _tone(440.0, in_rate, 1.0)
    out = resample(audio, in_rate, out_rate)
    assert out.dtype == np.float32
    assert out.size == out_rate
    assert abs(_peak_hz(out, out_rate) - 440.0) <= 1.0


def test_stream_resampler_equals_whole_signal_resampling() -> None:
    audio = _tone(300.0, 22050, 0.7) + _tone(1234.0, 22050, 0.7)
    stream = StreamResampler(22050, 16000)
    pieces = [stream.process(audio[a:b]) for a, b in ((0, 1000), (1000, 1001), (1001, 9000))]
    pieces.append(stream.process(audio[9000:], last=True))
    np.testing.assert_array_equal(np.concatenate(pieces), resample(audio, 22050, 16000))
    # After a flush the stream starts over: the same signal resamples the same way.
    again = np.concatenate([stream.process(audio[:5000]), stream.process(audio[5000:], last=True)])
    np.testing.assert_array_equal(again, resample(audio, 22050, 16000))


def test_stream_resampler_same_rate_passes_through_and_rejects_bad_rates() -> None:
    stream = StreamResampler(16000, 16000)
    audio = _tone(100.0, 16000, 0.1)
    np.testing.assert_array_equal(stream.process(audio), audio)
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 16000)
    with pytest.raises(ValueError, match="mono"):
        StreamResampler(16000, 8000).process(np.zeros((2, 10), dtype=np.float32))
