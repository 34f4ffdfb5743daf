"""The VAD stage's session options in process: a session's turn parameters, and the
records it sends on for SESSION_UPDATE and RESPONSE_CREATE."""

from __future__ import annotations

import pytest
from stage_test_support import Harness, context, msg, open_params

from voicegate.core.kinds import Kind
from voicegate.core.payloads import SessionOptions, StageId, TurnError, TurnErrorCode
from voicegate.models.synth import synth_bundle
from voicegate.workers.vad_stage import VadSession, VadStage

SID = 41


@pytest.fixture(scope="module")
def vad(tmp_path_factory: pytest.TempPathFactory) -> VadStage:
    root = tmp_path_factory.mktemp("vad-options")
    synth_bundle(root, stages=("vad",))
    stage = VadStage(context("vad", root, {"end_of_turn_silence_ms": 300, "pause_ms": 64}))
    stage.load()
    return stage


def test_session_overrides_of_threshold_silence_and_padding(vad: VadStage) -> None:
    node = vad.turn_params
    assert vad.session_turn_params(SessionOptions()) == node
    params = vad.session_turn_params(
        SessionOptions(vad_threshold=0.8, silence_duration_ms=700, prefix_padding_ms=0)
    )
    assert params.threshold == 0.8
    assert params.low_threshold == pytest.approx(0.8 - (node.threshold - node.low_threshold))
    assert params.end_of_turn == 700 * 16
    assert (params.pause, params.min_speech, params.pad) == (node.pause, node.min_speech, node.pad)
    # An end-of-turn silence shorter than the pause that starts speculation is raised to it.
    assert vad.session_turn_params(SessionOptions(silence_duration_ms=10)).end_of_turn == node.pause


def test_update_applies_at_once_and_response_create_takes_the_next_turn(vad: VadStage) -> None:
    h = Harness(vad)
    h.open(SID, 1, open_params())
    state: VadSession = h.states[SID]
    update = SessionOptions(turn_detection="manual", prefix_padding_ms=50).to_payload()
    h.send(msg(Kind.SESSION_UPDATE, SID, 1, update))
    assert state.taker.manual and state.pre_roll == 50 * 16
    h.send(msg(Kind.RESPONSE_CREATE, SID, 1))
    h.send(msg(Kind.RESPONSE_CREATE, SID, 1))
    # Before any utterance the update goes on under the gateway's turn, not turn 0.
    assert [(r.kind, r.turn) for r in h.out.take()] == [
        (Kind.SESSION_UPDATE, 1), (Kind.RESPONSE_CREATE, 1), (Kind.RESPONSE_CREATE, 2)
    ]
    h.send(msg(Kind.SESSION_UPDATE, SID, 2, b'{"turn_detection": "push"}'))
    (error,) = h.out.take(Kind.ERROR, event_path=True)
    event = TurnError.unpack(error.payload)
    assert (event.code, event.stage) == (TurnErrorCode.BAD_INPUT, StageId.VAD)
    assert "turn_detection" in event.detail
    assert state.taker.manual  # the bad update changed nothing and went no further
    assert len(h.out.take(Kind.SESSION_UPDATE)) == 1
    vad.close_session(SID, state, h.out)
