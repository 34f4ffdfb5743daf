"""The Realtime client event parser: every GA client event, and the documented errors."""

from __future__ import annotations

import base64
import json

import pytest

from voicegate.server.protocols.realtime_config import (
    PCM_24K,
    PCMA_8K,
    PCMU_8K,
    Modality,
    SessionType,
    TurnDetectionPatch,
    VadType,
)
from voicegate.server.protocols.realtime_events import (
    CLIENT_EVENT_TYPES,
    InputAudioAppend,
    InputAudioClear,
    InputAudioCommit,
    ItemCreate,
    ItemDelete,
    ItemRetrieve,
    ItemTruncate,
    OutputAudioClear,
    ResponseCancel,
    ResponseCreate,
    SessionUpdate,
    parse_client_event,
)
from voicegate.server.protocols.realtime_fields import UNSET, ErrorCode, RealtimeError


def parse(event: dict[str, object]) -> object:
    return parse_client_event(json.dumps(event))


def refused(event: dict[str, object] | str) -> RealtimeError:
    text = event if isinstance(event, str) else json.dumps(event)
    with pytest.raises(RealtimeError) as info:
        parse_client_event(text)
    return info.value


def test_session_update_realtime_shape() -> None:
    event = parse(
        {
            "type": "session.update",
            "event_id": "c1",
            "session": {
                "type": "realtime",
                "model": "gpt-realtime",
                "instructions": "Be brief.",
                "output_modalities": ["text"],
                "max_output_tokens": 200,
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": {
                            "type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 300,
                            "silence_duration_ms": 500, "create_response": True,
                            "interrupt_response": True,
                        },
                        "noise_reduction": {"type": "near_field"},
                    },
                    "output": {"format": {"type": "audio/pcma"}, "voice": "alloy", "speed": 1.0},
                },
                "tools": [],
                "tool_choice": "auto",
                "tracing": None,
                "truncation": "auto",
            },
        }
    )
    assert isinstance(event, SessionUpdate)
    assert event.event_id == "c1"
    patch = event.session
    assert patch.type is SessionType.REALTIME
    assert (patch.model, patch.instructions, patch.modality) == (
        "gpt-realtime", "Be brief.", Modality.TEXT,
    )
    assert patch.max_output_tokens == 200
    assert (patch.input_format, patch.output_format, patch.voice) == (PCMU_8K, PCMA_8K, "alloy")
    assert patch.turn_detection == TurnDetectionPatch(
        VadType.SERVER, 0.6, 300, 500, create_response=True, interrupt_response=True
    )
    assert patch.transcription is not UNSET and patch.transcription is not None
    assert patch.transcription.language == "en"


def test_session_update_partial_and_nulls() -> None:
    event = parse(
        {"type": "session.update", "session": {"type": "realtime", "max_output_tokens": "inf",
                                               "audio": {"input": {"turn_detection": None,
                                                                   "transcription": None}}}}
    )
    assert isinstance(event, SessionUpdate)
    patch = event.session
    assert patch.max_output_tokens is None  # "inf"
    assert patch.turn_detection is None and patch.transcription is None  # null: off
    assert patch.instructions is UNSET and patch.voice is UNSET and patch.input_format is UNSET
    # null where null means nothing is the same as leaving the field out
    event = parse({"type": "session.update",
                   "session": {"type": "realtime", "instructions": None, "model": None}})
    assert isinstance(event, SessionUpdate)
    assert event.session.instructions is UNSET and event.session.model is UNSET


def test_session_update_transcription_shape() -> None:
    event = parse(
        {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "gpt-4o-transcribe", "prompt": "names"},
            "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
        }}}}
    )
    assert isinstance(event, SessionUpdate)
    patch = event.session
    assert patch.type is SessionType.TRANSCRIPTION and patch.input_format == PCM_24K
    assert patch.turn_detection == TurnDetectionPatch(VadType.SEMANTIC, eagerness="high")
    # a transcription session has no output and no instructions
    error = refused({"type": "session.update",
                     "session": {"type": "transcription", "instructions": "x"}})
    assert (error.code, error.param) == (ErrorCode.UNKNOWN_PARAMETER, "session.instructions")


