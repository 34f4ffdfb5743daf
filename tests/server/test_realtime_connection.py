"""The /v1/realtime protocol module (protocols/realtime.py) without a socket: the gateway's
actions it returns for client events, pipeline events and the node's conditions."""

from __future__ import annotations

import base64
import json

from voicegate.core.codec import AudioFormat, Encoding
from voicegate.core.config import DEFAULT_LIMITS, NodeConfig, ProtocolLimits, WorkerSettings
from voicegate.core.payloads import SessionOptions
from voicegate.server.protocols.base import (
    Accept,
    CancelResponse,
    Close,
    CloseSession,
    CommitTurn,
    ConnectionState,
    CreateResponse,
    ForwardAudio,
    ForwardText,
    OpenSession,
    Refusal,
    SendText,
    TruncateAnswer,
    UpdateSession,
)
from voicegate.server.protocols.native_events import (
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TurnLatency,
)
from voicegate.server.protocols.native_wire import CloseCode
from voicegate.server.protocols.realtime import (
    PROTOCOL,
    NodeSettings,
    RealtimeConnection,
    node_settings,
)
from voicegate.server.protocols.realtime_config import TurnDefaults, VoiceCatalog

SETTINGS = NodeSettings(TurnDefaults(0.5, 200, 300), VoiceCatalog(("joe", "amy")))
FRAME = bytes(960)


def connection(query: dict[str, str] | None = None, **limits: int) -> RealtimeConnection:
    conn = RealtimeConnection(
        "0000002a", query or {"model": "gpt-realtime"}, ProtocolLimits(**limits), SETTINGS
    )
    return conn


def client(conn: RealtimeConnection, **event: object) -> list[object]:
    return list(conn.receive_text(json.dumps(event)))


def append(conn: RealtimeConnection, audio: bytes) -> list[object]:
    return client(conn, type="input_audio_buffer.append", audio=base64.b64encode(audio).decode())


def events(actions: list[object]) -> list[dict[str, object]]:
    return [json.loads(a.text) for a in actions if isinstance(a, SendText)]


def test_the_protocol_is_registered_for_keys() -> None:
    from voicegate.server.protocols import PROTOCOLS as WIRE  # noqa: PLC0415
    from voicegate.server.security.keys import PROTOCOLS  # noqa: PLC0415

    assert PROTOCOL in WIRE and PROTOCOL.path == "/v1/realtime"
    assert PROTOCOL.name in PROTOCOLS


def test_connect_sends_session_created_and_the_first_audio_opens_the_session() -> None:
    conn = connection()
    actions = conn.connect()
    assert actions[0] == Accept()
    assert isinstance(actions[1], SendText) and actions[1].type == "session.created"
    assert conn.state is ConnectionState.STARTED
    created = events(actions)[0]["session"]
    assert isinstance(created, dict) and created["model"] == "gpt-realtime"
    opened = append(conn, FRAME + b"\x00" * 10)
    assert isinstance(opened[0], OpenSession)
    pcm24 = AudioFormat(Encoding.PCM16, 24000)
    assert (opened[0].start.input, opened[0].start.output) == (pcm24, pcm24)
    assert opened[1] == UpdateSession(SessionOptions(
        respond="audio", voice=None, instructions="", turn_detection="server",
        vad_threshold=0.5, prefix_padding_ms=200, silence_duration_ms=300,
        auto_respond=True, audio_marks=True))  # fmt: skip
    forward = opened[2]
    assert isinstance(forward, ForwardAudio)
    assert (forward.audio.duration_ms, forward.stream_ms) == (20, 0)
    again = append(conn, FRAME)
    assert isinstance(again[0], ForwardAudio) and again[0].stream_ms == 20


def test_at_capacity_at_the_handshake_and_at_the_first_audio() -> None:
    full = connection().connect(at_capacity=True)
    assert events(full)[0]["error"]["code"] == "at_capacity"  # type: ignore[index]
    assert full[-1] == Close(CloseCode.TRY_AGAIN_LATER, full[-1].reason)  # type: ignore[union-attr]
    conn = connection()
    conn.connect()
    conn.admit = lambda: False
    refused = append(conn, FRAME)
    assert events(refused)[0]["error"]["code"] == "at_capacity"  # type: ignore[index]
    assert isinstance(refused[-1], Close) and refused[-1].code == 1013
    assert conn.state is ConnectionState.CLOSED


