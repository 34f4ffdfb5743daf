"""The connection state machine (voicegate.server.protocols.native), driven without sockets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.core.codec import AudioFormat, Encoding
from voicegate.server.protocols.native import (
    Accept,
    Action,
    Close,
    CloseSession,
    ConnectionState,
    ForwardAudio,
    ForwardText,
    OpenSession,
    SendText,
    StreamConnection,
    SwitchOutput,
)
from voicegate.server.protocols.native_events import (
    ErrorEvent,
    ResponseCancelled,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    TurnLatency,
)
from voicegate.server.protocols.native_wire import (
    AudioInput,
    CloseCode,
    ProtocolLimits,
    SessionStart,
)

START = json.dumps(
    {
        "type": "session.start",
        "input": {"encoding": "pcm16", "sample_rate": 16000},
        "output": {
            "encoding": "pcm16",
            "sample_rate": 16000,
            "fallback": {"encoding": "mulaw", "sample_rate": 8000},
        },
    }
)
DONE = ResponseDone(1, "ok", 100.0, False, TurnLatency(300, 1, 1, 1, 1, 1))


def events(actions: list[Action]) -> list[dict[str, object]]:
    return [json.loads(a.text) for a in actions if isinstance(a, SendText)]


def started(limits: ProtocolLimits | None = None) -> StreamConnection:
    conn = StreamConnection("sess-1", limits or ProtocolLimits())
    assert conn.connect() == [Accept()]
    actions = conn.receive_text(START)
    assert conn.state is ConnectionState.STARTED
    assert actions[0] == OpenSession(
        "sess-1",
        SessionStart(
            AudioFormat(Encoding.PCM16, 16000),
            AudioFormat(Encoding.PCM16, 16000),
            AudioFormat(Encoding.MULAW, 8000),
            None,
        ),
    )
    assert [e["type"] for e in events(actions)] == ["session.started"]
    assert events(actions)[0]["session"] == "sess-1"
    return conn


def test_normal_session() -> None:
    conn = started()
    first = conn.receive_bytes(bytes(640))
    second = conn.receive_bytes(bytes(320))
    assert first == [ForwardAudio(AudioInput(bytes(640), 20), stream_ms=0)]
    assert second == [ForwardAudio(AudioInput(bytes(320), 10), stream_ms=20)]
    assert conn.receive_text('{"type": "text.input", "text": "hi"}') == [ForwardText("hi")]
    assert [a.type for a in conn.send_event(SpeechStarted(1, 0)) if isinstance(a, SendText)] == [
        "speech.started"
    ]
    actions = conn.receive_text('{"type": "session.end"}')
    assert actions == [CloseSession("sess-1"), Close(CloseCode.NORMAL, "session ended")]
    assert conn.state is ConnectionState.CLOSED
    # Nothing happens after the close: late frames and events are dropped.
    assert conn.receive_bytes(bytes(640)) == []
    assert conn.send_event(SpeechStarted(2, 40)) == []
    assert conn.disconnected() == []


def test_session_end_cancels_the_answer_in_flight() -> None:
    conn = started()
    conn.send_event(ResponseStarted(3))
    actions = conn.receive_text('{"type": "session.end"}')
    assert events(actions) == [{"type": "response.cancelled", "turn": 3, "reason": "session_end"}]
    assert actions[-2:] == [CloseSession("sess-1"), Close(CloseCode.NORMAL, "session ended")]


def test_at_capacity() -> None:
    conn = StreamConnection("s")
    actions = conn.connect(at_capacity=True)
    assert actions[0] == Accept()
    assert events(actions) == [
        {
            "type": "error",
            "code": "at_capacity",
            "message": "the server is at capacity, try again later",
            "fatal": True,
        }
    ]
    assert actions[-1] == Close(CloseCode.TRY_AGAIN_LATER, "at_capacity")
    assert conn.state is ConnectionState.CLOSED


def test_connect_twice_is_a_bug() -> None:
    conn = StreamConnection("s")
    conn.connect()
    with pytest.raises(RuntimeError, match="connect in state CONNECTED"):
        conn.connect()


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"\x00" * 640, "session_not_started"),
        ('{"type": "text.input", "text": "hi"}', "session_not_started"),
        ("not json", "invalid_json"),
    ],
)
def test_before_session_start(message: str | bytes, code: str) -> None:
    conn = StreamConnection("s")
    conn.connect()
    if isinstance(message, bytes):
        actions = conn.receive_bytes(message)
    else:
        actions = conn.receive_text(message)
    assert [e["code"] for e in events(actions)] == [code]
    # No session was opened, so there is none to close in the pipeline.
    assert actions[-1] == Close(CloseCode.POLICY_VIOLATION, code)
    assert not any(isinstance(a, CloseSession) for a in actions)


def test_session_end_before_start_is_a_normal_close() -> None:
    conn = StreamConnection("s")
    conn.connect()
    assert conn.receive_text('{"type": "session.end"}') == [
        Close(CloseCode.NORMAL, "session ended")
    ]


def test_second_session_start() -> None:
    conn = started()
    actions = conn.receive_text(START)
    assert [e["code"] for e in events(actions)] == ["session_already_started"]
    assert actions[-2:] == [
        CloseSession("sess-1"),
        Close(CloseCode.POLICY_VIOLATION, "session_already_started"),
    ]


def test_bad_audio_and_too_big() -> None:
    conn = started()
    actions = conn.receive_bytes(bytes(641))
    assert [e["code"] for e in events(actions)] == ["bad_audio_frame"]
    assert actions[-1] == Close(CloseCode.POLICY_VIOLATION, "bad_audio_frame")

    conn = started(ProtocolLimits(max_message_bytes=640))
    actions = conn.receive_bytes(bytes(960))
    assert [e["code"] for e in events(actions)] == ["message_too_big"]
    assert actions[-1] == Close(CloseCode.MESSAGE_TOO_BIG, "message_too_big")


def test_non_fatal_error_keeps_the_session() -> None:
    conn = started(ProtocolLimits(max_text_chars=3))
    actions = conn.receive_text('{"type": "text.input", "text": "four"}')
    assert events(actions) == [
        {
            "type": "error",
            "code": "text_too_long",
            "message": "field 'text.input.text' has 4 characters, more than the limit of 3",
            "fatal": False,
        }
    ]
    assert len(actions) == 1
    assert conn.state is ConnectionState.STARTED


def test_degrade_then_close_slow_client() -> None:
    conn = started()
    actions = conn.degrade_output()
    assert events(actions) == [
        {
            "type": "output.degraded",
            "encoding": "mulaw",
            "sample_rate": 8000,
            "reason": "slow_client",
        }
    ]
    assert actions[-1] == SwitchOutput(AudioFormat(Encoding.MULAW, 8000))
    assert conn.degraded and conn.output == AudioFormat(Encoding.MULAW, 8000)
    actions = conn.degrade_output()
    assert events(actions)[0]["code"] == "slow_client"
    assert "even in the fallback format" in str(events(actions)[0]["message"])
    assert actions[-1] == Close(CloseCode.POLICY_VIOLATION, "slow_client")


def test_slow_client_without_fallback_is_closed() -> None:
    conn = StreamConnection("s")
    conn.connect()
    conn.receive_text('{"type": "session.start"}')
    actions = conn.degrade_output()
    assert events(actions)[0]["code"] == "slow_client"
    assert actions[-2:] == [CloseSession("s"), Close(CloseCode.POLICY_VIOLATION, "slow_client")]


def test_shutdown_finishes_the_answer_in_flight() -> None:
    conn = started()
    conn.send_event(ResponseStarted(1))
    assert conn.begin_shutdown() == []
    assert conn.state is ConnectionState.ENDING
    # Input is dropped while ending; events still flow.
    assert conn.receive_bytes(bytes(640)) == []
    assert conn.receive_text('{"type": "text.input", "text": "more"}') == []
    actions = conn.send_event(DONE)
    assert [e["type"] for e in events(actions)] == ["response.done", "error"]
    assert events(actions)[1]["code"] == "server_shutdown"
    assert actions[-2:] == [CloseSession("sess-1"), Close(CloseCode.GOING_AWAY, "server_shutdown")]


def test_shutdown_deadline_cancels() -> None:
    conn = started()
    conn.send_event(ResponseStarted(1))
    conn.begin_shutdown()
    actions = conn.shutdown_deadline()
    assert events(actions)[0] == {"type": "response.cancelled", "turn": 1, "reason": "shutdown"}
    assert actions[-1] == Close(CloseCode.GOING_AWAY, "server_shutdown")
    assert conn.shutdown_deadline() == []


def test_shutdown_when_idle_closes_at_once() -> None:
    conn = started()
    conn.send_event(ResponseStarted(1))
    conn.send_event(ResponseCancelled(1, "barge_in"))
    actions = conn.begin_shutdown()
    assert actions[-1] == Close(CloseCode.GOING_AWAY, "server_shutdown")


def test_internal_error_and_disconnect() -> None:
    conn = started()
    actions = conn.internal_error("the STT worker stopped")
    assert events(actions)[0] == {
        "type": "error",
        "code": "internal_error",
        "message": "the STT worker stopped",
        "fatal": True,
    }
    assert actions[-1] == Close(CloseCode.INTERNAL_ERROR, "internal_error")

    conn = started()
    assert conn.disconnected() == [CloseSession("sess-1")]
    assert conn.state is ConnectionState.CLOSED


def test_pipeline_may_not_send_connection_events() -> None:
    conn = started()
    with pytest.raises(ValueError, match="error is sent by the connection itself"):
        conn.send_event(ErrorEvent("x", "y", fatal=True))


client_inputs = st.one_of(
    st.just(("text", START)),
    st.just(("text", '{"type": "session.end"}')),
    st.just(("text", '{"type": "text.input", "text": "hi"}')),
    st.tuples(st.just("text"), st.text(max_size=30)),
    st.tuples(st.just("bytes"), st.sampled_from([b"", bytes(320), bytes(640), bytes(3)])),
    st.tuples(st.just("bytes"), st.binary(max_size=700)),
    st.just(("degrade", "")),
    st.just(("shutdown", "")),
    st.just(("deadline", "")),
    st.just(("response.started", "")),
    st.just(("response.done", "")),
    st.just(("internal", "")),
)


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(client_inputs, max_size=12))
def test_any_sequence_keeps_the_invariants(
    at_capacity: bool, inputs: list[tuple[str, object]]
) -> None:
    conn = StreamConnection("s", ProtocolLimits(max_message_bytes=640))
    timeline = conn.connect(at_capacity=at_capacity)
    for kind, value in inputs:
        if kind == "text":
            assert isinstance(value, str)
            actions = conn.receive_text(value)
        elif kind == "bytes":
            assert isinstance(value, bytes)
            actions = conn.receive_bytes(value)
        elif kind == "degrade":
            actions = conn.degrade_output()
        elif kind == "shutdown":
            actions = conn.begin_shutdown()
        elif kind == "deadline":
            actions = conn.shutdown_deadline()
        elif kind == "response.started":
            actions = conn.send_event(ResponseStarted(1))
        elif kind == "response.done":
            actions = conn.send_event(DONE)
        else:
            actions = conn.internal_error("boom")
        timeline += actions
    timeline += conn.disconnected()
    closes = [i for i, a in enumerate(timeline) if isinstance(a, Close)]
    # At most one close, and it is the last thing sent to the client.
    assert len(closes) <= 1
    if closes:
        assert all(isinstance(a, CloseSession) for a in timeline[closes[0] + 1 :])
        if timeline[closes[0]].code is not CloseCode.NORMAL:  # type: ignore[union-attr]
            sent = [a for a in timeline[: closes[0]] if isinstance(a, SendText)]
            assert sent and sent[-1].type == "error"
    # A pipeline session is opened at most once and closed exactly once if opened.
    opened = sum(isinstance(a, OpenSession) for a in timeline)
    assert opened <= 1
    assert sum(isinstance(a, CloseSession) for a in timeline) == opened
    assert conn.state is ConnectionState.CLOSED
