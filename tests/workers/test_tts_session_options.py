"""The TTS stage's session options in process, on the scripted Piper voice: options that
wait for the next answer, text answers, voices, and the marks that map audio to text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from stage_test_support import REPLY, Harness, context, msg, open_params, scripted_bundle
from test_tts_stage import SID, reply

from voicegate.core.kinds import Kind
from voicegate.core.payloads import AudioMark, SessionOptions, TurnError
from voicegate.workers.tts_stage import TtsSession, TtsStage

TIMING = json.dumps({"transcript_ns": 10, "first_token_ns": 20}).encode()


@pytest.fixture(scope="module")
def tts(tmp_path_factory: pytest.TempPathFactory) -> TtsStage:
    stage = TtsStage(context("tts", scripted_bundle(tmp_path_factory.mktemp("tts-options"))))
    stage.load()
    return stage


def harness(tts: TtsStage) -> Harness:
    h = Harness(tts)
    h.open(SID, 1, open_params(output=("pcm16", 16000)))
    return h


def update(h: Harness, turn: int, **fields: Any) -> None:
    h.send(msg(Kind.SESSION_UPDATE, SID, turn, SessionOptions(**fields).to_payload()))


def test_options_sent_during_an_answer_wait_for_the_next_turn(tts: TtsStage) -> None:
    h = harness(tts)
    state: TtsSession = h.states[SID]
    h.send(msg(Kind.TURN_TIMING, SID, 1, TIMING))
    reply(h, 1, "We open at nine,", last=False)
    update(h, 1, respond="text")
    reply(h, 1, "and close at eight.")
    h.tick(20)
    assert state.options.respond == "audio"  # turn 1 is spoken to its end
    frames = [r for r in h.out.take(Kind.AUDIO_OUT) if r.turn == 1]
    assert frames and frames[-1].flags
    h.send(msg(Kind.TURN_TIMING, SID, 2, TIMING))
    reply(h, 2)
    h.tick(20)
    assert state.options.respond == "text"
    assert not [r for r in h.out.take(Kind.AUDIO_OUT) if r.turn == 2]
    assert "".join(r.payload.decode() for r in h.out.take(Kind.LLM_TOKEN) if r.turn == 2) == REPLY
    (timing,) = [r for r in h.out.take(Kind.TURN_TIMING) if r.turn == 2]
    assert json.loads(timing.payload) == {
        "transcript_ns": 10, "first_token_ns": 20, "first_audio_ns": 0
    }
    tts.close_session(SID, state, h.out)


def test_voice_by_name_and_an_unknown_one(tts: TtsStage) -> None:
    h = harness(tts)
    assert tts._engine().voice.voice_names == ("voice",)
    update(h, 1, voice="voice")
    update(h, 1, voice="nobody")
    (error,) = h.out.take(Kind.ERROR)
    assert "'nobody'" in TurnError.unpack(error.payload).detail
    assert h.states[SID].options.voice == "voice"  # kept as it was
    tts.close_session(SID, h.states[SID], h.out)


def test_marks_follow_each_clause_with_its_text_and_audio_ends(tts: TtsStage) -> None:
    h = harness(tts)
    update(h, 1, audio_marks=True)
    h.send(msg(Kind.TURN_TIMING, SID, 1, TIMING))
    reply(h, 1)
    h.tick(20)
    marks = [AudioMark.from_payload(r.payload) for r in h.out.take(Kind.AUDIO_MARK)]
    # The scripted voice's clauses: "We open at nine," / "and close at eight." / "Anything else?"
    assert [m.text_chars for m in marks] == [
        len("We open at nine,"), len("We open at nine, and close at eight."), len(REPLY)
    ]
    # Each mark follows the frames of its clause: its audio_ms is the audio sent so far,
    # less what waits for a whole frame.
    sent_ms = 0
    for r in h.out.take():
        if r.kind == Kind.AUDIO_OUT:
            sent_ms += len(r.payload) // 2 * 1000 // 16000
        elif r.kind == Kind.AUDIO_MARK:
            assert sent_ms <= AudioMark.from_payload(r.payload).audio_ms < sent_ms + 20
    tts.close_session(SID, h.states[SID], h.out)
