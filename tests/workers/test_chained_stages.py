"""The four stages chained in process on a bundle of random weights (what a real bundle
looks like to the stages: text and audio nobody scripted), one stage's output being the
next one's input, as the rings would carry it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stage_test_support import SPEECH, Harness, Out, context, msg, open_params

from voicegate.core.kinds import Flag, Kind
from voicegate.core.wav import read_wav
from voicegate.models.synth import synth_bundle
from voicegate.workers.llm_stage import LlmStage
from voicegate.workers.stt_stage import SttStage
from voicegate.workers.tts_stage import TtsStage
from voicegate.workers.vad_stage import VadStage

SID = 41


@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("random-bundle")
    synth_bundle(root, seed=11)
    return root


def forward(records: list[Out], into: Harness) -> None:
    """What the next worker's runtime hands its stage: data records and lifecycle."""
    for r in records:
        into.send(
            msg(r.kind, r.session, r.turn, r.payload, flags=r.flags, seq=r.seq,
                origin_ns=r.origin_ns, sent_ns=1)
        )  # fmt: skip


def test_random_bundle_answers_a_spoken_turn(random_bundle: Path) -> None:
    stages = []
    for cls, name, options in (
        (VadStage, "vad", {}),
        (SttStage, "stt", {"partial_interval_ms": 0}),
        (LlmStage, "llm", {"max_tokens": 12}),
        (TtsStage, "tts", {}),
    ):
        stage = cls(context(name, random_bundle, options))
        stage.load()
        h = Harness(stage)
        h.open(SID, 1, open_params(output=("mulaw", 8000)))
        stages.append(h)
    vad, stt, llm, tts = stages
    pcm = read_wav(SPEECH / "04_yes.wav").samples
    for start in range(0, len(pcm), 320):
        vad.send(msg(Kind.AUDIO_IN, SID, 1, pcm[start : start + 320].tobytes()))
    forward(vad.out.records, stt)
    forward(stt.out.records, llm)
    for _ in range(200):
        llm.tick()
        if any(r.flags & Flag.LAST for r in llm.out.take(Kind.LLM_TOKEN)):
            break
    forward(llm.out.records, tts)
    tts.tick(50)

    (final,) = stt.out.take(Kind.TRANSCRIPT_FINAL)
    tokens = llm.out.take(Kind.LLM_TOKEN)
    assert tokens and tokens[-1].flags & Flag.LAST
    assert len(tokens) <= 12 + 1
    audio = tts.out.take(Kind.AUDIO_OUT)
    assert audio and audio[-1].flags & Flag.LAST
    assert all(len(r.payload) == 160 for r in audio[:-1])
    assert {r.turn for r in audio} == {final.turn}
    (timing,) = tts.out.take(Kind.TURN_TIMING)
    assert set(json.loads(timing.payload)) == {"transcript_ns", "first_token_ns", "first_audio_ns"}
    assert np.frombuffer(b"".join(r.payload for r in audio), np.uint8).size > 0