def test_audio_events() -> None:
    pcm = bytes(range(200))
    event = parse({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
    assert event == InputAudioAppend(None, pcm)
    assert parse({"type": "input_audio_buffer.commit", "event_id": "x"}) == InputAudioCommit("x")
    assert parse({"type": "input_audio_buffer.clear"}) == InputAudioClear(None)
    assert parse({"type": "output_audio_buffer.clear"}) == OutputAudioClear(None)


def test_conversation_events() -> None:
    event = parse(
        {"type": "conversation.item.create", "previous_item_id": "item_1", "item": {
            "id": "mine", "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What are"},
                        {"type": "input_text", "text": "your hours?"}]}}
    )
    assert event == ItemCreate(None, "What are your hours?", "mine", "item_1")
    assert parse({"type": "conversation.item.retrieve", "item_id": "i"}) == ItemRetrieve(None, "i")
    assert parse({"type": "conversation.item.delete", "item_id": "i"}) == ItemDelete(None, "i")
    assert parse(
        {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0,
         "audio_end_ms": 1500}
    ) == ItemTruncate(None, "i", 0, 1500)


def test_response_events() -> None:
    assert parse({"type": "response.create"}) == ResponseCreate(None)
    event = parse(
        {"type": "response.create", "event_id": "r", "response": {
            "instructions": "Shorter.", "output_modalities": ["audio"], "max_output_tokens": 50,
            "conversation": "auto", "metadata": {"topic": "hours"},
            "audio": {"output": {"voice": "echo", "format": {"type": "audio/pcmu"}}},
            "tools": [], "tool_choice": "none"}}
    )
    assert isinstance(event, ResponseCreate)
    options = event.options
    assert (options.instructions, options.modality, options.max_output_tokens) == (
        "Shorter.", Modality.AUDIO, 50,
    )
    assert (options.voice, options.output_format) == ("echo", PCMU_8K)
    assert dict(options.metadata) == {"topic": "hours"}
    assert parse({"type": "response.cancel"}) == ResponseCancel(None)
    assert parse({"type": "response.cancel", "response_id": "resp_1"}) == ResponseCancel(
        None, "resp_1"
    )


def test_every_client_event_type_is_parsed() -> None:
    assert set(CLIENT_EVENT_TYPES) == {
        "session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
        "input_audio_buffer.clear", "output_audio_buffer.clear", "conversation.item.create",
        "conversation.item.retrieve", "conversation.item.truncate", "conversation.item.delete",
        "response.create", "response.cancel",
    }


@pytest.mark.parametrize(
    ("event", "code", "param"),
    [
        ("not json", ErrorCode.INVALID_JSON, None),
        ("[1, 2]", ErrorCode.INVALID_EVENT, None),
        ({"event_id": "e"}, ErrorCode.MISSING_PARAMETER, "type"),
        ({"type": 7}, ErrorCode.INVALID_TYPE, "type"),
        ({"type": "session.create"}, ErrorCode.UNKNOWN_EVENT, "type"),
        ({"type": "transcription_session.update", "session": {}}, ErrorCode.UNKNOWN_EVENT, "type"),
        ({"type": "input_audio_buffer.commit", "extra": 1}, ErrorCode.UNKNOWN_PARAMETER, "extra"),
        ({"type": "input_audio_buffer.append"}, ErrorCode.MISSING_PARAMETER, "audio"),
        ({"type": "input_audio_buffer.append", "audio": "!!"}, ErrorCode.INVALID_VALUE, "audio"),
        ({"type": "input_audio_buffer.append", "audio": ""}, ErrorCode.INVALID_VALUE, "audio"),
        ({"type": "session.update"}, ErrorCode.MISSING_PARAMETER, "session"),
        ({"type": "session.update", "session": {}}, ErrorCode.MISSING_PARAMETER, "session.type"),
        ({"type": "session.update", "session": {"type": "realtime", "voice": "x"}},
         ErrorCode.UNKNOWN_PARAMETER, "session.voice"),
        ({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 0}},
         ErrorCode.INVALID_VALUE, "session.max_output_tokens"),
        ({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 5000}},
         ErrorCode.INVALID_VALUE, "session.max_output_tokens"),
        ({"type": "session.update", "session": {"type": "realtime",
                                                "output_modalities": ["audio", "text"]}},
         ErrorCode.INVALID_VALUE, "session.output_modalities"),
        ({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 16000}}}}},
         ErrorCode.INVALID_VALUE, "session.audio.input.format.rate"),
        ({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "format": {"type": "audio/opus"}}}}},
         ErrorCode.INVALID_VALUE, "session.audio.input.format.type"),
        ({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": {"type": "server_vad", "threshold": 1.5}}}}},
         ErrorCode.INVALID_VALUE, "session.audio.input.turn_detection.threshold"),
        ({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": {"type": "server_vad", "silence_duration_ms": "500"}}}}},
         ErrorCode.INVALID_TYPE, "session.audio.input.turn_detection.silence_duration_ms"),
        ({"type": "conversation.item.truncate", "item_id": "i", "content_index": 0},
         ErrorCode.MISSING_PARAMETER, "audio_end_ms"),
        ({"type": "conversation.item.truncate", "item_id": "i", "content_index": 0,
          "audio_end_ms": -1}, ErrorCode.INVALID_VALUE, "audio_end_ms"),
        ({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                       "content": [{"type": "input_text",
                                                                    "text": "  "}]}},
         ErrorCode.INVALID_VALUE, "item.content"),
        ({"type": "response.cancel", "event_id": 3}, ErrorCode.INVALID_TYPE, "event_id"),
    ],
)
def test_invalid_events(event: dict[str, object] | str, code: ErrorCode, param: str | None) -> None:
    error = refused(event)
    assert (error.code, error.param) == (code, param)
    assert error.message


