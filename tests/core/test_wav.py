"""16-bit PCM mono WAV files (voicegate.core.wav)."""

from __future__ import annotations

import json
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from voicegate.core.wav import WavError, read_wav, write_wav

DEMO = Path(__file__).resolve().parents[2] / "voicegate" / "data" / "demo"


def test_round_trip(tmp_path: Path) -> None:
    samples = np.array([0, 1, -1, 32767, -32768, 1234], dtype=np.int16)
    path = tmp_path / "x.wav"
    write_wav(path, samples, 8000)
    wav = read_wav(path)
    assert wav.sample_rate == 8000
    assert wav.samples.dtype == np.int16
    assert wav.samples.tolist() == samples.tolist()
    assert wav.duration_s == 6 / 8000
    # The bytes on disk are the canonical little-endian layout, readable by anything.
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    assert raw[-12:] == samples.astype("<i2").tobytes()


def test_empty_file_round_trip(tmp_path: Path) -> None:
    write_wav(tmp_path / "e.wav", np.zeros(0, dtype=np.int16), 16000)
    wav = read_wav(tmp_path / "e.wav")
    assert (len(wav.samples), wav.sample_rate, wav.duration_s) == (0, 16000, 0.0)


def _write_raw(path: Path, channels: int, width: int, rate: int, frames: bytes) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)


def test_refuses_stereo(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    _write_raw(path, 2, 2, 16000, bytes(8))
    with pytest.raises(WavError, match=r"stereo\.wav: expected mono, got 2 channels"):
        read_wav(path)


@pytest.mark.parametrize("width", [1, 3, 4])
def test_refuses_other_sample_widths(tmp_path: Path, width: int) -> None:
    path = tmp_path / "w.wav"
    _write_raw(path, 1, width, 16000, bytes(4 * width))
    with pytest.raises(WavError, match=f"w.wav: expected 16-bit samples, got {8 * width}-bit"):
        read_wav(path)


def test_refuses_float_wav(tmp_path: Path) -> None:
    data = np.zeros(4, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)  # WAVE_FORMAT_IEEE_FLOAT
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path = tmp_path / "float.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(WavError, match=r"float\.wav: not a 16-bit PCM WAV file"):
        read_wav(path)


def test_refuses_non_wav_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(WavError, match=r"notes\.txt: not a 16-bit PCM WAV file"):
        read_wav(path)
    with pytest.raises(WavError, match=r"nope\.wav: no such file"):
        read_wav(tmp_path / "nope.wav")


def test_write_validation(tmp_path: Path) -> None:
    with pytest.raises(WavError, match="samples must be int16, got float64"):
        write_wav(tmp_path / "a.wav", np.zeros(3), 16000)  # type: ignore[arg-type]
    with pytest.raises(WavError, match=r"must be 1-D \(mono\), got shape \(2, 3\)"):
        write_wav(tmp_path / "a.wav", np.zeros((2, 3), dtype=np.int16), 16000)
    with pytest.raises(WavError, match="invalid sample rate 0"):
        write_wav(tmp_path / "a.wav", np.zeros(3, dtype=np.int16), 0)
    with pytest.raises(WavError, match="cannot write"):
        write_wav(tmp_path / "missing-dir" / "a.wav", np.zeros(3, dtype=np.int16), 16000)


def test_demo_utterance_matches_its_manifest() -> None:
    manifest = json.loads((DEMO / "manifest.json").read_text())
    (entry,) = manifest["utterances"]
    path = DEMO / entry["file"]
    assert path.stat().st_size < 200_000
    wav = read_wav(path)
    assert wav.sample_rate == entry["sample_rate"] == 16000
    assert wav.duration_s == pytest.approx(entry["duration_s"], abs=1e-3)
    voiced = np.flatnonzero(wav.samples)
    assert voiced[0] / wav.sample_rate == pytest.approx(entry["speech_start_s"], abs=1e-3)
    assert (voiced[-1] + 1) / wav.sample_rate == pytest.approx(entry["speech_end_s"], abs=1e-3)
    # 0.5 s of silence before, about 1.5 s after.
    assert entry["speech_start_s"] == 0.5
    assert wav.duration_s - entry["speech_end_s"] == pytest.approx(1.5, abs=0.01)
