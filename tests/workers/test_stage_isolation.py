"""One session's failure stays that session's: an exception a stage raises while it
handles one session's records (or lifecycle, or its tick, when the stage names the
session) fails that session's turn with an ERROR record, and the worker goes on serving
every other session (issue 15, defects 1 and 2)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import test_worker_runtime
from test_worker_runtime import S1, S2, Harness

from voicegate.core.kinds import Kind, session_id
from voicegate.core.payloads import StageId, TurnError, TurnErrorCode
from voicegate.workers.stage import Batch, Output, SessionFailed, Stage
from voicegate.workers.status import Field

S3 = session_id(0, 3)
make = test_worker_runtime.make  # the fixture: harnesses on both ring implementations
Received = list[tuple[int, int, int, int, bytes, int]]


class BoomStage(Stage[list[bytes]]):
    """Forwards records with '!' appended; a payload starting with b"boom" raises, as a
    model does on input it cannot take (a prompt too long for its context)."""

    tick_interval_s = 1e-9  # due on every pass

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.tick_victim: int | None = None
        self.new_turns: list[tuple[int, int]] = []

    def open_session(self, session: int, turn: int, params: memoryview) -> list[bytes]:
        if bytes(params).startswith(b"boom"):
            raise KeyError("bad params")
        return []

    def new_turn(self, session: int, turn: int, state: list[bytes]) -> None:
        self.new_turns.append((session, turn))
        state.clear()

    def on_records(
        self, batch: Batch, states: Mapping[int, list[bytes]], out: Output
    ) -> None:
        for m in batch:
            payload = bytes(m.payload)
            if payload.startswith(b"boom"):
                raise ValueError("prompt of 2276 tokens does not fit max_context 2048")
            states[m.session].append(payload)
            out.emit(m.replace(payload=payload + b"!"))

    def tick(self, now_ns: int, states: Mapping[int, list[bytes]], out: Output) -> None:
        if self.tick_victim is not None:
            victim, self.tick_victim = self.tick_victim, None
            raise SessionFailed(victim, "decode step failed")


def errors(received: Received) -> list[tuple[int, int, TurnError]]:
    return [(r[1], r[2], TurnError.unpack(r[4])) for r in received if r[0] == Kind.ERROR]


def data(received: Received) -> list[tuple[int, int, int, bytes]]:
    return [(r[1], r[2], r[3], r[4]) for r in received if r[0] == Kind.AUDIO_IN]


def test_a_record_that_raises_fails_only_its_sessions_turn(make: Callable[..., Harness]) -> None:
    h = make(BoomStage)
    for sid in (S1, S2, S3):
        h.send(Kind.SESSION_OPEN, sid, 1)
    # One batch that mixes the sessions; S2's second record makes the stage raise.
    h.send(Kind.AUDIO_IN, S1, 1, 1, b"a")
    h.send(Kind.AUDIO_IN, S2, 1, 1, b"b")
    h.send(Kind.AUDIO_IN, S2, 1, 2, b"boom")
    h.send(Kind.AUDIO_IN, S3, 1, 1, b"c")
    h.send(Kind.AUDIO_IN, S2, 1, 3, b"late")  # the failed turn: dropped
    h.send(Kind.AUDIO_IN, S1, 1, 2, b"d")
    h.pump()  # does not raise
    got = h.received()
    # Every other session's records came through once, in order.
    assert [r for r in data(got) if r[0] != S2] == [
        (S1, 1, 1, b"a!"),
        (S3, 1, 1, b"c!"),
        (S1, 1, 2, b"d!"),
    ]
    assert (S2, 1, 3, b"late!") not in data(got)
    [(sid, turn, error)] = errors(got)
    assert (sid, turn) == (S2, 1)
    assert error.code is TurnErrorCode.INTERNAL and error.stage is StageId.STT
    assert "ValueError" in error.detail and "2276" not in error.detail  # no content
    assert h.status.get(Field.SESSION_FAILURES) == 1
    # The failed session's next turn is served again.
    h.send(Kind.AUDIO_IN, S2, 2, 1, b"again")
    h.send(Kind.AUDIO_IN, S1, 1, 3, b"e")
    h.pump()
    assert data(h.received()) == [(S2, 2, 1, b"again!"), (S1, 1, 3, b"e!")]


def test_a_failing_open_fails_only_that_session(make: Callable[..., Harness]) -> None:
    h = make(BoomStage)
    h.send(Kind.SESSION_OPEN, S1, 1)
    h.send(Kind.SESSION_OPEN, S2, 1, 0, b"boom params")
    h.send(Kind.AUDIO_IN, S2, 1, 1, b"x")
    h.send(Kind.AUDIO_IN, S1, 1, 1, b"y")
    h.pump()
    got = h.received()
    assert data(got) == [(S1, 1, 1, b"y!")]
    # The open still went on (the later stages know the session), then its error.
    assert [(r[0], r[1]) for r in got if r[1] == S2] == [
        (Kind.SESSION_OPEN, S2),
        (Kind.ERROR, S2),
    ]
    assert h.worker.current_turn(S2) is None


def test_a_tick_failure_naming_a_session_fails_only_that_session(
    make: Callable[..., Harness],
) -> None:
    h = make(BoomStage)
    h.send(Kind.SESSION_OPEN, S1, 1)
    h.send(Kind.SESSION_OPEN, S2, 1)
    h.pump()
    stage = h.stage
    assert isinstance(stage, BoomStage)
    stage.tick_victim = S1
    h.worker.run_once(0.0)
    h.send(Kind.AUDIO_IN, S2, 1, 1, b"z")
    h.pump()
    got = h.received()
    assert [(sid, turn) for sid, turn, _ in errors(got)] == [(S1, 1)]
    assert (S1, 1) in stage.new_turns  # the stage was told to drop the turn's work
    assert data(got) == [(S2, 1, 1, b"z!")]


class SlowTurnsStage(Stage[None]):
    """Notes the worker's heartbeat at each call: a burst of short turns (200
    ``text.input`` in a row) must not hold the heartbeat still while it is worked
    through."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.beats: list[int] = []
        self.status: Any = None

    def open_session(self, session: int, turn: int, params: memoryview) -> None:
        return None

    def on_records(self, batch: Batch, states: Mapping[int, None], out: Output) -> None:
        self.beats.append(self.status.get(Field.HEARTBEAT_NS))
        # A prefill's worth of work: at least one clock tick, so a beat is seen to move.
        before = self.status.get(Field.HEARTBEAT_NS)
        while time.monotonic_ns() <= before + 1000:
            pass


