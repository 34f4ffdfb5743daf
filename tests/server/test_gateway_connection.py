"""The gateway's Connection without a socket: what each action of a protocol's state
machine becomes (ring records through the host, items on the send queue), and that a
record from the pipeline reaches the host's counters. The sending side runs over real
sockets in the gateway and telephony tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

from starlette.websockets import WebSocket

from voicegate.core.codec import PCM16_16K, AudioFormat, Encoding
from voicegate.core.config import GatewayOptions
from voicegate.core.kinds import Flag, Kind
from voicegate.ext import Record
from voicegate.server.gateway.connection import Connection, InputBudget
from voicegate.server.gateway.limits import TokenBucket
from voicegate.server.gateway.send_queue import CloseItem, EventItem, TextItem
from voicegate.server.protocols.base import CommitTurn, ForwardAudio, ForwardText, Refusal
from voicegate.server.protocols.native import StreamConnection
from voicegate.server.protocols.native_events import ResponseDone
from voicegate.server.protocols.native_wire import AudioInput

MULAW_8K = AudioFormat(Encoding.MULAW, 8000)


@dataclass
class RecordingHost:
    options: GatewayOptions = field(default_factory=GatewayOptions)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("connections_timed_out", "sessions_rate_limited", "barge_ins", "records_malformed",
         "records_stale_dropped", "turns_committed", "turns_cancelled", "turns_failed",
         "slow_client_degraded", "slow_client_closed", "frames_out", "sessions"), 0))  # fmt: skip
    written: list[tuple[Kind, int, int, int, bytes, int]] = field(default_factory=list)
    audio: list[ForwardAudio] = field(default_factory=list)

    def write(self, record: Record[bytes]) -> None:
        r = record
        self.written.append((Kind(r.kind), r.session, r.turn, r.seq, bytes(r.payload), r.flags))

    def forward_audio(self, connection: Connection, action: ForwardAudio) -> None:
        self.audio.append(action)

    def session_opened(self, connection: Connection) -> None:
        self.counters["sessions"] += 1

    def turn_done(self, done: ResponseDone) -> None:
        pass

    def holds(self, connection: Connection) -> bool:
        return True

    def kinds(self) -> list[Kind]:
        return [w[0] for w in self.written]


def _started(host: RecordingHost) -> Connection:
    wire = StreamConnection("00000007")
    conn = Connection(host, 7, wire, cast(WebSocket, None))
    conn.perform(wire.connect())
    start = {"type": "session.start", "output": {"encoding": "pcm16", "sample_rate": 16000,
             "fallback": {"encoding": "mulaw", "sample_rate": 8000}}}  # fmt: skip
    conn.perform(wire.receive_text(json.dumps(start)))
    return conn


def _queued(conn: Connection) -> list[Any]:
    return list(conn.turns.queue.items)


def test_actions_become_records_and_queue_items_in_order() -> None:
    host = RecordingHost()
    conn = _started(host)
    assert host.counters["sessions"] == 1
    kind, session, turn, seq, payload, flags = host.written[0]
    assert (kind, session, turn, seq, flags) == (Kind.SESSION_OPEN, 7, 1, 1, 0)
    opened = json.loads(payload)
    assert opened["output"] == PCM16_16K.to_dict() and opened["instructions"] is None
    assert [type(i) for i in _queued(conn)] == [TextItem]  # session.started

    conn.perform([ForwardText("hello"), CommitTurn()])
    assert host.kinds()[1:] == [Kind.TEXT_INPUT, Kind.COMMIT]
    assert [w[3] for w in host.written] == [1, 2, 3]  # one sequence per session

    conn.slow_client()  # degraded to the fallback: the stages hear of the new format
    assert host.written[-1][0] == Kind.OUTPUT_FORMAT
    assert json.loads(host.written[-1][4]) == MULAW_8K.to_dict()
    assert conn.turns.output == MULAW_8K and conn.turns.awaiting_format
    assert host.counters["slow_client_degraded"] == 1

    conn.perform(conn.wire.refuse(Refusal.TIMEOUT, "no message within 1 s"))
    assert host.kinds()[-1] == Kind.SESSION_CLOSE
    assert isinstance(_queued(conn)[-1], CloseItem) and _queued(conn)[-1].code == 1008


def test_input_over_its_budget_closes_the_session_with_rate_limited() -> None:
    host = RecordingHost()
    conn = _started(host)
    conn.budget = InputBudget(
        TokenBucket(1000.0, 40.0), TokenBucket(1.0, 1.0), "audio ahead", "text too often"
    )
    frame = ForwardAudio(AudioInput(bytes(640), 20), 0)
    conn.perform([frame, frame])
    assert len(host.audio) == 2
    conn.perform([frame])  # 60 ms at once with a 40 ms burst
    assert len(host.audio) == 2 and host.counters["sessions_rate_limited"] == 1
    texts = [i.text for i in _queued(conn) if isinstance(i, TextItem)]
    assert '"rate_limited"' in texts[-1] and "audio ahead" in texts[-1]


def test_a_worker_restart_fails_the_turn_in_flight_and_reopens_the_session() -> None:
    host = RecordingHost()
    conn = _started(host)
    conn.on_record(Record(kind=Kind.LLM_TOKEN, session=7, turn=1, payload=b"Hi"), 1)
    conn.reopen()
    assert host.counters["turns_failed"] == 1
    kind, _, turn, _, payload, flags = host.written[-1]
    assert (kind, flags) == (Kind.SESSION_OPEN, Flag.REOPEN)
    assert turn > 1  # a turn after the failed one
    assert payload == host.written[0][4]
    errors = [
        i.event for i in _queued(conn) if isinstance(i, EventItem) and i.event.type == "error"
    ]
    assert errors and not errors[0].fatal
