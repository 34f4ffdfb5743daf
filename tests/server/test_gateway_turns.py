"""The gateway's turn logic (SessionTurns, SendQueue) on hand-made records: no I/O."""

from __future__ import annotations

import json

import pytest

from voicegate.core.codec import PCM16_16K
from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import VadEvent, VadEventType
from voicegate.server.gateway.send_queue import (
    AudioItem,
    DoneItem,
    EventItem,
    SendQueue,
    TextItem,
)
from voicegate.server.gateway.turns import SessionTurns
from voicegate.server.protocols.native_events import (
    ResponseCancelled,
    SpeechStopped,
    TranscriptFinal,
)
from voicegate.workers.gateway_link import Received

MS = 1_000_000


def rec(kind: int, turn: int, payload: bytes = b"", flags: int = 0, origin: int = 0) -> Received:
    return Received(kind=kind, session=7, turn=turn, origin_ns=origin, payload=payload, flags=flags)


def vad(event: VadEventType, turn: int, at_sample: int, origin: int = 0) -> Received:
    return rec(Kind.VAD_EVENT, turn, VadEvent(event, at_sample).pack(), origin=origin)


def kinds(queue: SendQueue) -> list[str]:
    out = []
    for item in queue.items:
        if isinstance(item, EventItem):
            out.append(item.event.type)
        elif isinstance(item, AudioItem):
            out.append(f"audio{item.turn}")
        elif isinstance(item, DoneItem):
            out.append("done")
        elif isinstance(item, TextItem):
            out.append(item.type)
    return out


def speculate(turns: SessionTurns, turn: int, frames: int = 3) -> None:
    turns.on_record(vad(VadEventType.SPEECH_PAUSE, turn, 16000, origin=100 * MS), 101 * MS)
    turns.on_record(rec(Kind.TRANSCRIPT_PARTIAL, turn, b"hello", Flag.PROVISIONAL), 110 * MS)
    turns.on_record(rec(Kind.LLM_TOKEN, turn, b"hi."), 120 * MS)
    for i in range(frames):
        last = Flag.LAST if i == frames - 1 else 0
        turns.on_record(rec(Kind.AUDIO_OUT, turn, bytes(640), last), 130 * MS)


@pytest.fixture
def turns() -> SessionTurns:
    return SessionTurns(PCM16_16K, SendQueue(100), end_of_turn_ms=300)


def test_speculative_answer_is_held_until_end_of_turn(turns: SessionTurns) -> None:
    speculate(turns, 1)
    assert kinds(turns.queue) == ["transcript.partial"]  # the answer waits
    turns.on_record(vad(VadEventType.END_OF_TURN, 1, 16000, origin=100 * MS), 400 * MS)
    assert kinds(turns.queue) == [
        "transcript.partial", "speech.stopped", "transcript.final", "response.started",
        "response.text.delta", "response.audio.started", "audio1", "audio1", "audio1", "done",
    ]  # fmt: skip
    final = [i.event for i in turns.queue.items if isinstance(i, EventItem)][2]
    assert final == TranscriptFinal(1, "hello")
    # The same transcript again through the later stages is not repeated.
    turns.on_record(rec(Kind.TRANSCRIPT_FINAL, 1, b"hello"), 420 * MS)
    assert kinds(turns.queue).count("transcript.final") == 1
    assert (turns.counters.turns_committed, turns.counters.turns_cancelled) == (1, 0)


def test_cancel_drops_the_held_speculation(turns: SessionTurns) -> None:
    speculate(turns, 1)
    turns.on_record(rec(Kind.CANCEL, 2, flags=Flag.CONTINUE), 200 * MS)
    speculate(turns, 1)  # late records of the void turn
    turns.on_record(vad(VadEventType.END_OF_TURN, 1, 16000), 400 * MS)
    assert kinds(turns.queue) == ["transcript.partial"]
    assert turns.turn == 2 and turns.stale_below == 2
    assert turns.counters.dropped_stale > 0
    turns.on_record(rec(Kind.CANCEL, 2, flags=Flag.CONTINUE), 410 * MS)  # a repeat
    assert (turns.counters.turns_committed, turns.counters.turns_cancelled) == (0, 1)


