"""Two-process tests: a checksummed stress run, a producer faster than its consumer,
park/wake cycles without a lost wake-up, kill -9 of either side, and restarted sides
resuming where the dead one stopped."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ring_children as children
from ring_impls import IMPLEMENTATIONS

from voicegate.core.layout import record_size
from voicegate.ext import Record
from voicegate.ext._ring import Ring
from voicegate.ext.errors import PeerDied, RingError
from voicegate.ext.procinfo import process_state
from voicegate.ext.reference import ReferenceRing

SPAWN = mp.get_context("spawn")
IMPL_IDS = {"Ring": "cython", "ReferenceRing": "reference"}


def _impl_name(cls: Any) -> str:
    return IMPL_IDS[cls.__name__]


class Children:
    """Spawned children that are always killed and reaped, whatever the test does."""

    def __init__(self) -> None:
        self.procs: list[Any] = []

    def start(self, target: Callable[..., None], *args: Any) -> Any:
        proc = SPAWN.Process(target=target, args=args, daemon=True)
        proc.start()
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=30)


@pytest.fixture
def kids() -> Iterator[Children]:
    group = Children()
    try:
        yield group
    finally:
        group.cleanup()


def _kill9_and_wait_zombie(proc: Any) -> None:
    """SIGKILL without reaping: the child stays a zombie, which ``os.kill(pid, 0)`` would
    still report as alive."""
    os.kill(proc.pid, signal.SIGKILL)
    while (state := process_state(proc.pid)) is not None and state.state != "Z":
        time.sleep(0.001)


def _stress(impl: Any, name: str, kids: Children, count: int, capacity: int) -> None:
    payloads = children.Payloads(seed=1234)
    with impl.create(name, capacity, role="consumer", spin_us=20) as ring:
        proc = kids.start(children.stress_producer, _impl_name(impl), name, count, 1234)
        expected = 0
        streamed = 0  # bytes of records that went through the ring
        end = None
        rec: Any = None
        payload: Any = None
        while end is None:
            batch = ring.read_batch(256, timeout=30.0)
            assert batch, "producer stalled"
            for rec in batch:
                if rec.kind == children.KIND_END:
                    end = children.END.unpack(rec.payload)
                    break
                assert rec.origin_ns == expected, "lost, duplicated or reordered record"
                assert rec.seq == expected & 0xFFFF_FFFF
                payload = rec.payload
                assert payload.nbytes == rec.session
                streamed += record_size(rec.session)
                assert zlib.crc32(payload) == rec.turn, f"corrupt payload at {expected}"
                if expected % 9973 == 0:  # spot-check the bytes, not only the checksum
                    assert bytes(payload) == payloads.get(expected)[0]
                expected += 1
            batch = rec = payload = None  # views must not outlive the ring
        assert end[0] == count == expected
        proc.join(timeout=60)
        assert proc.exitcode == 0
        ring.release()
        stats = ring.stats()
        assert stats["written"] == stats["read"] == count + 1  # the end record included
        assert ring.available() == 0
        assert streamed // capacity > 100, "the stream should wrap the ring many times"


@pytest.mark.slow
def test_stress_five_million_records_cython(ring_name: str, kids: Children) -> None:
    _stress(Ring, ring_name, kids, count=5_000_000, capacity=1 << 16)


def test_stress_reference(ring_name: str, kids: Children) -> None:
    _stress(ReferenceRing, ring_name, kids, count=100_000, capacity=1 << 15)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_producer_faster_than_consumer(impl: Any, ring_name: str, kids: Children) -> None:
    attempts = 100_000
    with impl.create(ring_name, 1 << 14, role="consumer") as ring:
        proc = kids.start(children.flooding_producer, _impl_name(impl), ring_name, attempts)
        last = -1
        received = 0
        while True:
            batch = ring.read_batch(16, timeout=30.0)
            assert batch, "producer stalled"
            if batch[-1].kind == children.KIND_END:
                reported_attempts, refused = children.END.unpack(batch[-1].payload)
                batch = batch[:-1]
            else:
                refused = -1
            for rec in batch:
                assert rec.seq > last, "reordered or duplicated"
                assert bytes(rec.payload[:8]) == rec.seq.to_bytes(8, "little")
                last = rec.seq
                received += 1
            del batch, rec
            if refused >= 0:
                break
            time.sleep(0.0005)  # a slow consumer
        proc.join(timeout=60)
        assert proc.exitcode == 0
        stats = ring.stats()
        assert reported_attempts == attempts
        assert refused > 0, "the producer never found the ring full"
        assert received + refused == attempts
        assert stats["dropped_full"] == refused
        assert stats["written"] == received + 1


def _ping_pong(impl: Any, base: str, kids: Children, cycles: int, cpus: tuple[int, int]) -> None:
    """Both sides park on every message (spin 0, 30 s park slices) until ``cycles`` parks
    happened: a lost wake-up would show as a slice that timed out."""
    out, back = base + "o", base + "b"
    tx = impl.create(out, 1 << 12, role="producer")
    rx = impl.create(back, 1 << 12, role="consumer", spin_us=0, park_slice_s=30.0)
    try:
        proc = kids.start(children.echo, _impl_name(impl), out, back, cpus[1])
        own_affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpus[0]})
        try:
            seq = 0
            parks = 0
            while parks < cycles:
                for _ in range(1000):
                    assert tx.try_write(
                        Record(kind=children.KIND_DATA, session=0, turn=0, seq=seq)
                    )
                    rec = rx.read(timeout=None)
                    assert rec is not None and rec.seq == seq
                    seq += 1
                parks = tx.stats()["consumer_parks"] + rx.stats()["consumer_parks"]
            del rec
        finally:
            os.sched_setaffinity(0, own_affinity)
        assert tx.try_write(Record(kind=children.KIND_END, session=0, turn=0))
        end = rx.read(timeout=60.0)
        assert end is not None and end.kind == children.KIND_END
        _, child_timeouts = children.END.unpack(end.payload)
        del end
        proc.join(timeout=60)
        assert proc.exitcode == 0
        assert child_timeouts == 0, "the echo side missed a wake-up"
        assert rx.slice_timeouts == 0, "this side missed a wake-up"
        # With no slice timing out, every one of those parks ended by a wake-up.
        woken = tx.stats()["wakeups_sent"] + rx.stats()["wakeups_sent"]
        assert woken >= parks >= cycles
    finally:
        gc.collect()
        rx.close()
        tx.close()


@pytest.mark.slow
def test_one_million_park_wake_cycles_cython(ring_name: str, kids: Children) -> None:
    # Across two cores when there are two: both sides then really run in parallel, which
    # is what exposes a missing fence between a sleeping flag and a position.
    cpus = sorted(os.sched_getaffinity(0))
    _ping_pong(Ring, ring_name, kids, cycles=1_000_000, cpus=(cpus[0], cpus[-1]))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_park_wake_across_cores(impl: Any, ring_name: str, kids: Children) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    _ping_pong(impl, ring_name, kids, cycles=20_000, cpus=(cpus[0], cpus[1]))


def _kill_later(proc: Any, delay: float) -> threading.Timer:
    timer = threading.Timer(delay, os.kill, args=(proc.pid, signal.SIGKILL))
    timer.start()
    return timer


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_kill9_of_producer_is_detected(impl: Any, ring_name: str, kids: Children) -> None:
    with impl.create(ring_name, 1 << 12, role="consumer", spin_us=0) as ring:
        assert not ring.peer_alive() and ring.peer_pid == 0
        ready = SPAWN.Event()
        proc = kids.start(children.hold_role, _impl_name(impl), ring_name, "producer", ready, 3, 0)
        assert ready.wait(60)
        assert ring.peer_alive() and ring.peer_pid == proc.pid
        assert ring.peer_beat_age() < 3600
        assert [r.seq for r in ring.read_batch(10, timeout=1.0)] == [0, 1, 2]
        timer = _kill_later(proc, 0.05)
        with pytest.raises(PeerDied, match="producer gone"):
            ring.read(timeout=None)  # parked when the kill lands
        timer.join()
        assert not ring.peer_alive()
        assert process_state(proc.pid) is not None  # a zombie, not yet reaped


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_kill9_of_consumer_is_detected(impl: Any, ring_name: str, kids: Children) -> None:
    with impl.create(ring_name, 1 << 12, role="producer", spin_us=0) as ring:
        ready = SPAWN.Event()
        proc = kids.start(children.hold_role, _impl_name(impl), ring_name, "consumer", ready, 0, 0)
        assert ready.wait(60)
        assert ring.peer_alive()
        while ring.try_write(Record(kind=1, session=0, turn=0, payload=b"f" * 500)):
            pass
        timer = _kill_later(proc, 0.05)
        with pytest.raises(PeerDied, match="consumer gone"):
            ring.write(Record(kind=1, session=0, turn=0, payload=b"f" * 500), timeout=None)
        timer.join()
        _kill9_and_wait_zombie(proc)
        assert not ring.peer_alive()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_restarted_producer_resumes_from_published_position(
    impl: Any, ring_name: str, kids: Children
) -> None:
    with impl.create(ring_name, 1 << 12, role="consumer") as ring:
        ready = SPAWN.Event()
        first = kids.start(children.hold_role, _impl_name(impl), ring_name, "producer", ready, 5, 3)
        assert ready.wait(60)
        with pytest.raises(RingError, match=f"held by live pid {first.pid}"):
            impl.attach(ring_name, "producer")
        _kill9_and_wait_zombie(first)
        # The dead producer's 3 staged records are overwritten by its replacement.
        with impl.attach(ring_name, "producer") as producer:
            for seq in (100, 101):
                assert producer.try_write(
                    Record(kind=1, session=0, turn=0, seq=seq, payload=b"replacement")
                )
            got = [(r.seq, bytes(r.payload)) for r in ring.read_batch(20, timeout=1.0)]
        assert got == [(s, b"published") for s in range(5)] + [
            (100, b"replacement"),
            (101, b"replacement"),
        ]
        assert ring.stats()["written"] == 7


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_restarted_consumer_resumes_from_released_position(
    impl: Any, ring_name: str, kids: Children
) -> None:
    with impl.create(ring_name, 1 << 12, role="producer") as ring:
        for seq in range(10):
            assert ring.try_write(Record(kind=1, session=0, turn=0, seq=seq, payload=b"r"))
        ready = SPAWN.Event()
        first = kids.start(children.consume_some, _impl_name(impl), ring_name, ready, 4, 2)
        assert ready.wait(60)
        with pytest.raises(RingError, match=f"held by live pid {first.pid}"):
            impl.attach(ring_name, "consumer")
        _kill9_and_wait_zombie(first)
        assert not ring.peer_alive()
        results = SPAWN.Queue()
        second = kids.start(children.drain_to, _impl_name(impl), ring_name, results, 6)
        # Read-but-unreleased records (4, 5) are delivered again; nothing is skipped.
        assert results.get(timeout=60) == list(range(4, 10))
        second.join(timeout=60)
        assert second.exitcode == 0
        assert ring.available() == 0
