"""What the gateway's turn state does with the session-option records the Realtime
protocol uses (RESPONSE_CREATE, AUDIO_MARK, written answers): no I/O."""

from __future__ import annotations

from voicegate.core.codec import PCM16_16K
from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import AudioMark, heard_chars
from voicegate.server.gateway.send_queue import AudioItem, DoneItem, EventItem, SendQueue
from voicegate.server.gateway.turns import SessionTurns
from voicegate.workers.runtime.gateway_link import Received


def rec(kind: int, turn: int, payload: bytes = b"", flags: int = 0) -> Received:
    return Received(kind=kind, session=7, turn=turn, origin_ns=0, payload=payload, flags=flags)


def kinds(queue: SendQueue) -> list[str]:
    out = []
    for item in queue.items:
        if isinstance(item, EventItem):
            out.append(item.event.type)
        elif isinstance(item, AudioItem):
            out.append(f"audio{item.turn}")
        elif isinstance(item, DoneItem):
            out.append("done")
    return out


def turns() -> SessionTurns:
    return SessionTurns(PCM16_16K, SendQueue(64))


def test_a_response_asked_for_is_confirmed_by_its_record() -> None:
    t = turns()
    t.on_record(rec(Kind.RESPONSE_CREATE, 4), 1)
    t.on_record(rec(Kind.LLM_TOKEN, 4, b"Hi."), 2)
    t.on_record(rec(Kind.AUDIO_OUT, 4, bytes(640), Flag.LAST), 3)
    # Nothing is held back waiting for an end of turn that never comes.
    assert kinds(t.queue) == [
        "response.started", "response.text.delta", "response.audio.started", "audio4", "done",
    ]


def test_written_answers_end_with_their_last_token() -> None:
    t = turns()
    t.respond = "text"
    t.on_record(rec(Kind.RESPONSE_CREATE, 2), 1)
    t.on_record(rec(Kind.LLM_TOKEN, 2, b"Nine"), 2)
    t.on_record(rec(Kind.LLM_TOKEN, 2, b".", Flag.LAST), 3)
    assert kinds(t.queue) == ["response.started", "response.text.delta", "response.text.delta",
                              "done"]  # fmt: skip
    # In a spoken session, one response asked for as text ends the same way; the next
    # spoken one waits for its audio.
    s = turns()
    s.response_modes += ["text", "audio"]
    s.on_record(rec(Kind.RESPONSE_CREATE, 2), 1)
    s.on_record(rec(Kind.LLM_TOKEN, 2, b"Nine.", Flag.LAST), 2)
    s.on_record(rec(Kind.RESPONSE_CREATE, 3), 3)
    s.on_record(rec(Kind.LLM_TOKEN, 3, b"Ten.", Flag.LAST), 4)
    assert kinds(s.queue) == ["response.started", "response.text.delta", "done",
                              "response.started", "response.text.delta"]  # fmt: skip


def test_the_latest_answers_marks_are_kept() -> None:
    t = turns()
    t.on_record(rec(Kind.AUDIO_MARK, 1, AudioMark(400, 10).to_payload()), 1)
    t.on_record(rec(Kind.AUDIO_MARK, 2, AudioMark(300, 8).to_payload()), 2)
    t.on_record(rec(Kind.AUDIO_MARK, 2, AudioMark(900, 25).to_payload()), 3)
    assert list(t.marks) == [2]
    assert heard_chars(t.marks[2], 500) == 8


def test_a_transcription_session_ends_its_turn_at_the_transcript() -> None:
    t = turns()
    t.respond = "none"
    t.on_record(rec(Kind.TRANSCRIPT_FINAL, 1, b"hello"), 1)
    assert t.turns_in_flight() == []
