"""Every Realtime server event voicegate builds is one the ``openai`` SDK parses."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from openai.types.realtime import (
    ConversationItemAdded,
    ConversationItemInputAudioTranscriptionCompletedEvent,
    RealtimeErrorEvent,
    ResponseAudioDeltaEvent,
    ResponseDoneEvent,
    SessionCreatedEvent,
)
from openai.types.realtime.realtime_session_create_request import RealtimeSessionCreateRequest
from openai.types.realtime.realtime_transcription_session_create_request import (
    RealtimeTranscriptionSessionCreateRequest,
)
from realtime_sdk import sdk_event

from voicegate.server.protocols.native_events import TurnLatency
from voicegate.server.protocols.realtime_config import (
    PCMA_8K,
    PCMU_8K,
    SessionType,
    Transcription,
    TurnDefaults,
    VoiceCatalog,
    default_config,
)
from voicegate.server.protocols.realtime_fields import ErrorCode, RealtimeError
from voicegate.server.protocols.realtime_server_events import (
    CANCELLED,
    COMPLETED,
    LATENCY_PREFIX,
    IdSource,
    Modality,
    ServerEvents,
    Usage,
    assistant_item,
    encode,
    turn_metadata,
    user_audio_item,
    user_text_item,
)

CATALOG = VoiceCatalog(("joe",))
TURNS = TurnDefaults()
LATENCY = TurnLatency(300.0, 1.5, 12.25, 0.0, 20.0, 0.125)


def every_event(ev: ServerEvents) -> list[dict[str, object]]:
    """One of each event, with the values a session would give them."""
    realtime = default_config(SessionType.REALTIME, "voicegate", TURNS, CATALOG)
    transcription = default_config(SessionType.TRANSCRIPTION, "voicegate", TURNS, CATALOG)
    transcription = dataclasses.replace(
        transcription, transcription=Transcription("whisper-1", "en", None), turn_detection=None
    )
    text_mode = dataclasses.replace(realtime, modality=Modality.TEXT, output_format=PCMU_8K)
    user, answer, rid = ev.ids.item(), ev.ids.item(), ev.ids.response()
    response = {
        "modality": Modality.AUDIO, "output_format": realtime.output_format, "voice": "joe",
        "max_output_tokens": None,
    }
    done_item = assistant_item(answer, Modality.AUDIO, "We open at nine.", COMPLETED)
    return [
        ev.session_created(realtime.to_json(ev.ids.session_id)),
        ev.session_updated(text_mode.to_json(ev.ids.session_id)),
        ev.session_updated(transcription.to_json(ev.ids.session_id)),
        ev.error(RealtimeError(ErrorCode.UNKNOWN_EVENT, "unknown event type 'x'", "type", "e1")),
        ev.error(RealtimeError(ErrorCode.INVALID_JSON, "not JSON")),
        ev.rate_limits_updated([{"name": "requests", "limit": 4, "remaining": 3,
                                 "reset_seconds": 0.0}]),
        ev.speech_started(user, 500),
        ev.speech_stopped(user, 2670),
        ev.committed(user, None),
        ev.cleared(),
        ev.output_cleared(rid),
        ev.item_added(user_audio_item(user, None, "in_progress"), None),
        ev.item_done(user_audio_item(user, "What time?", "completed"), None),
        ev.item_added(user_text_item(ev.ids.item(), "Hello"), user),
        ev.item_retrieved(user_text_item(user, "Hello")),
        ev.item_truncated(answer, 640),
        ev.transcription_delta(user, "What "),
        ev.transcription_completed(user, "What time?", 2.17),
        ev.transcription_failed(user, RealtimeError(ErrorCode.INTERNAL_ERROR, "stt failed")),
        ev.response_created(ev.response_object(rid, "in_progress", **response)),  # type: ignore[arg-type]
        ev.output_item_added(rid, assistant_item(answer, Modality.AUDIO, None, "in_progress")),
        ev.item_added(assistant_item(answer, Modality.AUDIO, None, "in_progress"), user),
        ev.content_part_added(rid, answer, Modality.AUDIO),
        ev.audio_delta(rid, answer, b"\x01\x02" * 480),
        ev.transcript_delta(rid, answer, "We open "),
        ev.audio_done(rid, answer),
        ev.transcript_done(rid, answer, "We open at nine."),
        ev.content_part_done(rid, answer, Modality.AUDIO, "We open at nine."),
        ev.output_item_done(rid, done_item),
        ev.item_done(done_item, user),
        ev.response_done(
            ev.response_object(
                rid, COMPLETED, output=[done_item], usage=Usage(12, 0, 7, 0),
                metadata=turn_metadata(LATENCY, turn=1, audio_ms=1840.0, speculative=True),
                **response,  # type: ignore[arg-type]
            )
        ),
        ev.response_done(
            ev.response_object(rid, CANCELLED, reason="turn_detected", usage=Usage(), **response)  # type: ignore[arg-type]
        ),
        ev.content_part_added(rid, answer, Modality.TEXT),
        ev.text_delta(rid, answer, "We "),
        ev.text_done(rid, answer, "We open."),
        ev.content_part_done(rid, answer, Modality.TEXT, "We open."),
        ev.output_item_done(rid, assistant_item(answer, Modality.TEXT, "We open.", COMPLETED)),
        ev.response_created(
            ev.response_object(rid, "in_progress", modality=Modality.TEXT, output_format=PCMA_8K,
                               voice="joe", max_output_tokens=200)
        ),
    ]


def test_every_event_validates_against_the_sdk_types() -> None:
    events = every_event(ServerEvents(IdSource("abc123")))
    for event in events:
        model = sdk_event(json.loads(encode(event)))
        assert getattr(model, "type") == event["type"]  # noqa: B009
    # Each type of event the issue lists is among them.
    assert {e["type"] for e in events} >= {
        "session.created", "session.updated", "error", "rate_limits.updated",
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed", "input_audio_buffer.cleared",
        "conversation.item.added", "conversation.item.done",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "response.created", "response.output_item.added", "response.content_part.added",
        "response.output_audio.delta", "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done", "response.output_audio.done",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.done",
    }


def test_event_ids_are_unique_in_a_session_and_sessions_differ() -> None:
    a, b = ServerEvents(), ServerEvents()
    ids = [e["event_id"] for e in every_event(a)] + [e["event_id"] for e in every_event(a)]
    assert len(set(ids)) == len(ids)
    assert a.ids.session_id != b.ids.session_id
    assert len({a.ids.item(), a.ids.item(), a.ids.response(), a.ids.response()}) == 4
    with pytest.raises(ValueError, match="tag"):
        IdSource('a"b')


def test_session_created_carries_the_full_effective_configuration() -> None:
    ev = ServerEvents(IdSource("s1"))
    config = default_config(SessionType.REALTIME, "gpt-realtime", TURNS, CATALOG)
    model = sdk_event(ev.session_created(config.to_json(ev.ids.session_id)))
    assert isinstance(model, SessionCreatedEvent)
    session = model.session
    assert isinstance(session, RealtimeSessionCreateRequest)
    assert session.model == "gpt-realtime"
    assert session.output_modalities == ["audio"]
    assert session.max_output_tokens == "inf"
    assert session.audio is not None and session.audio.input is not None
    assert session.audio.output is not None
    assert session.audio.input.format is not None
    assert session.audio.input.format.type == "audio/pcm"
    assert getattr(session.audio.input.format, "rate", None) == 24000
    detection = session.audio.input.turn_detection
    assert detection is not None and detection.type == "server_vad"
    assert (detection.threshold, detection.prefix_padding_ms, detection.silence_duration_ms) == (
        TURNS.threshold, TURNS.prefix_padding_ms, TURNS.silence_duration_ms,
    )
    assert session.audio.output.voice == "joe"
    assert session.audio.input.transcription is None


def test_transcription_session_shape() -> None:
    ev = ServerEvents()
    config = dataclasses.replace(
        default_config(SessionType.TRANSCRIPTION, "m", TURNS, CATALOG),
        transcription=Transcription("gpt-4o-transcribe", "en", "names"),
    )
    model = sdk_event(ev.session_updated(config.to_json(ev.ids.session_id)))
    session = getattr(model, "session")  # noqa: B009
    assert isinstance(session, RealtimeTranscriptionSessionCreateRequest)
    assert session.audio is not None and session.audio.input is not None
    assert session.audio.input.transcription is not None
    assert session.audio.input.transcription.model == "gpt-4o-transcribe"


def test_error_event_has_the_documented_fields() -> None:
    ev = ServerEvents()
    error = RealtimeError(ErrorCode.UNSUPPORTED, "tools are not supported", "session.tools", "c7")
    model = sdk_event(ev.error(error))
    assert isinstance(model, RealtimeErrorEvent)
    assert model.error.type == "invalid_request_error"
    assert (model.error.code, model.error.param, model.error.event_id) == (
        "unsupported_feature", "session.tools", "c7",
    )
    assert model.error.message == "tools are not supported"


def test_audio_delta_text_is_the_same_event_as_the_dict() -> None:
    audio = bytes(range(256)) * 3
    a, b = ServerEvents(IdSource("t1")), ServerEvents(IdSource("t1"))
    fast = a.audio_delta_text("resp_x", "item_y", audio)
    assert json.loads(fast) == b.audio_delta("resp_x", "item_y", audio)
    model = sdk_event(json.loads(fast))
    assert isinstance(model, ResponseAudioDeltaEvent)
    assert base64.b64decode(model.delta) == audio


def test_response_done_carries_status_usage_and_the_turn_latency() -> None:
    ev = ServerEvents()
    rid, item = ev.ids.response(), ev.ids.item()
    done = assistant_item(item, Modality.AUDIO, "Nine.", COMPLETED)
    metadata = turn_metadata(LATENCY, turn=3, audio_ms=1840.0, speculative=False)
    model = sdk_event(
        ev.response_done(
            ev.response_object(
                rid, COMPLETED, modality=Modality.AUDIO, output_format=PCMU_8K, voice="joe",
                max_output_tokens=None, output=[done], usage=Usage(10, 0, 5, 0), metadata=metadata,
            )
        )
    )
    assert isinstance(model, ResponseDoneEvent)
    response = model.response
    assert response.status == "completed" and response.id == rid
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (10, 5)
    assert response.metadata is not None
    got = {k[len(LATENCY_PREFIX):]: float(v) for k, v in response.metadata.items()
           if k.startswith(LATENCY_PREFIX)}
    assert got == LATENCY.to_dict()
    assert got["voice_to_voice"] == pytest.approx(333.875)
    assert response.metadata["voicegate.turn"] == "3"
    assert all(len(k) <= 64 and len(v) <= 512 for k, v in response.metadata.items())
    cancelled = sdk_event(
        ev.response_done(
            ev.response_object(
                rid, CANCELLED, modality=Modality.AUDIO, output_format=PCMU_8K, voice="joe",
                max_output_tokens=None, reason="turn_detected",
            )
        )
    )
    assert isinstance(cancelled, ResponseDoneEvent)
    assert cancelled.response.status == "cancelled"
    assert cancelled.response.status_details is not None
    assert cancelled.response.status_details.reason == "turn_detected"


def test_items_and_transcripts() -> None:
    ev = ServerEvents()
    item = ev.ids.item()
    added = sdk_event(ev.item_added(user_audio_item(item, None, "in_progress"), None))
    assert isinstance(added, ConversationItemAdded)
    assert getattr(added.item, "role") == "user"  # noqa: B009
    completed = sdk_event(ev.transcription_completed(item, "What time is it?", 1.2345))
    assert isinstance(completed, ConversationItemInputAudioTranscriptionCompletedEvent)
    assert completed.transcript == "What time is it?"
    assert getattr(completed.usage, "seconds") == 1.234  # noqa: B009