def test_session_options_commit_items_and_responses() -> None:
    conn = connection()
    conn.connect()
    update = client(conn, type="session.update", session={
        "type": "realtime", "audio": {"input": {"turn_detection": None},
                                      "output": {"voice": "amy"}}})  # fmt: skip
    assert not [a for a in update if not isinstance(a, SendText)]  # nothing open yet
    append(conn, FRAME * 10)
    assert client(conn, type="input_audio_buffer.commit")[0] == CommitTurn()
    typed = client(conn, type="conversation.item.create", item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]})
    assert typed[0] == ForwardText("Hi", item_only=True)
    ask = client(conn, type="response.create", response={"max_output_tokens": 20})
    assert isinstance(ask[0], CreateResponse)
    assert ask[0].own is not None and ask[0].own.max_output_tokens == 20
    assert ask[0].own.voice == "amy" and ask[0].own.turn_detection == "manual"
    assert ask[0].session is not None and ask[0].session.max_output_tokens is None
    conn.send_event(ResponseStarted(3))
    cancel = client(conn, type="response.cancel")
    assert cancel[0] == CancelResponse(3)
    assert events(cancel)[-1]["response"]["status"] == "cancelled"  # type: ignore[index]


def test_truncate_and_audio_frames() -> None:
    conn = connection()
    conn.connect()
    append(conn, FRAME)
    conn.send_event(SpeechStarted(1, 0))
    conn.send_event(SpeechStopped(1, 500))
    created = events(conn.send_event(ResponseStarted(1)))
    frame = conn.audio_frame(1, FRAME)
    assert json.loads(frame)["type"] == "response.output_audio.delta"
    assert conn.audio_frame(7, FRAME) == ""  # no answer of that turn: nothing to send
    latency = TurnLatency(300.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    conn.send_event(ResponseDone(1, "Hi.", 20.0, False, latency))
    item = created[1]["item"]["id"]  # type: ignore[index]
    cut = client(conn, type="conversation.item.truncate", item_id=item, content_index=0,
                 audio_end_ms=10)  # fmt: skip
    assert cut[0] == TruncateAnswer(1, 10)


def test_errors_that_leave_the_session_open() -> None:
    conn = connection(max_message_bytes=1000)
    conn.connect()
    assert events(conn.receive_bytes(b"\x00\x01"))[0]["error"]["code"] == "invalid_event"  # type: ignore[index]
    big = conn.receive_text(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 2000}))
    assert events(big)[0]["error"]["code"] == "event_too_big"  # type: ignore[index]
    assert conn.state is ConnectionState.STARTED


def test_the_nodes_conditions_close_with_an_error_first() -> None:
    conn = connection()
    conn.connect()
    append(conn, FRAME)
    slow = conn.degrade_output()
    assert events(slow)[0]["error"]["code"] == "slow_client"  # type: ignore[index]
    assert slow[-2:] == [CloseSession("0000002a"), Close(1008, slow[-1].reason)]  # type: ignore[union-attr]
    assert conn.disconnected() == []
    limited = connection()
    limited.connect()
    refused = limited.refuse(Refusal.RATE_LIMITED, "audio ahead of real time")
    assert events(refused)[0]["error"]["code"] == "rate_limited"  # type: ignore[index]
    assert isinstance(refused[-1], Close) and refused[-1].code == 1008


def test_shutdown_lets_the_answer_in_flight_finish() -> None:
    conn = connection()
    conn.connect()
    append(conn, FRAME)
    conn.send_event(ResponseStarted(1))
    assert conn.begin_shutdown() == []
    assert conn.state is ConnectionState.ENDING
    latency = TurnLatency(300.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    done = conn.send_event(ResponseDone(1, "Hi.", 20.0, False, latency))
    kinds = [e["type"] for e in events(done)]
    assert kinds[-2:] == ["response.done", "error"]
    assert events(done)[-1]["error"]["code"] == "server_shutdown"  # type: ignore[index]
    assert isinstance(done[-1], Close) and done[-1].code == 1001
    idle = connection()
    idle.connect()
    closed = idle.begin_shutdown()
    assert isinstance(closed[-1], Close) and closed[-1].code == 1001
    assert not [a for a in closed if isinstance(a, CloseSession)]  # never opened


def test_intent_transcription_and_node_settings() -> None:
    conn = connection({"intent": "transcription"})
    created = events(conn.connect())[0]["session"]
    assert created["type"] == "transcription"  # type: ignore[index]
    config = NodeConfig(workers={"vad": WorkerSettings(options={
        "end_of_turn_silence_ms": 450, "pre_roll_ms": 150})})  # fmt: skip
    settings = node_settings(config)
    assert settings.turns == TurnDefaults(0.5, 150, 450)
    assert settings.voices.default == "default"  # no bundle: one unnamed voice
    assert DEFAULT_LIMITS.max_message_bytes > 0
