"""The Realtime conversation state machine: client events and pipeline events in, server
events (each checked against the SDK's types) and pipeline actions out."""

from __future__ import annotations

import base64
import json

import pytest
from realtime_sdk import sdk_event

from voicegate.server.protocols.native_events import (
    ErrorEvent,
    ResponseCancelled,
    ResponseDone,
    ResponseStarted,
    ResponseTextDelta,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
    TurnLatency,
)
from voicegate.server.protocols.realtime_config import (
    Modality,
    SessionType,
    TurnDefaults,
    VoiceCatalog,
)
from voicegate.server.protocols.realtime_session import (
    Action,
    AddText,
    CancelResponse,
    ClearInput,
    CommitInput,
    CreateResponse,
    ForwardAudio,
    OpenPipeline,
    RealtimeConversation,
    Send,
    TruncateAnswer,
    UpdatePipeline,
)

LATENCY = TurnLatency(300.0, 1.5, 12.25, 0.0, 20.0, 0.125)
FRAME = bytes(960)  # 20 ms of 24 kHz PCM16


def conversation(session_type: SessionType = SessionType.REALTIME) -> RealtimeConversation:
    return RealtimeConversation(
        model="voicegate", turns=TurnDefaults(), catalog=VoiceCatalog(("joe",)),
        session_type=session_type,
    )


def sent(actions: list[Action]) -> list[dict[str, object]]:
    """The server events among ``actions``, each validated by the SDK."""
    events = [json.loads(a.text) for a in actions if isinstance(a, Send)]
    for event in events:
        sdk_event(event)
    return events


def types(actions: list[Action]) -> list[str]:
    return [str(e["type"]) for e in sent(actions)]


def others(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Send)]


def client(conv: RealtimeConversation, **event: object) -> list[Action]:
    return conv.client_text(json.dumps(event))


def append(conv: RealtimeConversation, audio: bytes) -> list[Action]:
    return client(conv, type="input_audio_buffer.append", audio=base64.b64encode(audio).decode())


def error_of(actions: list[Action]) -> dict[str, object]:
    (event,) = sent(actions)
    assert event["type"] == "error"
    error = event["error"]
    assert isinstance(error, dict)
    return error


def answer(conv: RealtimeConversation, turn: int, text: str = "We open at nine.") -> list[Action]:
    actions = conv.pipeline_event(ResponseStarted(turn))
    actions += conv.pipeline_event(ResponseTextDelta(turn, text))
    actions += conv.answer_audio(turn, FRAME)
    actions += conv.answer_audio(turn, FRAME)
    actions += conv.pipeline_event(ResponseDone(turn, text, 40.0, True, LATENCY))
    return actions


def test_session_created_first() -> None:
    conv = conversation()
    (event,) = sent(conv.start())
    assert event["type"] == "session.created"
    session = event["session"]
    assert isinstance(session, dict) and session["id"] == conv.events.ids.session_id


