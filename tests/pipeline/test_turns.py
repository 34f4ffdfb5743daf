"""Turns end to end: real speech through the real node; the test is the gateway.

VAD decides by sample positions, so audio is sent faster than real time."""

from __future__ import annotations

import json

import numpy as np
from conftest import REPLY, TRANSCRIPT
from pipeline_gateway import PlayingGateway

from voicegate.core.codec import AudioFormat, Encoding
from voicegate.core.kinds import Flag, Kind, VadEventType

STORE = "00_store_hours.wav"


def test_one_turn_gives_events_transcript_answer_and_timing_in_order(
    gateway: PlayingGateway, speech: dict[str, np.ndarray]
) -> None:
    s = gateway.open(output=("pcm16", 24000))
    turn = s.turn
    gateway.play(s, np.concatenate([gateway.silence(300), speech[STORE], gateway.silence(800)]))
    gateway.wait(lambda: s.answer_done(turn), "the answer's last frame")

    assert s.vad_events() == [
        (VadEventType.SPEECH_START, turn),
        (VadEventType.SPEECH_PAUSE, turn),
        (VadEventType.END_OF_TURN, turn),
    ]
    provisional = [r for r in s.of(Kind.TRANSCRIPT_PARTIAL, turn) if r.flags & Flag.PROVISIONAL]
    assert [r.payload.decode() for r in provisional] == [TRANSCRIPT]
    assert [r.payload.decode() for r in s.of(Kind.TRANSCRIPT_FINAL, turn)] == [TRANSCRIPT]
    tokens = s.of(Kind.LLM_TOKEN, turn)
    assert "".join(r.payload.decode() for r in tokens) == REPLY
    assert [bool(r.flags & Flag.LAST) for r in tokens] == [False] * (len(tokens) - 1) + [True]

    audio = s.of(Kind.AUDIO_OUT, turn)
    frame = AudioFormat(Encoding.PCM16, 24000).frame_bytes(20)
    assert len(audio) > 5
    assert all(len(r.payload) == frame for r in audio[:-1])
    assert len(audio[-1].payload) <= frame and audio[-1].flags & Flag.LAST
    assert [r.seq for r in audio] == sorted(r.seq for r in audio)
    assert any(np.frombuffer(r.payload, np.int16).any() for r in audio)

    # The speech-end reference point travels with every stage's output.
    pause_origin = s.events[1].origin_ns
    assert s.events[2].origin_ns == pause_origin
    assert all(r.origin_ns == pause_origin for r in tokens + audio)

    (timing,) = s.of(Kind.TURN_TIMING, turn)
    stamps = json.loads(timing.payload)
    assert 0 < stamps["transcript_ns"] <= stamps["first_token_ns"] <= stamps["first_audio_ns"]
    assert timing.origin_ns == pause_origin
    # The timing goes out right after the turn's first audio frame.
    kinds = [r.kind for r in s.records if r.turn == turn]
    assert kinds.index(Kind.TURN_TIMING) == kinds.index(Kind.AUDIO_OUT) + 1
    # VAD's events end at TTS: the gateway has them from the event path.
    assert not s.of(Kind.VAD_EVENT)
