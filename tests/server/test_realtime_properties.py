"""Property tests of the Realtime parser: nothing but the documented error escapes, valid
events round-trip, every merged configuration is one the SDK parses, input framing."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from realtime_sdk import sdk_event

from voicegate.core.codec import FRAME_UNIT_MS, AudioFormat, Encoding
from voicegate.server.protocols.native_events import (
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
from voicegate.server.protocols.realtime_audio import InputFramer
from voicegate.server.protocols.realtime_config import (
    OPENAI_VOICES,
    SessionType,
    TurnDefaults,
    VoiceCatalog,
    apply_patch,
    default_config,
)
from voicegate.server.protocols.realtime_events import (
    CLIENT_EVENT_TYPES,
    ClientEvent,
    InputAudioAppend,
    ItemCreate,
    ItemTruncate,
    ResponseCancel,
    SessionUpdate,
    parse_client_event,
)
from voicegate.server.protocols.realtime_fields import ErrorCode, RealtimeError
from voicegate.server.protocols.realtime_server_events import ServerEvents
from voicegate.server.protocols.realtime_session import RealtimeConversation, Send

PROFILE = settings(max_examples=150)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
# Objects that look like real events, with fields right, wrong or unknown.
known_names = st.sampled_from([
    "type", "event_id", "session", "audio", "input", "output", "format", "rate", "voice",
    "turn_detection", "threshold", "silence_duration_ms", "transcription", "model", "item",
    "role", "content", "text", "item_id", "audio_end_ms", "content_index", "response",
    "tools", "output_modalities", "max_output_tokens", "instructions", "metadata", "x",
])
near_values = st.recursive(
    st.sampled_from([
        *CLIENT_EVENT_TYPES,
        "realtime", "transcription", "server_vad", "semantic_vad", "audio/pcm", "audio/pcmu",
        "message", "user", "input_text", "input_image", "inf", "audio", "text", "AAAA", "",
    ])
    | st.sampled_from([24000, 8000, 0, -1, 0.5, 4096, 4097, True])
    | json_scalars,
    lambda children: st.dictionaries(known_names, children, max_size=5)
    | st.lists(children, max_size=3),
    max_leaves=25,
)
near_events = st.fixed_dictionaries(
    {"type": st.sampled_from([*CLIENT_EVENT_TYPES, "nope"])},
    optional={name: near_values for name in (
        "event_id", "session", "audio", "item", "item_id", "audio_end_ms", "content_index",
        "response", "response_id", "previous_item_id", "x",
    )},
)

CATALOG = VoiceCatalog(("joe",))
TURNS = TurnDefaults()


def outcome(text: str | bytes) -> ClientEvent | RealtimeError:
    try:
        return parse_client_event(text)
    except RealtimeError as error:
        assert isinstance(error.code, ErrorCode) and error.message
        return error


@PROFILE
@given(json_values)
def test_any_json_gives_an_event_or_the_documented_error(value: object) -> None:
    outcome(json.dumps(value))


@PROFILE
@given(st.text() | st.binary())
def test_any_text_or_bytes_gives_an_event_or_the_documented_error(text: str | bytes) -> None:
    outcome(text)


@PROFILE
@given(near_events)
def test_near_events_give_an_event_or_the_documented_error(event: dict[str, object]) -> None:
    result = outcome(json.dumps(event))
    event_id = event.get("event_id")
    if isinstance(result, RealtimeError):
        if isinstance(event_id, str) and len(event_id) <= 64 and result.param != "event_id":
            assert result.event_id == event_id
        return
    if not isinstance(result, SessionUpdate):
        return
    # Whatever update parses merges into a configuration the SDK parses, or is refused.
    config = default_config(SessionType.REALTIME, "m", TURNS, CATALOG)
    try:
        config = apply_patch(config, result.session, turns=TURNS, catalog=CATALOG)
    except RealtimeError:
        return
    events = ServerEvents()
    sdk_event(events.session_updated(config.to_json(events.ids.session_id)))


ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=64)


@PROFILE
@given(st.binary(min_size=1, max_size=2000), st.none() | ids)
def test_append_round_trips(audio: bytes, event_id: str | None) -> None:
    event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}
    if event_id is not None:
        event["event_id"] = event_id
    assert parse_client_event(json.dumps(event)) == InputAudioAppend(event_id, audio)


@PROFILE
@given(
    st.lists(st.text(min_size=1, max_size=100).filter(str.strip), min_size=1, max_size=3),
    st.none() | ids,
    st.none() | ids,
)
def test_text_items_round_trip(texts: list[str], item_id: str | None, previous: str | None) -> None:
    item: dict[str, object] = {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": t} for t in texts],
    }
    if item_id is not None:
        item["id"] = item_id
    event = {"type": "conversation.item.create", "item": item, "previous_item_id": previous}
    assert parse_client_event(json.dumps(event)) == ItemCreate(
        None, " ".join(texts), item_id, previous
    )


@PROFILE
@given(ids, st.integers(min_value=0, max_value=2**53), st.none() | ids)
def test_truncate_and_cancel_round_trip(item_id: str, end_ms: int, response_id: str | None) -> None:
    event = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
             "audio_end_ms": end_ms}
    assert parse_client_event(json.dumps(event)) == ItemTruncate(None, item_id, 0, end_ms)
    cancel = {"type": "response.cancel", "response_id": response_id}
    assert parse_client_event(json.dumps(cancel)) == ResponseCancel(None, response_id)


@PROFILE
@given(
    st.sampled_from(["audio/pcm", "audio/pcmu", "audio/pcma"]),
    st.sampled_from(["joe", *OPENAI_VOICES]),
    st.floats(min_value=0.0, max_value=1.0),
    st.integers(min_value=0, max_value=10000),
    st.booleans(),
    st.text(max_size=200),
    st.one_of(st.just("inf"), st.integers(min_value=1, max_value=4096)),
)
def test_valid_session_updates_round_trip_through_the_effective_config(  # noqa: PLR0917
    fmt: str, voice: str, threshold: float, silence: int, create: bool, instructions: str,
    tokens: int | str,
) -> None:
    session = {
        "type": "realtime", "instructions": instructions, "max_output_tokens": tokens,
        "audio": {
            "input": {"format": {"type": fmt}, "turn_detection": {
                "type": "server_vad", "threshold": threshold, "silence_duration_ms": silence,
                "create_response": create}},
            "output": {"format": {"type": fmt}, "voice": voice},
        },
    }
    event = parse_client_event(json.dumps({"type": "session.update", "session": session}))
    assert isinstance(event, SessionUpdate)
    base = default_config(SessionType.REALTIME, "m", TURNS, CATALOG)
    config = apply_patch(base, event.session, turns=TURNS, catalog=CATALOG)
    reported = config.to_json("sess_x")
    audio = reported["audio"]
    assert isinstance(audio, dict)
    assert audio["input"]["format"]["type"] == audio["output"]["format"]["type"] == fmt
    assert audio["input"]["turn_detection"]["threshold"] == threshold
    assert audio["input"]["turn_detection"]["silence_duration_ms"] == silence
    assert audio["input"]["turn_detection"]["create_response"] is create
    assert audio["output"]["voice"] == voice
    assert reported["instructions"] == (instructions or None)
    assert reported["max_output_tokens"] == tokens


formats = st.builds(
    AudioFormat, st.sampled_from(list(Encoding)), st.sampled_from([8000, 16000, 24000, 48000])
)


@PROFILE
@given(formats, st.lists(st.binary(max_size=3000), max_size=12), st.integers(1, 5000),
       st.booleans())
def test_framer_passes_whole_units_in_order(
    fmt: AudioFormat, chunks: list[bytes], max_bytes: int, flush: bool
) -> None:
    framer = InputFramer(fmt, max_bytes)
    unit = fmt.frame_bytes(FRAME_UNIT_MS)
    out: list[bytes] = []
    for chunk in chunks:
        out += framer.append(chunk)
    received = b"".join(chunks)
    if flush:
        out += framer.flush()
        assert framer.pending_bytes == 0
    joined = b"".join(out)
    assert all(piece and len(piece) % unit == 0 and len(piece) <= framer.max_bytes
               for piece in out)
    assert joined[: len(received)] == received[: len(joined)]
    assert len(joined) + (0 if flush else framer.pending_bytes) >= len(received)
    assert framer.pending_bytes < unit
    assert framer.received_bytes == len(received)
    framer.clear()
    assert framer.pending_bytes == 0 and framer.flush() == []


# -- the conversation under any order of client and pipeline events -------------------

_turns = st.integers(min_value=1, max_value=2)
_client_steps = st.one_of(
    st.tuples(st.just("cancel")),
    st.tuples(st.just("append"), st.integers(min_value=1, max_value=6000)),
    st.tuples(st.sampled_from(["commit", "clear", "create", "cancel", "manual", "vad",
                               "transcribe", "retrieve"])),
    st.tuples(st.just("text"), st.sampled_from(["hello", "Opening hours?"])),
    st.tuples(st.just("truncate"), st.integers(min_value=0, max_value=200)),
)
_answer_steps = st.tuples(st.sampled_from(["started", "audio", "audio", "done"]), st.just(1))
_pipeline_steps = st.one_of(
    # weighted towards one turn's answer, so that its audio, cancels and ends meet
    _answer_steps,
    _answer_steps,
    _answer_steps,
    st.tuples(st.just("cancelled"), st.just(1), st.just("barge_in")),
    st.tuples(st.sampled_from(["speech_started", "speech_stopped"]), _turns),
    st.tuples(st.sampled_from(["partial", "final", "delta"]), _turns,
              st.sampled_from(["what", "what time", "Opening hours?", "hello"])),
    st.tuples(st.just("cancelled"), _turns, st.sampled_from(["barge_in", "shutdown", "x"])),
    st.tuples(st.just("mark"), _turns, st.integers(0, 100), st.integers(0, 20)),
)


def _client_event(conv: Any, step: tuple[Any, ...]) -> dict[str, object]:
    kind = step[0]
    if kind == "append":
        return {"type": "input_audio_buffer.append",
                "audio": base64.b64encode(bytes(step[1])).decode()}  # fmt: skip
    if kind in ("commit", "clear"):
        return {"type": f"input_audio_buffer.{kind}"}
    if kind == "create":
        return {"type": "response.create"}
    if kind == "cancel":
        return {"type": "response.cancel"}
    if kind in ("manual", "vad", "transcribe"):
        audio_input: dict[str, object] = (
            {"turn_detection": None} if kind == "manual"
            else {"turn_detection": {"type": "server_vad"}} if kind == "vad"
            else {"transcription": {"model": "whisper-1"}}
        )  # fmt: skip
        return {"type": "session.update",
                "session": {"type": "realtime", "audio": {"input": audio_input}}}  # fmt: skip
    if kind == "text":
        return {"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": step[1]}]}}  # fmt: skip
    item = conv.order[-1] if conv.order else "none"
    if kind == "retrieve":
        return {"type": "conversation.item.retrieve", "item_id": item}
    return {"type": "conversation.item.truncate", "item_id": item, "content_index": 0,
            "audio_end_ms": step[1]}  # fmt: skip


def _pipeline(conv: Any, step: tuple[Any, ...]) -> list[Any]:
    kind, turn = step[0], step[1]
    if kind == "speech_started":
        return conv.pipeline_event(SpeechStarted(turn, 100 * turn))
    if kind == "speech_stopped":
        return conv.pipeline_event(SpeechStopped(turn, 100 * turn + 50))
    if kind == "started":
        return conv.pipeline_event(ResponseStarted(turn))
    if kind == "audio":
        return conv.answer_audio(turn, bytes(960))
    if kind == "done":
        latency = TurnLatency(300.0, 1.0, 1.0, 1.0, 1.0, 1.0)
        return conv.pipeline_event(ResponseDone(turn, "We open at nine.", 20.0, False, latency))
    if kind == "partial":
        return conv.pipeline_event(TranscriptPartial(turn, step[2]))
    if kind == "final":
        return conv.pipeline_event(TranscriptFinal(turn, step[2]))
    if kind == "delta":
        return conv.pipeline_event(ResponseTextDelta(turn, step[2]))
    if kind == "cancelled":
        return conv.pipeline_event(ResponseCancelled(turn, step[2]))
    conv.answer_mark(turn, step[2], step[3])
    return []


@settings(max_examples=150)
@given(st.lists(st.tuples(st.sampled_from([True, False, False]), _client_steps, _pipeline_steps),
                min_size=4, max_size=30))
def test_any_sequence_keeps_the_conversation_consistent(
    steps: list[tuple[bool, tuple[Any, ...], tuple[Any, ...]]],
) -> None:
    conv = RealtimeConversation(model="m", turns=TURNS, catalog=CATALOG)
    sent = [a.text for a in conv.start()]
    for from_client, client_step, pipeline_step in steps:
        if from_client:
            actions = conv.client_text(json.dumps(_client_event(conv, client_step)))
        else:
            actions = _pipeline(conv, pipeline_step)
        sent += [a.text for a in actions if isinstance(a, Send)]
    open_responses: set[str] = set()
    finished: set[str] = set()
    for text in sent:
        event = json.loads(text)
        sdk_event(event)
        kind = event["type"]
        if kind == "response.created":
            assert not open_responses, "two responses at once"
            open_responses.add(event["response"]["id"])
        elif kind == "response.done":
            rid = event["response"]["id"]
            assert rid in open_responses
            open_responses.discard(rid)
            finished.add(rid)
        elif kind.startswith("response.") and "response_id" in event:
            # nothing of a response after its response.done (no audio of a cancelled one)
            assert event["response_id"] in open_responses, kind


@settings(max_examples=100)
@given(
    st.integers(min_value=0, max_value=5),
    st.sampled_from(["client", "barge_in", "none"]),
    st.integers(min_value=0, max_value=5),
    st.lists(_client_steps, max_size=4),
)
def test_nothing_of_a_cancelled_answer_follows_its_response_done(
    before: int, cancel: str, after: int, noise: list[tuple[Any, ...]]
) -> None:
    conv = RealtimeConversation(model="m", turns=TURNS, catalog=CATALOG)
    actions = _pipeline(conv, ("started", 1))
    for _ in range(before):
        actions += _pipeline(conv, ("audio", 1))
    for step in noise:  # whatever else the client says meanwhile
        if step[0] != "cancel":
            actions += conv.client_text(json.dumps(_client_event(conv, step)))
    if cancel == "client":
        actions += conv.client_text('{"type": "response.cancel"}')
    elif cancel == "barge_in":
        actions += _pipeline(conv, ("speech_started", 2))
        actions += _pipeline(conv, ("cancelled", 1, "barge_in"))
    for _ in range(after):
        actions += _pipeline(conv, ("audio", 1))
    actions += _pipeline(conv, ("done", 1))
    events = [json.loads(a.text) for a in actions if isinstance(a, Send)]
    kinds = [e["type"] for e in events]
    assert kinds.count("response.created") == kinds.count("response.done") == 1
    done_at = kinds.index("response.done")
    assert kinds[done_at + 1 :].count("response.output_audio.delta") == 0
    deltas = kinds.count("response.output_audio.delta")
    assert deltas == before + (after if cancel == "none" else 0)
    status = events[done_at]["response"]["status"]
    assert status == ("completed" if cancel == "none" else "cancelled")
