"""Silero VAD engine: speech found in every shipped sample, batching and framing that do
not change results, and the start/end rules at exact sample positions."""

from __future__ import annotations

import json
import tomllib
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from voicegate.models.bundle import TableReader
from voicegate.models.errors import BundleError
from voicegate.models.vad import (
    CHUNK,
    SileroVad,
    SpeechEdge,
    SpeechSegmenter,
    VadOutput,
    VadParams,
    packaged_model,
)

RATE = 16000


def read_wav(path: Path) -> npt.NDArray[np.int16]:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2), path
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


@pytest.fixture(scope="module")
def samples(speech_dir: Path) -> list[tuple[dict[str, Any], npt.NDArray[np.int16]]]:
    manifest = json.loads((speech_dir / "manifest.json").read_text())["utterances"]
    assert manifest, "empty manifest"
    return [(u, read_wav(speech_dir / u["file"])) for u in manifest]


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad(packaged_model())


def run_files(vad: SileroVad, audio: list[npt.NDArray[np.int16]], params: VadParams) -> VadOutput:
    for sid, pcm in enumerate(audio):
        vad.open_session(sid, params)
        vad.feed(sid, pcm)
    out = vad.step()
    for sid in range(len(audio)):
        vad.close_session(sid)
    return out


def test_speech_found_within_100_ms_in_every_sample(
    vad: SileroVad, samples: list[tuple[dict[str, Any], npt.NDArray[np.int16]]]
) -> None:
    tolerance = 0.100 * RATE
    calls = vad.calls
    out = run_files(vad, [pcm for _, pcm in samples], VadParams())
    # One batched call per chunk position: every session with a chunk ready shares it.
    assert vad.calls - calls == max(len(pcm) for _, pcm in samples) // CHUNK
    for sid, (utterance, _) in enumerate(samples):
        edges = [e for e in out.events if e.sid == sid]
        assert edges, utterance["file"]
        assert edges[0].edge is SpeechEdge.START and edges[-1].edge is SpeechEdge.END
        assert [e.edge for e in edges] == [SpeechEdge.START, SpeechEdge.END] * (len(edges) // 2)
        start, end = edges[0].sample, edges[-1].sample
        assert abs(start - utterance["speech_start_s"] * RATE) <= tolerance, utterance["file"]
        assert abs(end - utterance["speech_end_s"] * RATE) <= tolerance, utterance["file"]
        for e in edges:
            assert e.decided_at >= e.sample and e.decided_at % CHUNK == 0


def test_pauses_inside_a_turn_split_it_only_below_min_silence(
    vad: SileroVad, samples: list[tuple[dict[str, Any], npt.NDArray[np.int16]]]
) -> None:
    audio = [pcm for _, pcm in samples]
    short = run_files(vad, audio, VadParams(min_silence_ms=100))
    long = run_files(vad, audio, VadParams(min_silence_ms=400))
    for sid in range(len(audio)):
        assert [e.edge for e in long.events if e.sid == sid] == [SpeechEdge.START, SpeechEdge.END]
    # The shipped turns pause inside sentences: a short silence rule splits some.
    assert len(short.events) > len(long.events)


def test_batched_equals_unbatched_and_framing_does_not_matter(
    vad: SileroVad, samples: list[tuple[dict[str, Any], npt.NDArray[np.int16]]]
) -> None:
    audio = [pcm for _, pcm in samples[:5]]
    together = run_files(vad, audio, VadParams())
    for sid, pcm in enumerate(audio):
        alone = run_files(vad, [pcm], VadParams())
        probs = [p.probability for p in together.probabilities if p.sid == sid]
        np.testing.assert_allclose(probs, [p.probability for p in alone.probabilities],
                                   rtol=0, atol=1e-6)
        assert [(e.edge, e.sample, e.decided_at) for e in together.events if e.sid == sid] == [
            (e.edge, e.sample, e.decided_at) for e in alone.events
        ]
    # 20 ms frames as a gateway sends them, sessions interleaved, float input.
    framed = VadOutput()
    for sid in range(len(audio)):
        vad.open_session(sid)
    for offset in range(0, max(len(a) for a in audio), 320):
        step = vad.process(
            {sid: pcm[offset : offset + 320].astype(np.float32) / 32768.0
             for sid, pcm in enumerate(audio) if offset < len(pcm)}
        )
        framed.probabilities += step.probabilities
        framed.events += step.events
    for sid in range(len(audio)):
        vad.close_session(sid)
    key = lambda e: (e.sid, e.sample)  # noqa: E731
    assert sorted(framed.events, key=key) == sorted(together.events, key=key)
    assert len(framed.probabilities) == len(together.probabilities)


def test_reopened_session_starts_fresh(
    vad: SileroVad, samples: list[tuple[dict[str, Any], npt.NDArray[np.int16]]]
) -> None:
    pcm = samples[0][1]
    first = run_files(vad, [pcm], VadParams())
    vad.open_session(0)
    vad.feed(0, pcm[: RATE // 2 + 100])
    vad.step()
    vad.open_session(0)  # restart: state, context, position and buffer reset
    vad.feed(0, pcm)
    again = vad.step()
    vad.close_session(0)
    assert again.events == first.events
    assert [p.probability for p in again.probabilities] == [
        p.probability for p in first.probabilities
    ]


def test_probabilities_are_per_chunk_with_positions(vad: SileroVad) -> None:
    vad.open_session(3)
    vad.feed(3, np.zeros(CHUNK * 2 + 100, dtype=np.int16))
    out = vad.step()
    assert [(p.sid, p.end_sample) for p in out.probabilities] == [(3, CHUNK), (3, 2 * CHUNK)]
    assert all(p.probability < 0.1 for p in out.probabilities)
    assert not vad.in_speech(3)
    vad.feed(3, np.zeros(CHUNK - 100, dtype=np.int16))
    assert [p.end_sample for p in vad.step().probabilities] == [3 * CHUNK]
    vad.close_session(3)


def test_bad_audio_and_unknown_session(vad: SileroVad) -> None:
    with pytest.raises(KeyError, match="VAD session 99 is not open"):
        vad.feed(99, np.zeros(10, dtype=np.int16))
    vad.open_session(1)
    with pytest.raises(ValueError, match="int16 or float32"):
        vad.feed(1, np.zeros(10, dtype=np.int32))
    with pytest.raises(ValueError, match="one channel"):
        vad.feed(1, np.zeros((10, 2), dtype=np.int16))
    vad.close_session(1)


def segment(probs: list[float], params: VadParams) -> list[tuple[str, int, int]]:
    seg = SpeechSegmenter(params)
    out = []
    for i, p in enumerate(probs):
        decided = seg.push(i * CHUNK, (i + 1) * CHUNK, p)
        if decided:
            out.append((decided[0].value, decided[1], (i + 1) * CHUNK))
    return out


def ms(chunks: int) -> float:
    return chunks * CHUNK * 1000 / RATE


def test_segmenter_exact_positions_and_padding() -> None:
    params = VadParams(min_speech_ms=ms(3), min_silence_ms=ms(2), speech_pad_ms=ms(1))
    probs = [0.0, 0.0, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.0, 0.0]
    assert segment(probs, params) == [
        ("start", 1 * CHUNK, 5 * CHUNK), ("end", 7 * CHUNK, 8 * CHUNK)
    ]


def test_segmenter_drops_blips_and_keeps_short_dips() -> None:
    params = VadParams(min_speech_ms=ms(3), min_silence_ms=ms(2), speech_pad_ms=0)
    assert segment([0.9, 0.9, 0.0, 0.0, 0.9, 0.0, 0.0], params) == []
    # A one-chunk dip inside the candidate does not reset its onset.
    assert segment([0.0, 0.9, 0.0, 0.9, 0.9], params) == [("start", CHUNK, 4 * CHUNK)]


def test_segmenter_hysteresis() -> None:
    params = VadParams(threshold=0.5, min_speech_ms=0, min_silence_ms=ms(2), speech_pad_ms=0)
    assert params.low_threshold == pytest.approx(0.35)
    # Between the thresholds speech neither starts nor ends.
    assert segment([0.4, 0.4, 0.6, 0.4, 0.4, 0.4, 0.4], params) == [("start", 2 * CHUNK, 3 * CHUNK)]
    # Below the low threshold the silence counts from its first chunk, and a chunk between
    # the thresholds does not reset it.
    assert segment([0.6, 0.3, 0.45, 0.2], params) == [
        ("start", 0, CHUNK), ("end", CHUNK, 3 * CHUNK)
    ]


def test_segmenter_padding_stays_between_segments_and_decisions() -> None:
    params = VadParams(min_speech_ms=0, min_silence_ms=ms(1), speech_pad_ms=ms(2))
    # Padding reaches neither before sample 0, past the point of decision, nor back
    # into the previous segment.
    assert segment([0.9, 0.0, 0.9, 0.0], params) == [
        ("start", 0, CHUNK), ("end", 2 * CHUNK, 2 * CHUNK),
        ("start", 2 * CHUNK, 3 * CHUNK), ("end", 4 * CHUNK, 4 * CHUNK),
    ]


def test_params_validation_and_bundle_table(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threshold"):
        VadParams(threshold=1.5)
    with pytest.raises(ValueError, match="neg_threshold"):
        VadParams(threshold=0.5, neg_threshold=0.7)
    reader = TableReader({"threshold": 0.6, "min_silence_ms": 300}, tmp_path, "vad")
    params = VadParams.from_reader(reader)
    assert (params.threshold, params.min_silence_ms) == (0.6, 300.0)
    assert params.low_threshold == pytest.approx(0.45)
    with pytest.raises(BundleError, match=r"field \[vad\] min_speech_ms is invalid"):
        VadParams.from_reader(TableReader({"min_speech_ms": "long"}, tmp_path, "vad"))
    with pytest.raises(BundleError, match=r"\[vad\] VAD neg_threshold"):
        VadParams.from_reader(TableReader({"neg_threshold": 0.9}, tmp_path, "vad"))


def test_engine_from_bundle(random_bundle: Path) -> None:
    table = tomllib.loads((random_bundle / "bundle.toml").read_text())["vad"]
    engine = SileroVad.from_table({**table, "min_silence_ms": 250}, random_bundle)
    assert engine.params.min_silence_ms == 250
    with pytest.raises(BundleError, match="expected 16000"):
        SileroVad.from_table({**table, "sample_rate": 8000}, random_bundle)
