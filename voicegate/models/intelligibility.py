"""Is the answer audio the answer text? The audio resampled to 16 kHz and transcribed by
the bundle's own STT model should give the text back.

Both sides are compared as spoken words: ``speech_text`` writes numbers and amounts out
(Whisper writes "$5" where the voice said "five dollars"), then case and punctuation
are dropped (``voicegate.models.wer`` leaves numbers as written, for transcripts of
speech whose reference text was already words). ``word_error_rate`` is the word-level
edit distance over the reference's length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from voicegate.core.audio import resample
from voicegate.core.speech_text import speech_text
from voicegate.models.bundle import load_bundle
from voicegate.models.runtime import ExecutionConfig
from voicegate.models.stt import SAMPLE_RATE, WhisperModel, load_model
from voicegate.models.tts import TtsEngine
from voicegate.models.wer import edit_distance

# Whisper reads windows of 30 s: longer audio is transcribed in pieces.
WINDOW_S: Final[float] = 28.0
_NOT_WORD: Final = re.compile(r"[^a-z0-9' ]+")


def spoken_words(text: str) -> list[str]:
    """The words of ``text`` as they are said: lower case, no punctuation."""
    spoken = speech_text(text).lower().replace("-", " ")
    return [w.strip("'") for w in _NOT_WORD.sub(" ", spoken).split() if w.strip("'")]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / words of the reference."""
    ref, hyp = spoken_words(reference), spoken_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def transcribe(model: WhisperModel, audio: npt.NDArray[np.floating], sample_rate: int) -> str:
    """The STT model's offline transcript of ``audio`` (any rate; resampled to 16 kHz)."""
    samples = resample(np.asarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE)
    window = int(WINDOW_S * SAMPLE_RATE)
    pieces = [samples[i : i + window] for i in range(0, max(len(samples), 1), window)]
    texts = [model.text(tokens) for tokens in model.transcribe(pieces)]
    return " ".join(t for t in texts if t)


def synthesize(engine: TtsEngine, text: str, sample_rate: int = SAMPLE_RATE) -> (
    npt.NDArray[np.float32]
):
    """``text`` spoken by the TTS engine as a reply, clause by clause, at ``sample_rate``."""
    sid = 0
    engine.open_session(sid, sample_rate)
    try:
        engine.push_text(sid, text)
        engine.end_reply(sid)
        chunks: list[npt.NDArray[np.float32]] = []
        while engine.pending():
            chunks += [c.audio for c in engine.step() if c.session == sid]
    finally:
        engine.close_session(sid)
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class Heard:
    """What the STT model heard in an answer's audio, against the answer's text."""

    text: str
    heard: str
    wer: float


def check_answer(model: WhisperModel, audio: npt.NDArray[np.floating], sample_rate: int,
                 text: str) -> Heard:
    """Transcribe an answer's audio and compare it with the answer's text."""
    heard = transcribe(model, audio, sample_rate)
    return Heard(text, heard, word_error_rate(text, heard))


def round_trip(engine: TtsEngine, model: WhisperModel, texts: Sequence[str]) -> list[Heard]:
    """Each text spoken by the TTS engine, then transcribed by the STT model."""
    return [check_answer(model, synthesize(engine, t), SAMPLE_RATE, t) for t in texts]


def load_engines(bundle: Path, config: ExecutionConfig | None = None) -> (
    tuple[TtsEngine, WhisperModel]
):
    """The bundle's TTS engine and STT model."""
    loaded = load_bundle(bundle, require=("stt", "tts"))
    config = config or ExecutionConfig()
    return (TtsEngine.from_table(loaded.table("tts"), loaded.root, config),
            load_model(loaded.table("stt"), loaded.root, config))  # fmt: skip
