"""Child-process bodies for the multi-process ring tests (started with the "spawn"
context, so they live in an importable module)."""

from __future__ import annotations

import os
import random
import struct
import time
import zlib
from typing import Any

from voicegate.ext import Record
from voicegate.ext._ring import Ring
from voicegate.ext.reference import ReferenceRing

KIND_DATA = 1
KIND_END = 2
END = struct.Struct("<QQ")  # attempts, slice timeouts


def ring_class(impl: str) -> Any:
    return {"cython": Ring, "reference": ReferenceRing}[impl]


class Payloads:
    """Random payloads of 0-4096 bytes with their CRC32, cycled by sequence number."""

    def __init__(self, seed: int, count: int = 4096, max_len: int = 4096) -> None:
        rng = random.Random(seed)
        self.pool = rng.randbytes(1 << 16)
        self.table = []
        for _ in range(count):
            length = rng.randint(0, max_len)
            start = rng.randrange(0, len(self.pool) - length + 1)
            body = self.pool[start : start + length]
            self.table.append((body, zlib.crc32(body)))

    def get(self, seq: int) -> tuple[bytes, int]:
        return self.table[(seq * 2654435761) % len(self.table)]


def stress_producer(impl: str, name: str, count: int, seed: int) -> None:
    """Send ``count`` checksummed records in random-sized batches, waiting when full."""
    rng = random.Random(seed + 1)
    payloads = Payloads(seed)
    ring = ring_class(impl).attach(name, "producer")
    try:
        seq = 0
        while seq < count:
            size = min(rng.choice((1, 1, 4, 16, 64)), count - seq)
            batch = []
            for s in range(seq, seq + size):
                body, crc = payloads.get(s)
                record = Record(
                    kind=KIND_DATA, session=len(body), turn=crc, seq=s & 0xFFFF_FFFF,
                    origin_ns=s, payload=body,
                )  # fmt: skip
                batch.append(record)
            written = ring.write_batch(batch)
            seq += written
            if written < size:  # full: wait for space for the next one
                assert ring.write(batch[written], timeout=None)
                seq += 1
        ring.write(
            Record(
                kind=KIND_END,
                session=0,
                turn=0,
                payload=END.pack(count, ring.slice_timeouts),
            ),
            timeout=None,
        )
    finally:
        ring.close()


def flooding_producer(impl: str, name: str, attempts: int) -> None:
    """Never wait: try_write ``attempts`` records, counting refusals, then report."""
    ring = ring_class(impl).attach(name, "producer")
    try:
        refused = 0
        for seq in range(attempts):
            if not ring.try_write(
                Record(
                    kind=KIND_DATA,
                    session=0,
                    turn=0,
                    seq=seq,
                    origin_ns=seq,
                    payload=struct.pack("<Q", seq) * 20,
                ),
            ):
                refused += 1
        ring.write(
            Record(kind=KIND_END, session=0, turn=0, payload=END.pack(attempts, refused)),
            timeout=None,
        )
    finally:
        ring.close()


def echo(impl: str, inbound: str, outbound: str, cpu: int) -> None:
    """Ping-pong partner: park on ``inbound``, answer on ``outbound``, until KIND_END."""
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    cls = ring_class(impl)
    rx = cls.attach(inbound, "consumer", spin_us=0, park_slice_s=30.0)
    tx = cls.attach(outbound, "producer")
    try:
        while True:
            rec = rx.read(timeout=None)
            assert rec is not None
            if rec.kind == KIND_END:
                break
            assert tx.try_write(Record(kind=KIND_DATA, session=0, turn=0, seq=rec.seq))
        del rec
        rx.release()
        tx.write(
            Record(kind=KIND_END, session=0, turn=0, payload=END.pack(0, rx.slice_timeouts)),
            timeout=None,
        )
    finally:
        rx.close()
        tx.close()


def hold_role(  # noqa: PLR0917 (a multiprocessing target takes positional args)
    impl: str, name: str, role: str, ready: Any, publish: int, stage: int
) -> None:
    """Attach as ``role``; a producer publishes ``publish`` records (seq 0..) and then
    stages ``stage`` more without publishing; signal ``ready`` and wait to be killed."""
    ring = ring_class(impl).attach(name, role)
    if role == "producer":
        for seq in range(publish):
            assert ring.try_write(
                Record(kind=KIND_DATA, session=0, turn=0, seq=seq, payload=b"published")
            )
        for seq in range(publish, publish + stage):
            assert ring.stage(
                Record(kind=KIND_DATA, session=0, turn=0, seq=seq, payload=b"never published")
            )
    ready.set()
    time.sleep(600)


def consume_some(impl: str, name: str, ready: Any, released: int, unreleased: int) -> None:
    """Read ``released`` records and release them, read ``unreleased`` more, then wait
    to be killed."""
    ring = ring_class(impl).attach(name, "consumer")
    records = ring.read_batch(released, timeout=10.0)
    assert [r.seq for r in records] == list(range(released))
    ring.release()
    more = ring.read_batch(unreleased, timeout=10.0)
    assert [r.seq for r in more] == list(range(released, released + unreleased))
    ready.set()
    time.sleep(600)


def drain_to(impl: str, name: str, results: Any, count: int) -> None:
    """Attach as consumer and send the seqs of the next ``count`` records to ``results``."""
    ring = ring_class(impl).attach(name, "consumer")
    try:
        seqs: list[int] = []
        while len(seqs) < count:
            batch = ring.read_batch(count - len(seqs), timeout=10.0)
            assert batch, "nothing to read"
            seqs.extend(r.seq for r in batch)
        del batch
        results.put(seqs)
    finally:
        ring.close()


def paced_producer(impl: str, name: str, count: int, gap_s: float) -> None:
    """Send ``count`` records ``gap_s`` apart, so the consumer waits for each one."""
    ring = ring_class(impl).attach(name, "producer")
    try:
        for seq in range(count):
            time.sleep(gap_s)
            assert ring.write(
                Record(
                    kind=KIND_DATA,
                    session=0,
                    turn=0,
                    seq=seq,
                    payload=seq.to_bytes(4, "little"),
                ),
                timeout=10.0,
            )
    finally:
        ring.close()
