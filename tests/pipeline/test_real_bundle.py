"""The real bundle through a real node: the pipeline loses nothing of what was said, and
what it answers can be heard.

Every utterance of ../shared/speech is played (faster than real time: VAD decides by
sample positions) and the final transcripts the node reports must equal the STT model's
offline transcripts of the same audio: the samples the VAD's events name (from
SPEECH_START's first forwarded sample to END_OF_TURN's cut, per turn) of what was played.
Nothing lost between the gateway and the model, no frame dropped, no cut misplaced. A
session is closed as soon as its final transcript is in, which cancels its answer: the
answers are not what this test is about and would cost most of its time. Two answers
are then played to the end and their audio transcribed back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pipeline_gateway import PlayingGateway, Session

from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import VadEvent, VadEventType
from voicegate.models import intelligibility
from voicegate.models.bundle import load_bundle
from voicegate.models.runtime import ExecutionConfig
from voicegate.models.stt import WhisperModel, load_model

# The answers' audio transcribed back, against the answers' text.
ANSWER_WER = 0.25


@pytest.fixture(scope="module")
def stt_model(real_bundle: Path) -> Iterator[WhisperModel]:
    bundle = load_bundle(real_bundle, require=("stt",))
    yield load_model(bundle.table("stt"), bundle.root, ExecutionConfig())


def _final_turn(s: Session) -> int | None:
    """The turn of the last END_OF_TURN, once its final transcript is in."""
    ends = [turn for event, turn in s.vad_events() if event is VadEventType.END_OF_TURN]
    if not ends:
        return None
    return ends[-1] if s.of(Kind.TRANSCRIPT_FINAL, ends[-1]) else None


def _heard(s: Session) -> list[str]:
    """What the node reported for the utterance: the final transcript of each turn."""
    return [r.payload.decode() for r in s.of(Kind.TRANSCRIPT_FINAL)]


def _segments(s: Session) -> list[tuple[int, int]]:
    """The stream samples each turn's transcript was made of, from the VAD's events: an
    utterance runs from its SPEECH_START to its END_OF_TURN (a pause that ended in more
    speech continues it)."""
    segments: list[tuple[int, int]] = []
    start = 0
    for r in s.events:
        if r.kind != Kind.VAD_EVENT:
            continue
        event = VadEvent.unpack(r.payload)
        if event.event is VadEventType.SPEECH_START:
            start = event.at_sample
        elif event.event is VadEventType.END_OF_TURN:
            segments.append((start, event.at_sample))
    return segments


def test_every_utterance_reaches_the_transcript_whole(
    real_gateway: PlayingGateway, speech: dict[str, np.ndarray], stt_model: WhisperModel
) -> None:
    gw = real_gateway
    reported: dict[str, list[str]] = {}
    offline: dict[str, list[str]] = {}
    for name, pcm in speech.items():
        s = gw.open()
        played = np.concatenate([gw.silence(300), pcm, gw.silence(1200)])
        gw.play(s, played)
        gw.wait(lambda s=s: _final_turn(s) is not None, f"the final transcript of {name}")
        reported[name] = _heard(s)
        audio = played.astype(np.float32) / 32768.0
        offline[name] = [intelligibility.transcribe(stt_model, audio[a:b], 16000)
                         for a, b in _segments(s)]  # fmt: skip
        gw.close_all()
    assert reported == offline
    # The speech was heard: most utterances gave words (a few are noisy or very short).
    assert sum(1 for texts in reported.values() if any(texts)) >= len(speech) - 3


def _answer(s: Session, turn: int) -> tuple[str, np.ndarray]:
    text = "".join(r.payload.decode() for r in s.of(Kind.LLM_TOKEN, turn))
    pcm = b"".join(r.payload for r in s.of(Kind.AUDIO_OUT, turn))
    return text, np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0


@pytest.mark.parametrize("name", ["00_store_hours.wav", "03_refund.wav"])
def test_the_answer_audio_says_the_answer_text(
    real_gateway: PlayingGateway, speech: dict[str, np.ndarray], stt_model: WhisperModel,
    name: str,
) -> None:
    gw = real_gateway
    s = gw.open(output=("pcm16", 24000))
    gw.play(s, np.concatenate([gw.silence(300), speech[name], gw.silence(1200)]))
    gw.wait(lambda: _final_turn(s) is not None, "the final transcript")
    turn = _final_turn(s)
    assert turn is not None
    gw.wait(lambda: s.answer_done(turn), "the whole answer", timeout=120.0)
    text, audio = _answer(s, turn)
    assert text.strip(), "the LLM answered nothing"
    assert s.of(Kind.LLM_TOKEN, turn)[-1].flags & Flag.LAST
    heard = intelligibility.check_answer(stt_model, audio, 24000, text)
    assert heard.wer <= ANSWER_WER, heard
