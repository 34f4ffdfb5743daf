"""The STT stage in process, on the scripted Whisper bundle (it writes the known
transcript, one token per 160 ms of audio)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stage_test_support import TRANSCRIPT, Harness, context, msg, open_params, scripted_bundle

from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import VadEvent, VadEventType
from voicegate.workers.stt_stage import SttStage

SID = 11


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scripted_bundle(tmp_path_factory.mktemp("stt-bundle"))


def stage(bundle: Path, **options: object) -> tuple[Harness, list[int]]:
    """A loaded stage with one open session, and a list that counts decoded utterances."""
    stt = SttStage(context("stt", bundle, options))
    stt.load()
    assert stt.model is not None
    decoded: list[int] = []
    transcribe = stt.model.transcribe

    def counting(audios: list[np.ndarray]) -> list[list[int]]:
        decoded.extend(len(a) for a in audios)
        return transcribe(audios)

    stt.model.transcribe = counting  # type: ignore[method-assign]
    h = Harness(stt)
    h.open(SID, 1, open_params())
    return h, decoded


def event(kind: VadEventType, turn: int, at: int) -> object:
    return msg(Kind.VAD_EVENT, SID, turn, VadEvent(kind, at).pack(), origin_ns=at)


def audio(seconds: float, turn: int) -> object:
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(int(seconds * 16000)) * 3000).astype(np.int16)
    return msg(Kind.AUDIO_IN, SID, turn, pcm.tobytes())


def texts(h: Harness, kind: Kind, turn: int) -> list[tuple[str, int]]:
    return [(r.payload.decode(), r.flags) for r in h.out.take(kind) if r.turn == turn]


def test_provisional_at_the_pause_is_the_final_without_a_second_decode(bundle: Path) -> None:
    h, decoded = stage(bundle, partial_interval_ms=0)
    h.send(event(VadEventType.SPEECH_START, 1, 1000), audio(2.5, 1))
    h.send(event(VadEventType.SPEECH_PAUSE, 1, 1000 + 32000))
    assert texts(h, Kind.TRANSCRIPT_PARTIAL, 1) == [(TRANSCRIPT, Flag.PROVISIONAL)]
    assert decoded == [32000]  # exactly the utterance up to the pause, not the silence
    (provisional,) = h.out.take(Kind.TRANSCRIPT_PARTIAL)
    assert provisional.origin_ns == 1000 + 32000  # the pause's speech-end reference
    h.send(event(VadEventType.END_OF_TURN, 1, 1000 + 32000))
    assert texts(h, Kind.TRANSCRIPT_FINAL, 1) == [(TRANSCRIPT, 0)]
    assert decoded == [32000]
    # The events go on downstream, in order.
    assert [r.kind for r in h.out.take()].count(Kind.VAD_EVENT) == 3


def test_audio_is_kept_across_a_continued_utterance(bundle: Path) -> None:
    h, decoded = stage(bundle, partial_interval_ms=0)
    h.send(event(VadEventType.SPEECH_START, 1, 0), audio(0.8, 1))
    h.send(event(VadEventType.SPEECH_PAUSE, 1, 12800))
    ((early, _),) = texts(h, Kind.TRANSCRIPT_PARTIAL, 1)
    assert TRANSCRIPT.startswith(early) and early != TRANSCRIPT
    # The caller goes on: CANCEL (CONTINUE) moves the utterance to turn 2.
    h.send(
        msg(Kind.CANCEL, SID, 2, flags=Flag.CONTINUE),
        event(VadEventType.SPEECH_RESUME, 2, 12800),
    )
    h.send(audio(1.6, 2), event(VadEventType.SPEECH_PAUSE, 2, 12800 + 25600))
    assert texts(h, Kind.TRANSCRIPT_PARTIAL, 2) == [(TRANSCRIPT, Flag.PROVISIONAL)]
    assert decoded == [12800, 38400]
    # A changed cut is decoded again at the end of the turn.
    h.send(event(VadEventType.END_OF_TURN, 2, 12800 + 25600 - 1600))
    assert decoded[-1] == 36800
    assert len(texts(h, Kind.TRANSCRIPT_FINAL, 2)) == 1


def test_streaming_partials_while_the_caller_talks(bundle: Path) -> None:
    # No shedding: a harness that drives the stage back to back looks fully busy.
    h, _ = stage(bundle, partial_interval_ms=480, partial_max_stretch=1)
    h.send(event(VadEventType.SPEECH_START, 1, 0))
    rng = np.random.default_rng(1)
    for _ in range(100):  # 2 s in 20 ms frames
        pcm = (rng.standard_normal(320) * 3000).astype(np.int16)
        h.send(msg(Kind.AUDIO_IN, SID, 1, pcm.tobytes()))
        h.tick()
    partials = [t for t, flags in texts(h, Kind.TRANSCRIPT_PARTIAL, 1) if not flags]
    assert len(partials) >= 3
    assert all(TRANSCRIPT.startswith(p) for p in partials)
    assert [len(p) for p in partials] == sorted(len(p) for p in partials)


def test_stretched_partials_are_spaced_wider_and_the_pause_is_still_decoded(
    bundle: Path,
) -> None:
    h, decoded = stage(bundle, partial_interval_ms=480, partial_max_stretch=1)
    stt = h.stage
    assert isinstance(stt, SttStage)
    stt.partials.stretch = 4  # as the governor leaves it under load: every 1920 ms
    h.send(event(VadEventType.SPEECH_START, 1, 0))
    for _ in range(100):  # 2 s in 20 ms frames
        h.send(msg(Kind.AUDIO_IN, SID, 1, bytes(640)))
        h.tick()
    assert decoded == [30720]  # one partial, at 1920 ms
    h.send(event(VadEventType.SPEECH_PAUSE, 1, 32000))
    assert decoded == [30720, 32000]


def test_typed_text_is_the_final_transcript(bundle: Path) -> None:
    h, decoded = stage(bundle)
    h.send(msg(Kind.TEXT_INPUT, SID, 3, b"Open on Sunday?"))
    assert texts(h, Kind.TRANSCRIPT_FINAL, 3) == [("Open on Sunday?", 0)]
    assert decoded == []