def test_a_burst_of_turns_keeps_the_heartbeat_beating(make: Callable[..., Harness]) -> None:
    h = make(SlowTurnsStage)
    stage = h.stage
    assert isinstance(stage, SlowTurnsStage)
    stage.status = h.status
    h.send(Kind.SESSION_OPEN, S1, 1)
    for turn in range(1, 201):
        h.send(Kind.TEXT_INPUT, S1, turn, turn, b"hi")
    h.pump()
    assert len(stage.beats) == 200
    # The runtime beat between every two stage calls, not once per batch.
    assert all(b > a for a, b in zip(stage.beats, stage.beats[1:], strict=False))


def test_a_restarted_gateway_closes_what_its_predecessor_left_open(
    make: Callable[..., Harness],
) -> None:
    h = make(BoomStage)
    mine, other = [session_id(0, 1), session_id(0, 7)], session_id(1, 1)
    for sid in [*mine, other]:
        h.send(Kind.SESSION_OPEN, sid, 1)
    h.send(Kind.AUDIO_IN, session_id(0, 1), 1, 1, b"old")
    # The replacement of gateway 0 announces itself with local session 0.
    h.send(Kind.SESSION_CLOSE, session_id(0, 0), 0)
    h.send(Kind.SESSION_OPEN, session_id(0, 1), 1)  # its own first session: a new one
    h.pump()
    assert set(h.worker.states) == {other, session_id(0, 1)}
    assert h.worker.states[session_id(0, 1)] == []  # fresh state, not the dead one's
    assert h.status.get(Field.SESSIONS) == 2
