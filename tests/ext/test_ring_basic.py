"""Single-process behaviour of both ring implementations: records, wrap, full, staging,
batches, views, roles, limits and errors."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from voicegate.core.layout import CONTROL_OFFSETS, KIND_PAD, RECORD_HEADER_SIZE, record_size
from voicegate.ext import Record
from voicegate.ext.errors import RingClosed, RingError
from voicegate.ext.ring_format import PARKED_ON_SEMAPHORE, SHM_DIR

CAP = 4096


@pytest.fixture
def trio(impl: Any, ring_name: str) -> Iterator[tuple[Any, Any, Any]]:
    """Owner, producer and consumer handles of one ring, all in this process."""
    owner = impl.create(ring_name, CAP)
    producer = impl.attach(ring_name, "producer")
    consumer = impl.attach(ring_name, "consumer", spin_us=0)
    try:
        yield owner, producer, consumer
    finally:
        gc.collect()  # payload views held by failed assertions' frames
        for handle in (consumer, producer, owner):
            handle.close()


def test_publish_time_is_written_into_every_header(trio: tuple[Any, Any, Any]) -> None:
    """sent_ns is the publish time, written by the ring: staged records get the time of
    the publish that makes them visible, and the payload carries no stamp. Records of
    ~1 KiB wrap the ring, so a padding record lies among those stamped."""
    _, producer, consumer = trio
    body = b"w" * 1000
    for seq in range(12):
        assert producer.stage(
            Record(kind=1, session=2, turn=3, seq=seq, origin_ns=4, payload=body)
        )
        staged = time.monotonic_ns()
        if seq % 3 == 2:
            producer.publish()
            published = time.monotonic_ns()
            batch = consumer.read_batch(3)
            assert [r.seq for r in batch] == [seq - 2, seq - 1, seq]
            assert all(staged <= r.sent_ns <= published for r in batch)
            assert len({r.sent_ns for r in batch}) == 1  # one publish, one time
            assert all(bytes(r.payload) == body for r in batch)
            consumer.release()


def test_roundtrip_fields_and_payload(trio: tuple[Any, Any, Any]) -> None:
    _, producer, consumer = trio
    assert producer.try_write(
        Record(kind=7, session=11, turn=13, seq=17, origin_ns=-19, payload=b"abc", flags=5)
    )
    assert producer.try_write(
        Record(
            kind=65534,
            session=2**32 - 1,
            turn=2**32 - 1,
            seq=2**32 - 1,
            origin_ns=2**63 - 1,
            flags=65535,
        ),
    )
    rec = consumer.try_read()
    assert (rec.kind, rec.flags, rec.session, rec.turn, rec.seq, rec.origin_ns) == (
        7,
        5,
        11,
        13,
        17,
        -19,
    )
    assert bytes(rec.payload) == b"abc"
    assert rec.payload.readonly
    assert "abc" not in repr(rec)  # payloads never reach logs
    rec = consumer.try_read()
    assert (rec.kind, rec.flags, rec.session, rec.turn, rec.seq, rec.origin_ns) == (
        65534,
        65535,
        2**32 - 1,
        2**32 - 1,
        2**32 - 1,
        2**63 - 1,
    )
    assert rec.payload.nbytes == 0
    del rec
    assert consumer.try_read() is None
    stats = consumer.stats()
    assert stats["written"] == 2 and stats["read"] == 2
    assert stats["occupancy_bytes"] == 0 and stats["capacity"] == CAP


def test_wrap_uses_a_padding_record(trio: tuple[Any, Any, Any]) -> None:
    owner, producer, consumer = trio
    body = bytes(range(256)) * 4
    # 1056-byte records: the fourth does not fit before the end and goes to offset 0.
    sent = 0
    for round_ in range(20):
        for _ in range(2):
            assert producer.try_write(
                Record(kind=1, session=round_, turn=0, seq=sent, payload=body[: 1000 + round_])
            )
            sent += 1
        for _ in range(2):
            rec = consumer.try_read()
            assert rec is not None and rec.payload.nbytes == 1000 + round_
            assert bytes(rec.payload) == body[: 1000 + round_]
            assert rec.kind != KIND_PAD
        del rec
        consumer.release()
        assert owner.available() == 0
    assert consumer.stats()["read"] == sent


def test_full_ring_refuses_and_counts(trio: tuple[Any, Any, Any]) -> None:
    _, producer, consumer = trio
    payload = b"x" * (CAP // 4 - RECORD_HEADER_SIZE)
    for seq in range(4):
        assert producer.try_write(Record(kind=1, session=0, turn=0, seq=seq, payload=payload))
    assert producer.available() == CAP
    assert not producer.try_write(Record(kind=1, session=0, turn=0, seq=4, payload=payload))
    assert not producer.try_write(Record(kind=1, session=0, turn=0, seq=4))
    assert producer.stats()["dropped_full"] == 2
    assert consumer.try_read().seq == 0
    # Read but not released: still full for the producer.
    assert not producer.try_write(Record(kind=1, session=0, turn=0, seq=4, payload=payload))
    consumer.release()
    assert producer.try_write(Record(kind=1, session=0, turn=0, seq=4, payload=payload))
    assert [consumer.try_read().seq for _ in range(4)] == [1, 2, 3, 4]
    assert producer.stats()["dropped_full"] == 3


def test_stage_then_publish(trio: tuple[Any, Any, Any]) -> None:
    _, producer, consumer = trio
    for seq in range(5):
        assert producer.stage(
            Record(kind=2, session=1, turn=1, seq=seq, payload=bytes([seq]) * seq)
        )
    assert consumer.try_read() is None
    assert producer.available() == 0
    assert producer.publish() == 5
    assert producer.publish() == 0
    got = consumer.read_batch(10)
    assert [(r.seq, bytes(r.payload)) for r in got] == [(s, bytes([s]) * s) for s in range(5)]


def test_write_batch_stops_at_first_misfit(trio: tuple[Any, Any, Any]) -> None:
    _, producer, consumer = trio
    big = b"y" * 1500
    records = [
        Record(kind=3, session=9, turn=1, seq=seq, origin_ns=seq * 10, payload=big)
        for seq in range(4)
    ]
    assert producer.write_batch(records) == 2
    assert producer.stats()["dropped_full"] == 1
    batch = consumer.read_batch(max_records=1)
    assert [r.seq for r in batch] == [0]
    batch = consumer.read_batch(max_records=8)
    assert [(r.seq, r.origin_ns) for r in batch] == [(1, 10)]
    del batch
    consumer.release()
    assert producer.write_batch(iter(records[2:])) == 2
    assert [r.seq for r in consumer.read_batch()] == [2, 3]


def test_payload_limits(trio: tuple[Any, Any, Any]) -> None:
    _, producer, consumer = trio
    assert producer.max_payload == CAP // 2 - RECORD_HEADER_SIZE
    assert producer.try_write(
        Record(kind=1, session=0, turn=0, payload=b"z" * producer.max_payload)
    )
    with pytest.raises(ValueError, match="max_payload"):
        producer.try_write(
            Record(kind=1, session=0, turn=0, payload=b"z" * (producer.max_payload + 1))
        )
    assert consumer.try_read().payload.nbytes == producer.max_payload


@pytest.mark.parametrize(
    ("field", "args"),
    [
        ("kind", dict(kind=KIND_PAD)),
        ("kind", dict(kind=-1)),
        ("flags", dict(flags=1 << 16)),
        ("session", dict(session=-1)),
        ("turn", dict(turn=1 << 32)),
        ("seq", dict(seq=1 << 32)),
    ],
)
def test_out_of_range_fields_are_named(
    trio: tuple[Any, Any, Any], field: str, args: dict[str, int]
) -> None:
    _, producer, _ = trio
    fields = dict(kind=1, session=0, turn=0, seq=0, origin_ns=0, payload=b"", flags=0)
    fields.update(args)
    with pytest.raises((ValueError, OverflowError), match=field):
        producer.try_write(Record(**fields))
    assert producer.stats()["written"] == 0


def test_numpy_payload(trio: tuple[Any, Any, Any]) -> None:
    _, producer, consumer = trio
    pcm = (np.arange(320, dtype=np.int16) * 37).astype(np.int16)
    assert producer.try_write(Record(kind=1, session=1, turn=1, seq=1, payload=pcm))
    rec = consumer.read(timeout=0)
    np.testing.assert_array_equal(np.frombuffer(rec.payload, dtype=np.int16), pcm)


def test_read_waits_with_timeout_and_counts_parks(trio: tuple[Any, Any, Any]) -> None:
    _, producer, consumer = trio
    assert consumer.read(timeout=0.02) is None
    assert consumer.read_batch(timeout=0.0) == []
    assert not consumer.wait(timeout=0.01)
    assert consumer.stats()["consumer_parks"] >= 2
    producer.try_write(Record(kind=1, session=0, turn=0))
    assert consumer.wait(timeout=1.0)
    assert consumer.read(timeout=None).seq == 0


def test_blocking_write_times_out_when_full(trio: tuple[Any, Any, Any]) -> None:
    _, producer, _ = trio
    payload = b"w" * (CAP // 2 - RECORD_HEADER_SIZE)
    assert producer.write(Record(kind=1, session=0, turn=0, payload=payload), timeout=0)
    assert producer.write(Record(kind=1, session=0, turn=0, seq=1, payload=payload), timeout=0)
    assert not producer.write(
        Record(kind=1, session=0, turn=0, seq=2, payload=payload), timeout=0.02
    )
    stats = producer.stats()
    assert stats["dropped_full"] == 1 and stats["producer_parks"] >= 1


def test_close_with_live_views_raises_buffer_error(impl: Any, ring_name: str) -> None:
    owner = impl.create(ring_name, CAP, role="consumer")
    producer = impl.attach(ring_name, "producer")
    producer.try_write(Record(kind=1, session=0, turn=0, payload=b"held"))
    view = owner.try_read().payload
    with pytest.raises(BufferError):
        owner.close()
    # Nothing changed: the handle still works and the ring still exists.
    assert bytes(view) == b"held"
    assert os.path.exists(f"{SHM_DIR}/{ring_name}")
    assert owner.try_read() is None
    del view
    gc.collect()
    producer.close()
    owner.close()
    assert not os.path.exists(f"{SHM_DIR}/{ring_name}")
    owner.close()  # idempotent


def test_roles_are_enforced(trio: tuple[Any, Any, Any], impl: Any, ring_name: str) -> None:
    owner, producer, consumer = trio
    with pytest.raises(RingError, match="producer role"):
        consumer.try_write(Record(kind=1, session=0, turn=0))
    with pytest.raises(RingError, match="consumer role"):
        producer.try_read()
    with pytest.raises(RingError, match="consumer role"):
        owner.read_batch()
    with pytest.raises(RingError, match="held by live pid"):
        impl.attach(ring_name, "producer")
    with pytest.raises(RingError, match="held by live pid"):
        impl.attach(ring_name, "consumer")
    with pytest.raises(ValueError, match="role"):
        impl.attach(ring_name, "owner")
    with pytest.raises(RingError, match="only its owner"):
        producer.unlink()
    with pytest.raises(RingError, match="no peer"):
        owner.peer_alive()


def test_detached_role_can_be_taken_again(impl: Any, ring_name: str) -> None:
    with impl.create(ring_name, CAP, role="producer") as owner:
        consumer = impl.attach(ring_name, "consumer")
        assert owner.peer_alive() and owner.peer_pid == os.getpid()
        owner.try_write(Record(kind=1, session=0, turn=0, payload=b"a"))
        owner.try_write(Record(kind=1, session=0, turn=0, seq=1, payload=b"b"))
        assert consumer.try_read().seq == 0
        consumer.release()
        consumer.close()
        assert not owner.peer_alive() and owner.peer_pid == 0
        assert owner.peer_beat_age() == float("inf")
        consumer = impl.attach(ring_name, "consumer")
        assert consumer.try_read().seq == 1
        assert consumer.peer_beat_age() < 3600
        consumer.close()


def test_observer_reads_stats_without_a_role(impl: Any, ring_name: str) -> None:
    with impl.create(ring_name, CAP, role="producer") as producer:
        observer = impl.attach(ring_name, "observer")
        producer.try_write(Record(kind=1, session=0, turn=0, payload=b"12345"))
        stats = observer.stats()
        assert stats["written"] == 1
        assert stats["occupancy_bytes"] == record_size(5) == observer.available()
        assert stats["producer_pid"] == os.getpid() and stats["consumer_pid"] == 0
        with pytest.raises(RingError):
            observer.try_write(Record(kind=1, session=0, turn=0))
        with pytest.raises(RingError):
            observer.beat()
        observer.close()
        consumer = impl.attach(ring_name, "consumer")  # the observer held no role
        consumer.close()


def test_owner_close_is_seen_by_both_sides(impl: Any, ring_name: str) -> None:
    owner = impl.create(ring_name, CAP)
    producer = impl.attach(ring_name, "producer")
    consumer = impl.attach(ring_name, "consumer", spin_us=0)
    producer.try_write(Record(kind=1, session=0, turn=0, payload=b"last"))
    owner.close()
    assert not os.path.exists(f"{SHM_DIR}/{ring_name}")
    with pytest.raises(RingClosed):
        producer.try_write(Record(kind=1, session=0, turn=0, seq=1))
    # What was published before the close can still be drained, then RingClosed.
    assert consumer.read(timeout=1).seq == 0
    with pytest.raises(RingClosed):
        consumer.read(timeout=None)
    with pytest.raises(RingClosed):
        consumer.try_read()
    with pytest.raises(RingError, match="no ring named"):
        impl.attach(ring_name, "observer")
    producer.close()
    consumer.close()
    with pytest.raises(RingClosed):
        consumer.try_read()


def test_create_validates_arguments(impl: Any, ring_name: str) -> None:
    with pytest.raises(ValueError, match="capacity"):
        impl.create(ring_name, 5000)
    with pytest.raises(ValueError, match="capacity"):
        impl.create(ring_name, 1024)
    with pytest.raises(ValueError, match="ring name"):
        impl.create("bad/name", CAP)
    with pytest.raises(ValueError, match="ring name"):
        impl.create("", CAP)
    with pytest.raises(RingError, match="no ring named"):
        impl.attach(ring_name, "consumer")
    with impl.create(ring_name, CAP), pytest.raises(RingError, match="already exists"):
        impl.create(ring_name, CAP)


def test_unlinked_names_are_not_removed_twice(impl: Any, ring_name: str) -> None:
    first = impl.create(ring_name, CAP)
    first.unlink()
    assert not os.path.exists(f"{SHM_DIR}/{ring_name}")
    with impl.create(ring_name, CAP) as second:
        first.close()  # must not remove the new ring that reuses the name
        del first
        gc.collect()
        assert os.path.exists(f"{SHM_DIR}/{ring_name}")
        assert second.stats()["written"] == 0


def test_dropped_owner_removes_its_ring(impl: Any, ring_name: str) -> None:
    owner = impl.create(ring_name, CAP, role="producer")
    assert owner.try_write(Record(kind=1, session=0, turn=0, payload=b"x"))
    del owner
    gc.collect()
    assert not os.path.exists(f"{SHM_DIR}/{ring_name}")


def test_invalid_record_voids_its_batch(trio: tuple[Any, Any, Any]) -> None:
    _, producer, consumer = trio
    assert producer.stage(Record(kind=1, session=0, turn=0, payload=b"staged before"))
    good = Record(kind=2, session=0, turn=0, seq=1, payload=b"ok")
    too_big = Record(kind=2, session=0, turn=0, seq=2, payload=b"b" * CAP)
    with pytest.raises(ValueError, match="max_payload"):
        producer.write_batch([good, too_big])
    with pytest.raises(TypeError):  # not a Record
        producer.write_batch([good, (2, 0, 0)])
    assert producer.publish() == 1
    assert [r.seq for r in consumer.read_batch()] == [0]
    assert producer.stats()["written"] == 1


def test_gil_is_released_while_parked(impl: Any, ring_name: str) -> None:
    with impl.create(ring_name, CAP, role="consumer", spin_us=0, park_slice_s=3600) as ring:
        producer = impl.attach(ring_name, "producer")
        got: list[int] = []

        def park() -> None:
            record = ring.read(timeout=None)
            got.append(record.seq)

        reader = threading.Thread(target=park, daemon=True)
        reader.start()
        flag = CONTROL_OFFSETS["consumer_sleeping"]
        fd = os.open(f"{SHM_DIR}/{ring_name}", os.O_RDONLY)
        try:
            # This thread runs while the reader is parked: the GIL was released.
            while os.pread(fd, 4, flag) != PARKED_ON_SEMAPHORE.to_bytes(4, "little"):
                time.sleep(0.001)
        finally:
            os.close(fd)
        with pytest.raises(RingError, match="another thread is waiting"):
            ring.close()  # unmapping under the parked reader would crash it
        assert producer.try_write(Record(kind=1, session=0, turn=0, seq=42))
        reader.join()
        assert got == [42]
        assert ring.stats()["consumer_parks"] == 1 and ring.slice_timeouts == 0
        producer.close()
