"""The STT stage on the real Whisper tiny.en (imported from the installed CTranslate2
weights, utterance-length encoder): the streaming contract holds with a model that
hears, and a pause of silence gives nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stage_test_support import SPEECH, Harness, context, msg, open_params

from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import VadEvent, VadEventType
from voicegate.core.wav import read_wav
from voicegate.models.bundle import merge_stage_table
from voicegate.models.importers.whisper import import_whisper
from voicegate.models.weights import WHISPER_TINY_EN
from voicegate.models.wer import corpus_wer
from voicegate.workers.stt_stage import SttStage

SID = 4
RATE = 16000
FRAME = 320  # 20 ms


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stt-real")
    merge_stage_table(root, "stt", import_whisper(WHISPER_TINY_EN.path(), root))
    return root


def recording(name: str) -> tuple[np.ndarray, str, int]:
    entry = next(e for e in json.loads((SPEECH / "manifest.json").read_text())["utterances"]
                 if e["file"] == name)
    samples = read_wav(SPEECH / name).samples
    return samples, entry["text"], int(entry["speech_end_s"] * RATE)


def texts(h: Harness, kind: Kind) -> list[tuple[str, int]]:
    return [(r.payload.decode(), r.flags) for r in h.out.take(kind)]


def test_partials_provisional_and_final_from_real_speech(bundle: Path) -> None:
    stage = SttStage(context("stt", bundle, {"partial_interval_ms": 1000,
                                             "partial_max_stretch": 1}))
    stage.load()
    h = Harness(stage)
    h.open(SID, 1, open_params())
    samples, reference, end = recording("01_order_status.wav")
    cut = end + 3200  # the speech end plus 200 ms of padding, as VAD cuts it
    h.send(msg(Kind.VAD_EVENT, SID, 1, VadEvent(VadEventType.SPEECH_START, 0).pack()))
    for start in range(0, cut + 8000, FRAME):  # on into 500 ms of the silence after
        h.send(msg(Kind.AUDIO_IN, SID, 1, samples[start : start + FRAME].tobytes()))
        if start < cut:
            h.tick()
    partials = [t for t, flags in texts(h, Kind.TRANSCRIPT_PARTIAL) if not flags]
    assert len(partials) >= 2 and all(partials)
    h.send(msg(Kind.VAD_EVENT, SID, 1, VadEvent(VadEventType.SPEECH_PAUSE, cut).pack()))
    [provisional] = [t for t, flags in texts(h, Kind.TRANSCRIPT_PARTIAL)
                     if flags == Flag.PROVISIONAL]
    assert corpus_wer([reference], [provisional]) <= 0.2, provisional
    h.send(msg(Kind.VAD_EVENT, SID, 1, VadEvent(VadEventType.END_OF_TURN, cut).pack()))
    assert texts(h, Kind.TRANSCRIPT_FINAL) == [(provisional, 0)]


def test_a_turn_of_silence_transcribes_as_nothing(bundle: Path) -> None:
    stage = SttStage(context("stt", bundle, {"partial_interval_ms": 500}))
    stage.load()
    h = Harness(stage)
    h.open(SID, 1, open_params())
    h.send(msg(Kind.VAD_EVENT, SID, 1, VadEvent(VadEventType.SPEECH_START, 0).pack()))
    rng = np.random.default_rng(2)
    for _ in range(75):  # 1.5 s of faint noise
        pcm = (rng.standard_normal(FRAME) * 30).astype(np.int16)
        h.send(msg(Kind.AUDIO_IN, SID, 1, pcm.tobytes()))
        h.tick()
    h.send(msg(Kind.VAD_EVENT, SID, 1, VadEvent(VadEventType.END_OF_TURN, 24000).pack()))
    assert texts(h, Kind.TRANSCRIPT_PARTIAL) == []  # empty partials are not sent
    assert texts(h, Kind.TRANSCRIPT_FINAL) == [("", 0)]
