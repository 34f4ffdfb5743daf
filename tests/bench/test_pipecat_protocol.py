"""The Pipecat peer's serializer for ``/v1/stream``: messages in and out, the protocol's
errors, and the turn log that ``response.done``'s latency is built from."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given
from hypothesis import strategies as st
from pipecat.frames.frames import (
    InputAudioRawFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    TranscriptionFrame,
)

from bench.baselines.pipecat_protocol import StreamSerializer, TurnLog
from voicegate.server.protocols.native_events import ResponseDone, parse_server_event
from voicegate.server.protocols.native_wire import ErrorCode, ProtocolError


def _serializer() -> tuple[StreamSerializer, list[ProtocolError]]:
    errors: list[ProtocolError] = []
    serializer = StreamSerializer(TurnLog())
    serializer.on_error = errors.append
    return serializer, errors


def test_audio_in_becomes_frames_and_arrivals() -> None:
    serializer, errors = _serializer()
    frame = asyncio.run(serializer.deserialize(bytes(640)))
    assert isinstance(frame, InputAudioRawFrame)
    assert frame.sample_rate == 16000 and len(frame.audio) == 640
    assert serializer.log.received_samples == 320
    assert not errors


def test_bad_audio_and_bad_text_are_protocol_errors() -> None:
    serializer, errors = _serializer()
    assert asyncio.run(serializer.deserialize(bytes(641))) is None
    assert asyncio.run(serializer.deserialize('{"type": "nope"}')) is None
    assert [e.code for e in errors] == [ErrorCode.BAD_AUDIO_FRAME, ErrorCode.UNKNOWN_TYPE]
    assert all(e.fatal for e in errors)
    assert serializer.log.received_samples == 0


def test_typed_turn_is_the_transcript_and_session_end_is_noted() -> None:
    serializer, errors = _serializer()
    frame = asyncio.run(serializer.deserialize('{"type": "text.input", "text": "hi"}'))
    assert isinstance(frame, TranscriptionFrame) and frame.text == "hi"
    assert serializer.log.turn == 1 and list(serializer.log.stopped) == [1]
    assert asyncio.run(serializer.deserialize('{"type": "session.end"}')) is None
    assert serializer.log.ended and not errors


def test_response_done_carries_the_turns_latency() -> None:
    serializer, _ = _serializer()
    log = serializer.log
    answer = log.answer(1)
    ms = 1_000_000
    answer.speech_end_ns, answer.silence_complete_ns = ms, 301 * ms
    answer.turn_end_ns, answer.transcript_ns = 303 * ms, 350 * ms
    answer.first_token_ns, answer.first_audio_ns = 360 * ms, 380 * ms
    answer.text = "We open at nine."
    started = {"type": "response.audio.started", "turn": 1, "encoding": "pcm16",
               "sample_rate": 16000}  # fmt: skip
    asyncio.run(serializer.serialize(OutputTransportMessageFrame(message=started)))
    audio = asyncio.run(serializer.serialize(OutputAudioRawFrame(bytes(640), 16000, 1)))
    assert audio == bytes(640)
    answer.audio_sent_ns = 381 * ms  # as if the audio had gone out then
    text = asyncio.run(serializer.serialize(
        OutputTransportMessageFrame(message={"type": "response.done", "turn": 1})))  # fmt: skip
    assert isinstance(text, str)
    done = parse_server_event(text)
    assert isinstance(done, ResponseDone)
    assert done.text == "We open at nine." and done.audio_ms == 20.0
    assert done.speculative is False
    assert done.latency_ms.to_dict() == {
        "end_of_turn_silence": 300.0, "after_end_of_turn": 80.0, "vad": 2.0, "stt": 47.0,
        "llm_first_token": 10.0, "tts_first_audio": 20.0, "gateway": 1.0,
        "voice_to_voice": 380.0,
    }  # fmt: skip
    assert 1 not in log.answers  # reported once
    assert json.loads(text)["type"] == "response.done"


@given(st.lists(st.integers(min_value=1, max_value=960), min_size=1, max_size=50),
       st.integers(min_value=0, max_value=50_000))  # fmt: skip
def test_arrival_of_finds_the_message_holding_a_sample(sizes: list[int], sample: int) -> None:
    log = TurnLog()
    for i, size in enumerate(sizes):
        log.audio_arrived(size, 1000 + i)
    ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    holding = next((i for i, end in enumerate(ends) if sample < end), len(sizes) - 1)
    assert log.arrival_of(sample) == 1000 + holding