def test_a_spoken_turn_with_server_vad() -> None:
    conv = conversation()
    update = client(conv, type="session.update", session={
        "type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}})
    assert types(update) == ["session.updated"] and not others(update)
    actions = append(conv, FRAME * 3 + b"\x00" * 100)
    assert isinstance(actions[0], OpenPipeline)
    assert actions[1:] == [ForwardAudio(FRAME * 3)]  # whole 10 ms units; the rest waits
    flow = conv.pipeline_event(SpeechStarted(1, 500))
    flow += conv.pipeline_event(TranscriptPartial(1, "what time"))
    flow += conv.pipeline_event(TranscriptPartial(1, "what time does"))
    flow += conv.pipeline_event(TranscriptPartial(1, "what tim"))  # a revision: no delta
    flow += conv.pipeline_event(SpeechStopped(1, 2670))
    flow += conv.pipeline_event(TranscriptFinal(1, "What time does it open?"))
    flow += answer(conv, 1)
    events = sent(flow)
    assert [e["type"] for e in events] == [
        "input_audio_buffer.speech_started",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    user = events[0]["item_id"]
    assert all(e.get("item_id") == user for e in events[:5])
    assert [e["delta"] for e in events[1:3]] == ["what time", " does"]
    assert events[6]["transcript"] == "What time does it open?"
    assert events[6]["usage"] == {"type": "duration", "seconds": 2.17}
    done = events[-1]["response"]
    assert isinstance(done, dict) and done["status"] == "completed"
    assert done["metadata"]["voicegate.latency_ms.voice_to_voice"] == "333.875"  # type: ignore[index]
    assert done["output"][0]["content"][0]["transcript"] == "We open at nine."  # type: ignore[index]
    assert base64.b64decode(str(events[13]["delta"])) == FRAME


def test_barge_in_cancels_the_answer_and_no_audio_of_it_follows() -> None:
    conv = conversation()
    append(conv, FRAME)
    conv.pipeline_event(SpeechStarted(1, 0))
    conv.pipeline_event(SpeechStopped(1, 1000))
    started = conv.pipeline_event(ResponseStarted(1)) + conv.answer_audio(1, FRAME)
    assert types(started)[-1] == "response.output_audio.delta"
    flow = conv.pipeline_event(SpeechStarted(2, 1500))
    flow += conv.pipeline_event(ResponseCancelled(1, "barge_in"))
    flow += conv.answer_audio(1, FRAME)
    events = sent(flow)
    assert events[0]["type"] == "input_audio_buffer.speech_started"
    assert events[-1]["type"] == "response.done"
    response = events[-1]["response"]
    assert isinstance(response, dict)
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert "response.output_audio.delta" not in [e["type"] for e in events]
    # the new turn gets its own item, announced once
    assert events[0]["item_id"] != conv.by_turn[1].id
    assert [e["type"] for e in events].count("input_audio_buffer.speech_started") == 1


def test_a_barge_in_reported_before_the_new_speech_announces_it_first() -> None:
    conv = conversation()
    append(conv, FRAME * 50)
    conv.pipeline_event(SpeechStarted(1, 0))
    conv.pipeline_event(SpeechStopped(1, 600))
    conv.pipeline_event(ResponseStarted(1))
    events = sent(conv.pipeline_event(ResponseCancelled(1, "barge_in")))
    assert events[0]["type"] == "input_audio_buffer.speech_started"
    assert events[0]["audio_start_ms"] == 1000  # where the caller's audio stood
    assert events[-1]["type"] == "response.done"
    # the speech start that follows is the same item, not announced again
    assert conv.pipeline_event(SpeechStarted(2, 900)) == []
    assert conv.by_turn[2].id == events[0]["item_id"]
    stopped = sent(conv.pipeline_event(SpeechStopped(2, 1500)))
    assert stopped[0]["item_id"] == events[0]["item_id"]


def test_client_cancel_finishes_at_once_and_drops_the_rest_of_the_turn() -> None:
    conv = conversation()
    append(conv, FRAME)
    conv.pipeline_event(SpeechStopped(1, 1000))
    created = sent(conv.pipeline_event(ResponseStarted(1)))
    rid = created[0]["response"]["id"]  # type: ignore[index]
    wrong = client(conv, type="response.cancel", response_id="resp_other", event_id="c1")
    assert error_of(wrong)["code"] == "response_cancel_not_active"
    actions = client(conv, type="response.cancel", response_id=rid)
    assert others(actions) == [CancelResponse(1)]
    assert types(actions)[-1] == "response.done"
    later = conv.answer_audio(1, FRAME) + conv.pipeline_event(ResponseTextDelta(1, "x"))
    later += conv.pipeline_event(ResponseDone(1, "x", 20.0, False, LATENCY))
    assert later == []
    assert error_of(client(conv, type="response.cancel"))["code"] == "response_cancel_not_active"


def test_manual_commit_and_response_create() -> None:
    conv = conversation()
    client(conv, type="session.update", session={
        "type": "realtime", "audio": {"input": {"turn_detection": None}}})
    short = append(conv, FRAME * 2)
    empty = client(conv, type="input_audio_buffer.commit", event_id="c2")
    error = error_of(empty)
    assert (error["code"], error["event_id"]) == ("input_audio_buffer_commit_empty", "c2")
    assert isinstance(short[0], OpenPipeline) and short[0].options.turn_detection == "manual"
    append(conv, FRAME * 5 + b"\x01")
    # the VAD still reports speech; with manual turns none of it reaches the client
    assert conv.pipeline_event(SpeechStarted(1, 100)) == []
    commit = client(conv, type="input_audio_buffer.commit")
    assert others(commit) == [ForwardAudio(b"\x01" + bytes(479)), CommitInput()]
    assert types(commit) == ["input_audio_buffer.committed", "conversation.item.added"]
    item = sent(commit)[0]["item_id"]
    assert conv.pipeline_event(SpeechStopped(1, 240)) == []
    final = sent(conv.pipeline_event(TranscriptFinal(1, "Hello there.")))
    assert [e["type"] for e in final] == ["conversation.item.done"]
    assert final[0]["item"]["id"] == item  # type: ignore[index]
    assert final[0]["item"]["content"][0]["transcript"] == "Hello there."  # type: ignore[index]
    ask = client(conv, type="response.create", response={"instructions": "Briefly."})
    assert others(ask) == [CreateResponse(instructions="Briefly.")]
    own = conv.response_options(CreateResponse(instructions="Briefly."))
    assert own is not None and own.instructions == "Briefly."
    assert own.turn_detection == "manual" and own.respond == "audio"
    text = conv.response_options(CreateResponse(modality=Modality.TEXT, max_output_tokens=5))
    assert text is not None
    assert (text.respond, text.audio_marks, text.max_output_tokens) == ("text", False, 5)
    assert conv.response_options(CreateResponse()) is None
    again = client(conv, type="response.create")
    assert error_of(again)["code"] == "conversation_already_has_active_response"
    assert types(answer(conv, 1))[-1] == "response.done"


def test_commit_before_the_vad_reports_binds_to_the_next_turn() -> None:
    conv = conversation()
    client(conv, type="session.update", session={
        "type": "realtime", "audio": {"input": {"turn_detection": None}}})
    append(conv, FRAME * 10)
    item = sent(client(conv, type="input_audio_buffer.commit"))[0]["item_id"]
    final = sent(conv.pipeline_event(TranscriptFinal(1, "Yes.")))
    assert final[-1]["item"]["id"] == item  # type: ignore[index]


def test_text_items_and_their_answer() -> None:
    conv = conversation()
    actions = client(conv, type="conversation.item.create", item={
        "type": "message", "role": "user", "id": "mine",
        "content": [{"type": "input_text", "text": "Opening hours?"}]})
    assert isinstance(actions[0], OpenPipeline)
    assert others(actions)[1:] == [AddText("Opening hours?")]
    assert types(actions) == ["conversation.item.added", "conversation.item.done"]
    taken = client(conv, type="conversation.item.create", item={
        "type": "message", "role": "user", "id": "mine",
        "content": [{"type": "input_text", "text": "Again"}]})
    assert error_of(taken)["param"] == "item.id"
    # The caller speaks before the typed turn's transcript is back: the speech is a new
    # item, the transcript still finds the typed one.
    spoken = sent(conv.pipeline_event(SpeechStarted(2, 100)))
    assert spoken[0]["item_id"] != "mine"
    assert conv.pipeline_event(TranscriptFinal(1, "Opening hours?")) == []
    assert conv.by_turn[1].id == "mine"
    assert others(client(conv, type="response.create")) == [CreateResponse()]
    events = sent(answer(conv, 1))
    # the speech is not in the conversation until committed: the answer follows "mine"
    assert events[2]["previous_item_id"] == "mine"  # conversation.item.added of the answer
    retrieved = sent(client(conv, type="conversation.item.retrieve", item_id="mine"))
    assert retrieved[0]["item"]["content"][0]["text"] == "Opening hours?"  # type: ignore[index]


def test_truncate_after_an_interruption() -> None:
    conv = conversation()
    append(conv, FRAME)
    conv.pipeline_event(SpeechStopped(1, 500))
    events = sent(answer(conv, 1))
    item = events[-1]["response"]["output"][0]["id"]  # type: ignore[index]
    # "We open at nine." spoken as two clauses: "We open " by 20 ms, the rest by 40 ms.
    conv.answer_mark(1, 20, 8)
    conv.answer_mark(1, 40, 16)
    actions = client(conv, type="conversation.item.truncate", item_id=item, content_index=0,
                     audio_end_ms=30)
    assert others(actions) == [TruncateAnswer(1, 30, 8)]  # the clause played to its end
    assert types(actions) == ["conversation.item.truncated"]
    retrieved = sent(client(conv, type="conversation.item.retrieve", item_id=item))
    assert retrieved[0]["item"]["content"][0]["transcript"] == "We open "  # type: ignore[index]
    early = client(conv, type="conversation.item.truncate", item_id=item, content_index=0,
                   audio_end_ms=10)
    assert others(early) == [TruncateAnswer(1, 10, 0)]
    beyond = client(conv, type="conversation.item.truncate", item_id=item, content_index=0,
                    audio_end_ms=5000)
    assert error_of(beyond)["code"] == "invalid_value"
    unknown = client(conv, type="conversation.item.truncate", item_id="nope", content_index=0,
                     audio_end_ms=0)
    assert error_of(unknown)["code"] == "item_not_found"


def test_transcription_session_streams_transcripts_and_never_answers() -> None:
    conv = conversation(SessionType.TRANSCRIPTION)
    (created,) = sent(conv.start())
    assert created["session"]["type"] == "transcription"  # type: ignore[index]
    client(conv, type="session.update", session={
        "type": "transcription", "audio": {"input": {"transcription": {"model": "m"}}}})
    opened = append(conv, FRAME)
    assert isinstance(opened[0], OpenPipeline) and opened[0].options.respond == "none"
    flow = conv.pipeline_event(SpeechStarted(1, 0))
    flow += conv.pipeline_event(TranscriptPartial(1, "hello"))
    flow += conv.pipeline_event(SpeechStopped(1, 800))
    flow += conv.pipeline_event(TranscriptFinal(1, "hello there."))
    flow += conv.pipeline_event(ResponseStarted(1))
    assert types(flow) == [
        "input_audio_buffer.speech_started",
        "conversation.item.input_audio_transcription.delta",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    assert error_of(client(conv, type="response.create"))["code"] == "unsupported_feature"


def test_session_updates_after_audio() -> None:
    conv = conversation()
    append(conv, FRAME)
    changed = client(conv, type="session.update", session={"type": "realtime",
                                                           "instructions": "Be brief."})
    assert isinstance(changed[0], UpdatePipeline)
    assert changed[0].options.instructions == "Be brief."
    same = client(conv, type="session.update", session={"type": "realtime"})
    assert types(same) == ["session.updated"] and not others(same)
    fmt = client(conv, type="session.update", session={
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}})
    assert error_of(fmt)["code"] == "session_type_locked"
    kind = client(conv, type="session.update", session={"type": "transcription"})
    assert error_of(kind)["code"] == "session_type_locked"
    conv.pipeline_event(SpeechStopped(1, 100))
    answer(conv, 1)
    voice = client(conv, type="session.update", session={
        "type": "realtime", "audio": {"output": {"voice": "alloy"}}})
    assert error_of(voice)["code"] == "voice_locked"


def test_refused_and_unknown_events_leave_the_session_working() -> None:
    conv = conversation()
    for event in (
        {"type": "conversation.item.delete", "item_id": "x", "event_id": "d1"},
        {"type": "output_audio_buffer.clear", "event_id": "d2"},
        {"type": "response.create", "response": {"tools": [{"type": "function"}]},
         "event_id": "d3"},
        {"type": "nope", "event_id": "d4"},
    ):
        error = error_of(conv.client_text(json.dumps(event)))
        assert error["event_id"] == event["event_id"]
        assert error["code"] in ("unsupported_feature", "unknown_event_type")
    assert error_of(conv.client_text("{"))["code"] == "invalid_json"
    assert error_of(conv.client_binary())["code"] == "invalid_event"
    cleared = client(conv, type="input_audio_buffer.clear")
    assert others(cleared) == [ClearInput()] and types(cleared) == ["input_audio_buffer.cleared"]
    assert types(append(conv, FRAME)) == []  # still taking audio


@pytest.mark.parametrize(
    ("code", "error_type"),
    [("slow_client", "invalid_request_error"), ("internal_error", "server_error"),
     ("bad_input", "server_error"), ("something_new", "server_error")],
)
def test_node_errors(code: str, error_type: str) -> None:
    conv = conversation()
    error = error_of(conv.pipeline_event(ErrorEvent(code, "why", fatal=False)))
    assert error["type"] == error_type
    assert error["code"] == (code if code != "something_new" else "internal_error")