@pytest.mark.parametrize(
    ("event", "param"),
    [
        ({"type": "session.update", "session": {"type": "realtime", "tools": [
            {"type": "function", "name": "get_weather", "parameters": {}}]}}, "session.tools"),
        ({"type": "session.update", "session": {"type": "realtime", "tool_choice": "required"}},
         "session.tool_choice"),
        ({"type": "session.update", "session": {"type": "realtime",
                                                "prompt": {"id": "pmpt_1"}}}, "session.prompt"),
        ({"type": "session.update", "session": {
            "type": "realtime", "include": ["item.input_audio_transcription.logprobs"]}},
         "session.include"),
        ({"type": "session.update", "session": {"type": "realtime", "audio": {"output": {
            "speed": 1.2}}}}, "session.audio.output.speed"),
        ({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": {"type": "semantic_vad", "interrupt_response": False}}}}},
         "session.audio.input.turn_detection.interrupt_response"),
        ({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}}},
         "session.audio.input.turn_detection.idle_timeout_ms"),
        ({"type": "conversation.item.create", "item": {"type": "function_call_output",
                                                       "call_id": "c", "output": "{}"}},
         "item.type"),
        ({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                       "content": [{"type": "input_image",
                                                                    "image_url": "data:"}]}},
         "item.content[0].type"),
        ({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                       "content": [{"type": "input_audio",
                                                                    "audio": "AAAA"}]}},
         "item.content[0].type"),
        ({"type": "conversation.item.create", "item": {"type": "message", "role": "system",
                                                       "content": [{"type": "input_text",
                                                                    "text": "x"}]}},
         "item.role"),
        ({"type": "response.create", "response": {"conversation": "none"}},
         "response.conversation"),
        ({"type": "response.create", "response": {"tools": [{"type": "function", "name": "f"}]}},
         "response.tools"),
        ({"type": "response.create", "response": {"input": []}}, "response.input"),
    ],
)
def test_unsupported_features_are_refused(event: dict[str, object], param: str) -> None:
    error = refused({**event, "event_id": "evt_9"})
    assert (error.code, error.param, error.event_id) == (ErrorCode.UNSUPPORTED, param, "evt_9")
    assert "not supported" in error.message


def test_errors_carry_the_client_event_id_and_the_documented_shape() -> None:
    error = refused({"type": "no.such.event", "event_id": "client_42"})
    assert error.event_id == "client_42"
    assert error.to_dict() == {
        "type": "invalid_request_error",
        "code": "unknown_event_type",
        "message": error.message,
        "param": "type",
        "event_id": "client_42",
    }
    # A huge unknown type is cut in the message.
    error = refused({"type": "x" * 10000})
    assert len(error.message) < 1000
