"""The real Whisper tiny.en (CTranslate2 float16, installed by ``make build``) imported
into the STT stage, against faster-whisper on the same weights and ../shared/speech."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voicegate.core.wav import read_wav
from voicegate.models import melspec, stt
from voicegate.models.importers.whisper import import_whisper
from voicegate.models.runtime import ExecutionConfig
from voicegate.models.weights import WHISPER_TINY_EN
from voicegate.models.wer import corpus_wer

faster_whisper = pytest.importorskip("faster_whisper")


@dataclass(frozen=True)
class Corpus:
    names: list[str]
    texts: list[str]
    audios: list[np.ndarray]


@pytest.fixture(scope="module")
def corpus(speech_dir: Path) -> Corpus:
    manifest = json.loads((speech_dir / "manifest.json").read_text())["utterances"]
    audios = []
    for entry in manifest:
        wav = read_wav(speech_dir / entry["file"])
        assert wav.sample_rate == melspec.SAMPLE_RATE
        audios.append(wav.samples.astype(np.float32) / 32768.0)
    return Corpus([e["file"] for e in manifest], [e["text"] for e in manifest], audios)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("whisper-tiny-en")
    return import_whisper(WHISPER_TINY_EN.path(), root), root


@pytest.fixture(scope="module")
def reference(corpus: Corpus) -> list[str]:
    """faster-whisper's transcripts: 30 s window, greedy, no temperature fallback."""
    model = faster_whisper.WhisperModel(str(WHISPER_TINY_EN.path()), device="cpu",
                                        compute_type="float32", cpu_threads=1)
    texts = []
    for audio in corpus.audios:
        segments, _ = model.transcribe(audio, language="en", beam_size=1, temperature=0.0,
                                       condition_on_previous_text=False,
                                       without_timestamps=True, vad_filter=False)
        texts.append(" ".join(s.text.strip() for s in segments))
    return texts


def transcripts(imported: tuple[dict[str, Any], Path], window: str, corpus: Corpus) -> list[str]:
    table, root = imported
    model = stt.load_model({**table, "window": window}, root, ExecutionConfig())
    return [model.text(tokens) for tokens in model.transcribe(corpus.audios)]


@pytest.fixture(scope="module")
def window_30s(imported: tuple[dict[str, Any], Path], corpus: Corpus) -> list[str]:
    return transcripts(imported, "30s", corpus)


def test_log_mel_matches_faster_whisper(corpus: Corpus) -> None:
    extractor = faster_whisper.feature_extractor.FeatureExtractor(feature_size=80)
    for audio in corpus.audios:
        theirs = extractor(audio)[:, :-1]  # as their transcribe() cuts it
        ours = melspec.padded_features(audio)
        assert theirs.shape[1] == melspec.content_frames(audio.size)
        np.testing.assert_allclose(ours[:, : theirs.shape[1]], theirs, atol=1e-4)
        assert not ours[:, theirs.shape[1]:].any()  # their pad_or_trim pads with zeros


def test_30s_window_transcribes_as_faster_whisper(
    window_30s: list[str], reference: list[str], corpus: Corpus
) -> None:
    same = [ours == theirs for ours, theirs in zip(window_30s, reference, strict=True)]
    differ = [(n, o, t) for n, o, t, s in zip(corpus.names, window_30s, reference, same,
                                              strict=True) if not s]
    assert sum(same) >= 17, differ
    assert corpus_wer(corpus.texts, window_30s) <= 0.15


@pytest.mark.xfail(strict=True, reason="target not met: tiny.en's WER with the "
                   "utterance-length encoder is about 5 points above the 30 s window's "
                   "(18.8% against 14.0% on ../shared/speech; see docs/models.md)")
def test_utterance_window_costs_at_most_two_points_of_wer(
    imported: tuple[dict[str, Any], Path], window_30s: list[str], corpus: Corpus
) -> None:
    utterance = transcripts(imported, "utterance", corpus)
    assert all(utterance), "every recording holds speech"
    gap = corpus_wer(corpus.texts, utterance) - corpus_wer(corpus.texts, window_30s)
    assert gap <= 0.02


def test_silence_and_noise_transcribe_as_nothing(imported: tuple[dict[str, Any], Path]) -> None:
    table, root = imported
    rng = np.random.default_rng(5)
    seconds = np.arange(2 * melspec.SAMPLE_RATE) / melspec.SAMPLE_RATE
    breath = np.convolve(rng.standard_normal(24000), np.ones(40) / 40, "same")
    sounds = {
        "silence": np.zeros(2 * melspec.SAMPLE_RATE),
        "dither": rng.standard_normal(2 * melspec.SAMPLE_RATE) * 1e-4,
        "noise": rng.standard_normal(2 * melspec.SAMPLE_RATE) * 0.01,
        "loud noise": rng.standard_normal(3 * melspec.SAMPLE_RATE) * 0.1,
        "hum": 0.05 * np.sin(2 * np.pi * 100 * seconds),
        "breath": breath * 0.05 * np.hanning(breath.size),
    }
    audios = [a.astype(np.float32) for a in sounds.values()]
    for window in ("utterance", "30s"):
        model = stt.load_model({**table, "window": window}, root, ExecutionConfig())
        decoded = model.decode(audios)
        heard = {name: model.text(d.tokens) for name, d in zip(sounds, decoded, strict=True)
                 if model.heard(d)}
        assert heard == {}, window
        # the guards, not an unconditional empty result: each decoded something
        assert all(d.tokens for d in decoded)
