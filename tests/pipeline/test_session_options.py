"""Per-session options (SESSION_UPDATE, RESPONSE_CREATE, ITEM_ONLY items, AUDIO_MARK) end
to end: real speech through the shared real node of the pipeline tests; the test is the
gateway, sending exactly what docs/pipeline.md ("Session options") says a gateway sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pipeline_gateway import PlayingGateway, Session
from pipeline_script import REPLY, TRANSCRIPT

from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import (
    AudioMark,
    SessionOptions,
    StageId,
    TurnError,
    TurnErrorCode,
    VadEvent,
    VadEventType,
)
from voicegate.models.bundle import load_bundle
from voicegate.models.tts import voice_names

STORE = "00_store_hours.wav"


def update(gateway: PlayingGateway, s: Session, **options: Any) -> None:
    """SESSION_UPDATE with the session's full options; wait until it came back, so that
    every stage has applied it."""
    before = len(s.of(Kind.SESSION_UPDATE))
    gateway._send(s, Kind.SESSION_UPDATE, SessionOptions(**options).to_payload())
    gateway.wait(lambda: len(s.of(Kind.SESSION_UPDATE)) > before, "SESSION_UPDATE to pass")


def text_answer_done(s: Session, turn: int) -> bool:
    return any(r.flags & Flag.LAST for r in s.of(Kind.LLM_TOKEN, turn))


def typed(gateway: PlayingGateway, s: Session, text: str, flags: int = 0) -> int:
    """Send a TEXT_INPUT; the turn VAD gave it, learnt from its TRANSCRIPT_FINAL."""
    before = len(s.of(Kind.TRANSCRIPT_FINAL))
    gateway._send(s, Kind.TEXT_INPUT, text.encode(), flags)
    gateway.wait(lambda: len(s.of(Kind.TRANSCRIPT_FINAL)) > before, "the typed turn")
    item = s.of(Kind.TRANSCRIPT_FINAL)[before]
    assert item.payload.decode() == text
    return item.turn


def ended(s: Session, turn: int) -> bool:
    return (VadEventType.END_OF_TURN, turn) in s.vad_events()


def final(s: Session, turn: int | None = None) -> list[str]:
    return [r.payload.decode() for r in s.of(Kind.TRANSCRIPT_FINAL, turn)]


def spoken_turn(
    gateway: PlayingGateway, s: Session, speech: dict[str, np.ndarray], silence_ms: int = 800
) -> None:
    clip = speech[STORE]
    gateway.play(s, np.concatenate([gateway.silence(300), clip, gateway.silence(silence_ms)]))


def test_respond_none_transcribes_and_ends_the_turn_without_an_answer(
    gateway: PlayingGateway, speech: dict[str, np.ndarray]
) -> None:
    s = gateway.open()
    update(gateway, s, respond="none")
    turn = s.turn
    spoken_turn(gateway, s, speech)
    gateway.wait(lambda: bool(final(s, turn)), "the transcript")
    assert [e for e, _ in s.vad_events()] == [
        VadEventType.SPEECH_START, VadEventType.SPEECH_PAUSE, VadEventType.END_OF_TURN
    ]
    assert final(s, turn) == [TRANSCRIPT]
    # The turn ends at its TRANSCRIPT_FINAL: a typed item after it is a new turn, and the
    # session goes on answering nothing.
    assert typed(gateway, s, "Are you open on Sunday?") == turn + 1
    update(gateway, s, respond="none")  # a barrier: everything before it went through
    for kind in (Kind.LLM_TOKEN, Kind.AUDIO_OUT, Kind.TURN_TIMING, Kind.ERROR):
        assert not s.of(kind), Kind(kind).name


def test_respond_text_streams_the_answer_text_and_its_timing_without_audio(
    gateway: PlayingGateway,
) -> None:
    s = gateway.open()
    update(gateway, s, respond="text")
    turn = typed(gateway, s, "Are you open on Sunday?")
    gateway.wait(lambda: text_answer_done(s, turn), "the text answer")
    tokens = s.of(Kind.LLM_TOKEN, turn)
    assert "".join(r.payload.decode() for r in tokens) == REPLY
    assert [bool(r.flags & Flag.LAST) for r in tokens] == [False] * (len(tokens) - 1) + [True]
    (timing,) = s.of(Kind.TURN_TIMING, turn)
    stamps = json.loads(timing.payload)
    assert stamps["first_audio_ns"] == 0
    assert 0 < stamps["transcript_ns"] <= stamps["first_token_ns"]
    # The timing goes out before the text, as the LLM sent it.
    kinds = [r.kind for r in s.records if r.turn == turn]
    assert kinds.index(Kind.TURN_TIMING) < kinds.index(Kind.LLM_TOKEN)
    update(gateway, s, respond="audio")  # a barrier, and back to speech from the next turn
    assert not s.of(Kind.AUDIO_OUT)
    assert typed(gateway, s, "And on Monday?") == turn + 1
    gateway.wait(lambda: s.answer_done(turn + 1), "the spoken answer of the next turn")


def test_max_output_tokens_caps_the_answer(gateway: PlayingGateway) -> None:
    s = gateway.open()
    update(gateway, s, max_output_tokens=3)
    turn = typed(gateway, s, "Are you open on Sunday?")
    gateway.wait(lambda: s.answer_done(turn), "the capped answer")
    tokens = s.of(Kind.LLM_TOKEN, turn)
    text = "".join(r.payload.decode() for r in tokens)
    assert text and REPLY.startswith(text) and len(text) < len(REPLY)
    assert len([r for r in tokens if r.payload]) <= 3
    assert tokens[-1].flags & Flag.LAST
    # None gives the bundle's cap back: the whole reply.
    update(gateway, s, max_output_tokens=None)
    assert typed(gateway, s, "And on Monday?") == turn + 1
    gateway.wait(lambda: s.answer_done(turn + 1), "the whole answer")
    assert "".join(r.payload.decode() for r in s.of(Kind.LLM_TOKEN, turn + 1)) == REPLY


def test_manual_turn_detection_waits_for_commit(
    gateway: PlayingGateway, speech: dict[str, np.ndarray]
) -> None:
    s = gateway.open()
    update(gateway, s, turn_detection="manual")
    turn = s.turn
    spoken_turn(gateway, s, speech, silence_ms=1500)  # five times the end-of-turn silence
    update(gateway, s, turn_detection="manual")  # a barrier behind the audio
    assert s.vad_events() == [(VadEventType.SPEECH_START, turn), (VadEventType.SPEECH_PAUSE, turn)]
    assert not final(s)
    gateway._send(s, Kind.COMMIT)
    gateway.wait(lambda: bool(final(s, turn)) and s.answer_done(turn), "the committed turn")
    assert s.vad_events()[-1] == (VadEventType.END_OF_TURN, turn)
    assert final(s, turn) == [TRANSCRIPT]
    assert "".join(r.payload.decode() for r in s.of(Kind.LLM_TOKEN, turn)) == REPLY


def test_server_turn_detection_takes_the_sessions_silence_and_prefix_padding(
    gateway: PlayingGateway, speech: dict[str, np.ndarray]
) -> None:
    default, padded = gateway.open(), gateway.open()
    update(gateway, padded, silence_duration_ms=1000, prefix_padding_ms=0)
    for s in (default, padded):
        spoken_turn(gateway, s, speech, silence_ms=800)
    update(gateway, padded, silence_duration_ms=1000, prefix_padding_ms=0)  # a barrier
    gateway.wait(lambda: ended(default, default.turn), "the default session's end of turn")
    assert [e for e, _ in padded.vad_events()] == [
        VadEventType.SPEECH_START, VadEventType.SPEECH_PAUSE
    ]
    gateway.play(padded, gateway.silence(400))  # 1200 ms of silence in all
    gateway.wait(lambda: ended(padded, padded.turn), "the padded session's end of turn")

    def start_sample(s: Session) -> int:
        return VadEvent.unpack(s.events[0].payload).at_sample

    # The same audio: the start differs by exactly the default pre-roll of 200 ms.
    assert start_sample(padded) - start_sample(default) == 200 * 16


def test_auto_respond_off_adds_items_and_answers_on_response_create(
    gateway: PlayingGateway, speech: dict[str, np.ndarray]
) -> None:
    s = gateway.open()
    update(gateway, s, auto_respond=False)
    turn = s.turn
    spoken_turn(gateway, s, speech)
    gateway.wait(lambda: final(s, turn) == [TRANSCRIPT], "the transcript")
    assert typed(gateway, s, "And on Sunday?") == turn + 1
    update(gateway, s, auto_respond=False)  # a barrier
    assert not s.of(Kind.LLM_TOKEN) and not s.of(Kind.AUDIO_OUT)

    gateway._send(s, Kind.RESPONSE_CREATE)
    gateway.wait(lambda: bool(s.of(Kind.RESPONSE_CREATE)), "RESPONSE_CREATE to come back")
    (created,) = s.of(Kind.RESPONSE_CREATE)
    answer = created.turn
    assert answer == turn + 2
    gateway.wait(lambda: s.answer_done(answer), "the answer")
    assert "".join(r.payload.decode() for r in s.of(Kind.LLM_TOKEN, answer)) == REPLY
    assert len(s.of(Kind.TURN_TIMING, answer)) == 1
    # RESPONSE_CREATE came back before anything of its answer.
    kinds = [r.kind for r in s.records if r.turn == answer]
    assert kinds[0] == Kind.RESPONSE_CREATE


def test_item_only_text_gets_no_answer_even_with_auto_respond(gateway: PlayingGateway) -> None:
    s = gateway.open()
    turn = typed(gateway, s, "My order number is 42.", Flag.ITEM_ONLY)
    (item,) = s.of(Kind.TRANSCRIPT_FINAL, turn)
    assert item.flags & Flag.ITEM_ONLY
    gateway._send(s, Kind.RESPONSE_CREATE)
    gateway.wait(lambda: s.answer_done(turn + 1), "the answer")
    assert not s.of(Kind.LLM_TOKEN, turn)


def test_voice_names_and_an_unknown_voice(
    gateway: PlayingGateway, scripted_bundle: Path
) -> None:
    bundle = load_bundle(scripted_bundle, require=("tts",))
    names = voice_names(bundle.table("tts"), bundle.root)
    assert names == ("voice",)  # a single-speaker voice: its file's name
    s = gateway.open()
    update(gateway, s, voice="voice")
    turn = typed(gateway, s, "Hello?")
    gateway.wait(lambda: s.answer_done(turn), "the answer in the named voice")
    update(gateway, s, voice="nobody")
    (error,) = s.of(Kind.ERROR)
    event = TurnError.unpack(error.payload)
    assert (event.code, event.stage) == (TurnErrorCode.BAD_INPUT, StageId.TTS)
    assert "nobody" in event.detail and "voice" in event.detail


def test_a_bad_session_update_is_the_sessions_error_and_goes_no_further(
    gateway: PlayingGateway,
) -> None:
    s = gateway.open()
    gateway._send(s, Kind.SESSION_UPDATE, b'{"respond": "loud"}')
    gateway.wait(lambda: bool(s.events), "the error")
    (error,) = s.events
    event = TurnError.unpack(error.payload)
    assert (event.code, event.stage) == (TurnErrorCode.BAD_INPUT, StageId.VAD)
    assert "respond" in event.detail
    update(gateway, s)  # a good one passes, the bad one never did
    assert len(s.of(Kind.SESSION_UPDATE)) == 1


def test_audio_marks_map_the_answers_audio_to_its_text(gateway: PlayingGateway) -> None:
    s = gateway.open(output=("pcm16", 24000))
    update(gateway, s, audio_marks=True)
    turn = typed(gateway, s, "Are you open on Sunday?")
    gateway.wait(lambda: s.answer_done(turn), "the answer")
    marks = [AudioMark.from_payload(r.payload) for r in s.of(Kind.AUDIO_MARK, turn)]
    assert len(marks) >= 2  # the reply has several clauses
    assert [m.text_chars for m in marks] == sorted({m.text_chars for m in marks})
    assert [m.audio_ms for m in marks] == sorted(m.audio_ms for m in marks)
    assert marks[-1].text_chars == len(REPLY)
    audio_ms = sum(len(r.payload) for r in s.of(Kind.AUDIO_OUT, turn)) // 2 * 1000 // 24000
    assert marks[0].audio_ms > 0 and marks[-1].audio_ms <= audio_ms
    # Each clause ends at a word's end of the reply.
    assert all(REPLY[m.text_chars - 1] != " " for m in marks)