def test_barge_in_takes_back_queued_audio_and_cancels(turns: SessionTurns) -> None:
    turns.on_record(rec(Kind.TRANSCRIPT_FINAL, 1, b"typed"), 0)  # a typed turn: confirmed
    speculate(turns, 1, frames=5)
    assert kinds(turns.queue).count("audio1") == 5
    turns.on_record(rec(Kind.BARGE_IN, 2), 500 * MS)
    assert "audio1" not in kinds(turns.queue) and "done" not in kinds(turns.queue)
    cancelled = [i.event for i in turns.queue.items if isinstance(i, EventItem)][-1]
    assert cancelled == ResponseCancelled(1, "barge_in")
    turns.on_record(rec(Kind.AUDIO_OUT, 1, bytes(640)), 510 * MS)
    assert "audio1" not in kinds(turns.queue)
    # A barge-in is not a voided speculation; the gateway counts it apart.
    assert (turns.counters.turns_committed, turns.counters.turns_cancelled) == (1, 0)


def test_speech_stopped_position_and_latency_breakdown(turns: SessionTurns) -> None:
    # Input frames of 20 ms arriving every 20 ms from t=0.
    for i in range(100):
        turns.input_arrived((i + 1) * 20, i * 20 * MS)
    speculate(turns, 1)
    timing = {"transcript_ns": 150 * MS, "first_token_ns": 160 * MS, "first_audio_ns": 170 * MS}
    turns.on_record(rec(Kind.TURN_TIMING, 1, json.dumps(timing).encode()), 171 * MS)
    # Speech ended at 1 s (sample 16000); the 300 ms silence completed in the frame that
    # arrived at 1300 ms; the decision reached the gateway at 1302 ms.
    turns.on_record(vad(VadEventType.END_OF_TURN, 1, 16000, origin=1000 * MS), 1302 * MS)
    stopped = [i.event for i in turns.queue.items if isinstance(i, EventItem)][1]
    assert stopped == SpeechStopped(1, 1000)
    turns.answers[1].speech_end_ns = 1000 * MS
    turns.answers[1].audio_sent_ns = 1303 * MS
    done = turns.render_done(1, 1400 * MS)
    assert done is not None and done.speculative and done.text == "hi."
    latency = done.latency_ms.to_dict()
    assert latency["end_of_turn_silence"] == 300.0
    assert latency["vad"] == 2.0
    assert latency["stt"] == latency["llm_first_token"] == latency["tts_first_audio"] == 0.0
    assert latency["gateway"] == 1.0
    assert latency["voice_to_voice"] == 303.0


def test_queue_refuses_audio_only_while_stalled() -> None:
    queue = SendQueue(2)
    stalled = [False]
    queue.stalled = lambda: stalled[0]
    for _ in range(4):  # a burst to a reading client is taken
        assert queue.push_audio(AudioItem(1, b"x", False))
    stalled[0] = True
    assert not queue.push_audio(AudioItem(1, b"x", False))
    queue.push(TextItem("{}", "error"))  # events are never refused
    assert len(queue) == 5
    queue.drop_pipeline_items()
    assert kinds(queue) == ["error"] and queue.audio == 0


def test_malformed_records_raise_value_errors_the_gateway_can_count(turns: SessionTurns) -> None:
    with pytest.raises(ValueError, match="VAD_EVENT"):
        turns.on_record(rec(Kind.VAD_EVENT, 1, b"\x01"), 0)
    with pytest.raises(ValueError):
        turns.on_record(rec(Kind.LLM_TOKEN, 1, b"\xff\xfe"), 0)
    turns.on_record(rec(Kind.TURN_TIMING, 1, b"not json"), 0)  # logged and ignored
    assert turns.answers[1].first_audio_ns == 0
