"""Turns end to end: real speech through the real node; the test is the gateway.

VAD decides by sample positions, so audio is sent faster than real time."""

from __future__ import annotations

import json

import numpy as np
from pipeline_gateway import PlayingGateway, Session, play_together
from pipeline_script import REPLY, TRANSCRIPT

from voicegate.core.codec import AudioFormat, Encoding
from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import VadEventType
from voicegate.workers.gateway_link import Received

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


def _after(records: list[Received], index: int) -> list[Received]:
    return records[index + 1 :]


def _answered_turn(s: Session, after: int) -> int | None:
    """The turn of the first END_OF_TURN past event ``after`` once its answer is complete."""
    for event, turn in s.vad_events()[after:]:
        if event is VadEventType.END_OF_TURN:
            return turn if s.answer_done(turn) else None
    return None


def test_speech_after_a_short_pause_cancels_the_speculation(
    gateway: PlayingGateway, speech: dict[str, np.ndarray]
) -> None:
    s = gateway.open()
    first = s.turn
    gap = gateway.silence(200)  # longer than pause_ms, shorter than the end-of-turn silence
    audio = [gateway.silence(300), speech[STORE], gap, speech["06_agent.wav"], gateway.silence(800)]
    gateway.play(s, np.concatenate(audio))
    gateway.wait(lambda: any(s.answer_done(t) for t in range(first + 1, first + 20)), "an answer")

    events = s.vad_events()
    assert events[:4] == [
        (VadEventType.SPEECH_START, first),
        (VadEventType.SPEECH_PAUSE, first),
        ("CANCEL", first + 1),
        (VadEventType.SPEECH_RESUME, first + 1),
    ]
    assert s.events[2].flags & Flag.CONTINUE
    last = events[-1][1]
    assert events[-2:] == [(VadEventType.SPEECH_PAUSE, last), (VadEventType.END_OF_TURN, last)]
    assert [e for e, _ in events].count(VadEventType.END_OF_TURN) == 1
    # The speculation of the first turn stopped at its CANCEL; the turn that ended
    # answered with the whole utterance's transcript.
    cancel = next(i for i, r in enumerate(s.records) if r.kind == Kind.CANCEL)
    assert s.records[cancel].turn == first + 1
    assert all(r.turn > first for r in _after(s.records, cancel))
    assert not s.of(Kind.TRANSCRIPT_FINAL, first)
    assert [r.payload.decode() for r in s.of(Kind.TRANSCRIPT_FINAL)] == [TRANSCRIPT]
    assert "".join(r.payload.decode() for r in s.of(Kind.LLM_TOKEN, last)) == REPLY


def test_barge_in_during_playback_cancels_the_answer_but_a_cough_does_not(
    gateway: PlayingGateway, speech: dict[str, np.ndarray]
) -> None:
    s = gateway.open(output=("mulaw", 8000))
    first = s.turn
    gateway.play(s, np.concatenate([gateway.silence(300), speech[STORE], gateway.silence(800)]))
    gateway.wait(lambda: s.answer_done(first), "the first answer")
    gateway.playback(s, True)
    cough = speech[STORE][8000 : 8000 + 16 * 150]  # 150 ms of voice
    gateway.play(s, np.concatenate([cough, gateway.silence(600)]))
    gateway.wait(lambda: any(r.kind == Kind.PLAYBACK for r in s.records), "PLAYBACK to pass")
    assert len(s.events) == 3  # a cough during playback decides nothing
    gateway.play(s, np.concatenate([speech["06_agent.wav"], gateway.silence(800)]))
    gateway.wait(lambda: _answered_turn(s, after=3) is not None, "the barge-in turn's answer")

    events = s.vad_events()
    assert events[3:5] == [("BARGE_IN", first + 1), (VadEventType.SPEECH_START, first + 1)]
    last = _answered_turn(s, after=3)
    assert events[-1] == (VadEventType.END_OF_TURN, last)
    barge = next(i for i, r in enumerate(s.records) if r.kind == Kind.BARGE_IN)
    assert not [r for r in _after(s.records, barge) if r.turn <= first]
    audio = s.of(Kind.AUDIO_OUT, last)
    assert all(len(r.payload) == 160 for r in audio[:-1])  # 20 ms of mu-law at 8 kHz


def test_typed_turn_is_answered_without_audio_input(gateway: PlayingGateway) -> None:
    s = gateway.open()
    gateway.text(s, "Are you open on Sunday?")
    gateway.wait(lambda: any(s.answer_done(t) for t in (s.turn,)), "the typed turn's answer")
    assert [r.payload.decode() for r in s.of(Kind.TRANSCRIPT_FINAL, s.turn)] == [
        "Are you open on Sunday?"
    ]
    assert "".join(r.payload.decode() for r in s.of(Kind.LLM_TOKEN, s.turn)) == REPLY
    assert not s.events


def test_twenty_sessions_at_once_each_get_their_own_answer(
    gateway: PlayingGateway, speech: dict[str, np.ndarray]
) -> None:
    inputs = [("pcm16", 16000), ("mulaw", 8000), ("pcm16", 48000), ("pcm16", 24000)]
    outputs = [("mulaw", 8000), ("pcm16", 16000), ("pcm16", 24000)]
    sessions = [
        gateway.open(input=inputs[i % len(inputs)], output=outputs[i % len(outputs)])
        for i in range(20)
    ]
    audio = np.concatenate([gateway.silence(300), speech[STORE], gateway.silence(800)])
    play_together(gateway, sessions, audio)
    gateway.wait(
        lambda: all(_answered_turn(s, after=0) is not None for s in sessions),
        "every answer",
        timeout=120,
    )
    for s in sessions:
        turn = _answered_turn(s, after=0)
        assert turn is not None
        assert all(r.session == s.sid for r in s.records + s.events)
        # Resampled input may hear a pause inside the sentence: the speculation is then
        # voided and the utterance goes on; either way one turn ends and is answered.
        events = s.vad_events()
        assert events[0][0] is VadEventType.SPEECH_START
        assert events[-2:] == [(VadEventType.SPEECH_PAUSE, turn), (VadEventType.END_OF_TURN, turn)]
        assert [r.payload.decode() for r in s.of(Kind.TRANSCRIPT_FINAL)] == [TRANSCRIPT]
        assert "".join(r.payload.decode() for r in s.of(Kind.LLM_TOKEN, turn)) == REPLY
        frame = AudioFormat(Encoding(s.output[0]), s.output[1]).frame_bytes(20)
        frames = s.of(Kind.AUDIO_OUT, turn)
        assert all(len(r.payload) == frame for r in frames[:-1])
        assert frames[-1].flags & Flag.LAST
        assert len(s.of(Kind.TURN_TIMING, turn)) == 1
