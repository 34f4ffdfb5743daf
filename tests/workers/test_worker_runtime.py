"""The worker runtime driven in-process, one pass at a time, over real rings."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from runtime_helpers import RING_IMPL, EchoCountStage, shm_leftovers, unique_node_name

from voicegate.core.clock import monotonic_ns
from voicegate.core.config import NodeConfig
from voicegate.core.kinds import Flag, Kind, gateway_of, session_id
from voicegate.workers.passthrough import PassThroughStage
from voicegate.workers.rings import ring_class
from voicegate.workers.stage import Batch, Output, Record, Stage, StageContext
from voicegate.workers.status import Field, Histogram, StatusBlock
from voicegate.workers.worker import Worker

Out = tuple[int, int, int, int, bytes, int]  # kind, session, turn, seq, payload, flags


class RecordingStage(Stage[dict[str, Any]]):
    """Logs every hook call and forwards data with a '!' appended."""

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        self.calls: list[tuple[Any, ...]] = []
        self.tick_interval_s_override: float | None = None

    def open_session(self, session: int, turn: int, params: memoryview) -> dict[str, Any]:
        self.calls.append(("open", session, turn, bytes(params)))
        return {"params": bytes(params)}

    def close_session(self, session: int, state: dict[str, Any], out: Output) -> None:
        self.calls.append(("close", session))
        out.emit(
            Record(kind=Kind.TRANSCRIPT_FINAL, session=session, turn=0, seq=99, payload=b"flushed")
        )

    def new_turn(self, session: int, turn: int, state: dict[str, Any]) -> None:
        self.calls.append(("turn", session, turn))

    def on_records(
        self, batch: Batch, states: Mapping[int, dict[str, Any]], out: Output
    ) -> None:
        self.calls.append(("records", [(m.session, m.turn, m.seq) for m in batch]))
        for m in batch:
            assert states[m.session]["params"] is not None
            out.emit(m.replace(payload=bytes(m.payload) + b"!"))


class TickingStage(RecordingStage):
    tick_interval_s = 1e-9  # due on every pass

    def tick(self, now_ns: int, states: Mapping[int, dict[str, Any]], out: Output) -> None:
        for session in states:
            out.emit(
                Record(
                    kind=Kind.TRANSCRIPT_PARTIAL,
                    session=session,
                    turn=0,
                    origin_ns=now_ns,
                    payload=b"tick",
                ),
            )


class Harness:
    """A worker between rings whose other ends the test holds."""

    def __init__(
        self,
        stage_type: type[Stage[Any]],
        *,
        inputs: int = 1,
        outputs: int = 1,
        route: Callable[[int], int] | None = None,
        out_capacity: int = 1 << 16,
        lossy: bool = False,
        impl: str = RING_IMPL,
    ) -> None:
        self.node = unique_node_name()
        self.impl = impl
        ring_type = ring_class(impl)
        prefix = f"vg-{self.node}-"
        in_names = [f"{prefix}in{i}" for i in range(inputs)]
        out_names = [f"{prefix}out{i}" for i in range(outputs)]
        # Owned like the supervisor owns them; the test holds the far ends.
        self.owned = [ring_type.create(name, 1 << 16) for name in in_names] + [
            ring_type.create(name, out_capacity) for name in out_names
        ]
        self.feeds = [ring_type.attach(name, "producer") for name in in_names]
        self.sinks = [ring_type.attach(name, "consumer") for name in out_names]
        self.worker_rings = [ring_type.attach(name, "consumer") for name in in_names] + [
            ring_type.attach(name, "producer") for name in out_names
        ]
        self.status = StatusBlock.create(f"{prefix}w.status")
        context = StageContext("stt", NodeConfig(), {}, (0,), 1)
        self.stage = stage_type(context)
        self.worker: Worker[Any] = Worker(
            self.stage,
            self.worker_rings[:inputs],
            self.worker_rings[inputs:],
            route or (lambda session: 0),
            self.status,
            lossy_outputs=[lossy] * outputs,
        )

    def send(  # noqa: PLR0917 - the ring's record fields, in the ring's order
        self,
        kind: int,
        session: int,
        turn: int,
        seq: int = 0,
        payload: bytes = b"",
        flags: int = 0,
        *,
        ring: int = 0,
    ) -> None:
        assert self.feeds[ring].try_write(
            Record(
                kind=kind,
                session=session,
                turn=turn,
                seq=seq,
                origin_ns=monotonic_ns(),
                payload=payload,
                flags=flags,
            ),
        )

    def pump(self) -> int:
        total = 0
        while got := self.worker.run_once(0.0):
            total += got
        return total

    def received(self, ring: int = 0) -> list[Out]:
        out: list[Out] = []
        for r in self.sinks[ring].read_batch(10_000, timeout=0):
            assert 0 < r.sent_ns <= monotonic_ns(), "the ring stamps every record it publishes"
            out.append((r.kind, r.session, r.turn, r.seq, bytes(r.payload), r.flags))
        self.sinks[ring].release()
        return out

    def close(self) -> None:
        for ring in self.worker_rings + self.feeds + self.sinks + self.owned:
            ring.close()
        self.status.close()
        StatusBlock.unlink_name(self.status.name)
        assert shm_leftovers(f"vg-{self.node}-") == []


@pytest.fixture(params=sorted({RING_IMPL, "reference"}))
def make(request: pytest.FixtureRequest) -> Iterator[Callable[..., Harness]]:
    """Harnesses on the ring the runtime tests use, and on the reference ring."""
    made: list[Harness] = []

    def factory(stage_type: type[Stage[Any]], **kwargs: Any) -> Harness:
        made.append(Harness(stage_type, impl=request.param, **kwargs))
        return made[-1]

    yield factory
    for harness in made:
        harness.close()


S1, S2 = session_id(0, 1), session_id(0, 2)


def test_session_lifecycle_is_forwarded_in_order(make: Callable[..., Harness]) -> None:
    h = make(RecordingStage)
    h.send(Kind.SESSION_OPEN, S1, 1, 0, b"rate=16000")
    h.send(Kind.AUDIO_IN, S1, 1, 1, b"a1")
    h.send(Kind.AUDIO_IN, S1, 1, 2, b"a2")
    h.send(Kind.COMMIT, S1, 1, 3)
    h.send(Kind.SESSION_CLOSE, S1, 1, 4)
    assert h.pump() == 5
    assert h.received() == [
        (Kind.SESSION_OPEN, S1, 1, 0, b"rate=16000", 0),
        (Kind.AUDIO_IN, S1, 1, 1, b"a1!", 0),
        (Kind.AUDIO_IN, S1, 1, 2, b"a2!", 0),
        (Kind.COMMIT, S1, 1, 3, b"!", 0),
        (Kind.TRANSCRIPT_FINAL, S1, 0, 99, b"flushed", 0),  # emitted by close_session
        (Kind.SESSION_CLOSE, S1, 1, 4, b"", 0),
    ]
    stage = h.stage
    assert isinstance(stage, RecordingStage)
    assert stage.calls == [
        ("open", S1, 1, b"rate=16000"),
        ("records", [(S1, 1, 1), (S1, 1, 2), (S1, 1, 3)]),
        ("close", S1),
    ]
    assert h.worker.states == {}
    assert h.status.get(Field.RECORDS_IN) == 5
    assert h.status.get(Field.RECORDS_OUT) == 6
    assert h.status.get(Field.SESSIONS) == 0


def test_stale_and_unknown_records_are_dropped(make: Callable[..., Harness]) -> None:
    h = make(RecordingStage)
    h.send(Kind.AUDIO_IN, S2, 1, 1, b"x")  # never opened
    h.send(Kind.SESSION_OPEN, S1, 1)
    h.send(Kind.AUDIO_IN, S1, 1, 1, b"old")
    h.send(Kind.CANCEL, S1, 2)  # turn 2 becomes current
    h.send(Kind.AUDIO_IN, S1, 1, 2, b"late")  # turn 1: stale
    h.send(Kind.COMMIT, S1, 1, 3)  # a COMMIT of a stale turn is stale too
    h.send(Kind.AUDIO_IN, S1, 2, 1, b"new")
    h.pump()
    assert h.received() == [
        (Kind.SESSION_OPEN, S1, 1, 0, b"", 0),
        (Kind.AUDIO_IN, S1, 1, 1, b"old!", 0),
        (Kind.CANCEL, S1, 2, 0, b"", 0),
        (Kind.AUDIO_IN, S1, 2, 1, b"new!", 0),
    ]
    assert h.status.get(Field.DROPPED_STALE) == 2
    assert h.status.get(Field.DROPPED_UNKNOWN) == 1
    assert h.worker.current_turn(S1) == 2
    assert h.worker.current_turn(S2) is None


def test_newer_turn_splits_the_batch_and_resets_turn_state(make: Callable[..., Harness]) -> None:
    h = make(EchoCountStage)
    h.send(Kind.SESSION_OPEN, S1, 1)
    h.send(Kind.SESSION_OPEN, S2, 1)
    h.send(Kind.AUDIO_IN, S1, 1, 1, b"p")
    h.send(Kind.AUDIO_IN, S2, 1, 1, b"q")
    h.send(Kind.AUDIO_IN, S1, 1, 2, b"p")
    h.send(Kind.AUDIO_IN, S1, 3, 1, b"r")  # a newer turn starts without a control record
    h.send(Kind.AUDIO_IN, S2, 1, 2, b"q")
    h.send(Kind.BARGE_IN, S2, 2)
    h.send(Kind.AUDIO_IN, S2, 2, 1, b"s")
    h.pump()
    data = [(k, s, t, q, p) for k, s, t, q, p, _ in h.received() if k == Kind.AUDIO_IN]
    assert data == [
        (Kind.AUDIO_IN, S1, 1, 1, b"p#1"),
        (Kind.AUDIO_IN, S2, 1, 1, b"q#1"),
        (Kind.AUDIO_IN, S1, 1, 2, b"p#2"),
        (Kind.AUDIO_IN, S1, 3, 1, b"r#1"),
        (Kind.AUDIO_IN, S2, 1, 2, b"q#2"),
        (Kind.AUDIO_IN, S2, 2, 1, b"s#1"),
    ]


def test_reopen_keeps_session_state_and_moves_the_turn(make: Callable[..., Harness]) -> None:
    h = make(RecordingStage)
    h.send(Kind.SESSION_OPEN, S1, 1, 0, b"first")
    h.send(Kind.SESSION_OPEN, S1, 4, 0, b"again", Flag.REOPEN)
    h.send(Kind.AUDIO_IN, S1, 3, 1, b"stale")
    h.send(Kind.AUDIO_IN, S1, 4, 1, b"ok")
    h.pump()
    stage = h.stage
    assert isinstance(stage, RecordingStage)
    assert stage.calls == [
        ("open", S1, 1, b"first"),
        ("turn", S1, 4),
        ("records", [(S1, 4, 1)]),
    ]
    assert [(*r[:3], r[5]) for r in h.received()] == [
        (Kind.SESSION_OPEN, S1, 1, 0),
        (Kind.SESSION_OPEN, S1, 4, Flag.REOPEN),
        (Kind.AUDIO_IN, S1, 4, 0),
    ]


def test_timing_counters(make: Callable[..., Harness]) -> None:
    h = make(RecordingStage)
    h.send(Kind.SESSION_OPEN, S1, 1)
    for seq in range(1, 11):
        h.send(Kind.AUDIO_IN, S1, 1, seq, b"f")
    h.pump()
    assert len(h.received()) == 11
    snap = h.status.snapshot()
    wait = snap.histograms["ring_wait"]
    compute = snap.histograms["compute"]
    assert wait.count == 11  # every record: the ring stamps each one it publishes
    assert snap.counters["unstamped"] == 0
    assert wait.sum_ns > 0
    assert compute.count == 11  # the open (its hook) and the 10 frames
    assert snap.counters["batches"] >= 1
    assert snap.counters["heartbeat_ns"] > 0
    assert snap.heartbeat_age_s < 60
    assert h.status.histogram(Histogram.TICK).count == 0


def test_last_stage_routes_by_gateway(make: Callable[..., Harness]) -> None:
    h = make(PassThroughStage, outputs=2, route=gateway_of)
    a, b, nowhere = session_id(0, 5), session_id(1, 5), session_id(7, 1)
    for sid in (a, b, nowhere):
        h.send(Kind.SESSION_OPEN, sid, 1)
        h.send(Kind.AUDIO_OUT, sid, 1, 1, b"x")
    h.pump()
    assert [(r[0], r[1], r[4]) for r in h.received(0)] == [
        (Kind.SESSION_OPEN, a, b""),
        (Kind.AUDIO_OUT, a, b"x|stt"),
    ]
    assert [(r[0], r[1], r[4]) for r in h.received(1)] == [
        (Kind.SESSION_OPEN, b, b""),
        (Kind.AUDIO_OUT, b, b"x|stt"),
    ]
    assert h.status.get(Field.DROPPED_UNROUTABLE) == 2


def test_several_input_rings_are_all_read(make: Callable[..., Harness]) -> None:
    h = make(PassThroughStage, inputs=3)
    sessions = [session_id(g, 1) for g in range(3)]
    for g, sid in enumerate(sessions):
        h.send(Kind.SESSION_OPEN, sid, 1, ring=g)
        for seq in range(1, 4):
            h.send(Kind.AUDIO_IN, sid, 1, seq, b"%d" % seq, ring=g)
    h.pump()
    got = h.received()
    for sid in sessions:
        assert [(r[0], r[3], r[4]) for r in got if r[1] == sid] == [
            (Kind.SESSION_OPEN, 0, b""),
            (Kind.AUDIO_IN, 1, b"1|stt"),
            (Kind.AUDIO_IN, 2, b"2|stt"),
            (Kind.AUDIO_IN, 3, b"3|stt"),
        ]
    # Idle with several rings: the pass waits on all of them and reads nothing.
    assert h.worker.run_once(0.01) == 0


def test_a_record_on_any_input_ring_wakes_a_parked_worker(make: Callable[..., Harness]) -> None:
    h = make(PassThroughStage, inputs=3)
    for ring in range(3):
        h.send(Kind.SESSION_OPEN, session_id(ring, 1), 1, ring=ring)
    h.pump()
    h.received()
    for ring in (2, 0, 1):
        # Written while the worker is parked on every ring's doorbell: it must wake well
        # before its 60 s timeout, whichever ring the record is on.
        writer = threading.Timer(
            0.05, h.send, (Kind.AUDIO_IN, session_id(ring, 1), 1, 1, b"x"), {"ring": ring}
        )
        writer.start()
        try:
            assert h.worker.run_once(60.0) == 1
        finally:
            writer.join()
        assert [(r[1], r[4]) for r in h.received()] == [(session_id(ring, 1), b"x|stt")]


def test_tick_runs_and_is_timed(make: Callable[..., Harness]) -> None:
    h = make(TickingStage)
    h.send(Kind.SESSION_OPEN, S1, 1)
    h.worker.run_once(0.0)
    h.worker.run_once(0.0)
    ticks = [r for r in h.received() if r[0] == Kind.TRANSCRIPT_PARTIAL]
    assert len(ticks) >= 1
    assert h.status.get(Field.TICKS) == h.status.histogram(Histogram.TICK).count >= 2


def test_full_output_keeps_records_queued_then_counts_a_discard(
    make: Callable[..., Harness],
) -> None:
    h = make(PassThroughStage, out_capacity=4096)
    h.send(Kind.SESSION_OPEN, S1, 1)
    for seq in range(1, 41):
        h.send(Kind.AUDIO_IN, S1, 1, seq, bytes(200))
    h.worker._stopping = lambda: True  # give up at once instead of waiting for room
    h.pump()
    queued = h.worker.outbox.pending()
    assert queued > 0
    first = h.received()
    assert [r[3] for r in first] == list(range(len(first)))  # in order, none lost so far
    # Room again: the queued records follow, still in order.
    h.worker.outbox.flush(h.status.beat, 0.01, lambda: True)
    second = h.received()
    assert [r[3] for r in second] == list(range(len(first), len(first) + len(second)))
    remaining = h.worker.outbox.pending()
    assert remaining == 41 - len(first) - len(second)
    assert h.worker.outbox.discard() == remaining
    assert h.status.get(Field.DROPPED_OUTPUT) == remaining


class ForwardStage(Stage[None]):
    """Forwards every record as it was read (``out.emit(m)``): written ring to ring."""

    def open_session(self, session: int, turn: int, params: memoryview) -> None:
        return None

    def on_records(self, batch: Batch, states: Mapping[int, None], out: Output) -> None:
        for m in batch:
            out.emit(m)


def test_forwarded_records_that_wait_for_room_outlive_their_input_batch(
    make: Callable[..., Harness],
) -> None:
    """A forwarded record is a view into the input ring; one still queued when its batch
    is released is copied first, so the input ring reusing that space cannot change it."""
    h = make(ForwardStage, out_capacity=4096)
    h.send(Kind.SESSION_OPEN, S1, 1)
    sent = [bytes([seq]) * 300 for seq in range(1, 41)]
    for seq, payload in enumerate(sent, 1):
        h.send(Kind.AUDIO_IN, S1, 1, seq, payload)
    h.worker._stopping = lambda: True  # give up at once instead of waiting for room
    h.pump()
    assert h.worker.outbox.pending() > 0
    # The input ring's space is reused by the next records before the queue drains.
    for seq in range(41, 201):
        h.send(Kind.AUDIO_IN, S1, 1, seq, b"\xee" * 300)
    got: list[Out] = []
    while len(got) < 41:
        got += h.received()
        h.worker.outbox.flush(h.status.beat, 0.01, lambda: True)
    assert [r[4] for r in got[1:41]] == sent
    assert [r[3] for r in got[:41]] == list(range(41))


def test_too_large_a_record_is_an_error_naming_the_ring(make: Callable[..., Harness]) -> None:
    h = make(PassThroughStage, out_capacity=4096)
    with pytest.raises(ValueError, match=r"AUDIO_OUT record of 5000 bytes does not fit ring"):
        h.worker.outbox.emit(
            Record(kind=Kind.AUDIO_OUT, session=S1, turn=1, seq=1, payload=bytes(5000))
        )


def _attach_and_die(name: str, impl: str) -> None:
    ring_class(impl).attach(name, "producer")
    os._exit(0)  # holding the role, as a killed process would


def test_a_dead_producer_is_not_an_error(make: Callable[..., Harness]) -> None:
    h = make(PassThroughStage)
    # Hand the producer role to another process, which dies: the worker keeps serving.
    feed_name = h.feeds[0].name
    h.feeds[0].close()
    h.feeds[0] = ring_class(h.impl).attach(feed_name, "observer")
    process = multiprocessing.get_context("spawn").Process(
        target=_attach_and_die, args=(feed_name, h.impl)
    )
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert h.worker.run_once(0.05) == 0
    replacement = ring_class(h.impl).attach(feed_name, "producer")
    try:
        assert replacement.try_write(Record(kind=Kind.SESSION_OPEN, session=S1, turn=1))
        assert h.worker.run_once(1.0) == 1
        assert [r[0] for r in h.received()] == [Kind.SESSION_OPEN]
    finally:
        replacement.close()


def test_lossy_output_drops_what_does_not_fit_instead_of_waiting(
    make: Callable[..., Harness],
) -> None:
    h = make(PassThroughStage, out_capacity=4096, lossy=True)
    h.send(Kind.SESSION_OPEN, S1, 1)
    for seq in range(1, 41):
        h.send(Kind.AUDIO_IN, S1, 1, seq, bytes(200))
    h.pump()  # never waits, whatever give_up says
    assert h.worker.outbox.pending() == 0
    got = h.received()
    assert [r[3] for r in got] == list(range(len(got)))  # a prefix, in order
    assert 0 < len(got) < 41
    assert h.status.get(Field.DROPPED_OUTPUT) == 41 - len(got)
