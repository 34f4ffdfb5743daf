"""Hypothesis stateful test: each ring implementation against a simple model that tracks
positions (so it predicts exactly when the ring is full) and a deque of records."""

from __future__ import annotations

import gc
import itertools
import os
from collections import deque
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from ring_impls import IMPLEMENTATIONS

from voicegate.ext import Record

CAP = 4096
HEADER = 40  # the record header, sent_ns included
MAX_PAYLOAD = CAP // 2 - HEADER
_PATTERN = bytes(range(256)) * 10
_names = itertools.count()

Fields = tuple[int, int, int, int, int, int]  # kind, flags, session, turn, seq, origin_ns


def _size(length: int) -> int:
    return (HEADER + length + 7) & ~7


def _record(fields: Fields, length: int) -> Record[bytes]:
    kind, flags, session, turn, seq, origin_ns = fields
    return Record(
        kind=kind, session=session, turn=turn, seq=seq, origin_ns=origin_ns,
        payload=_payload(seq, length), flags=flags,
    )  # fmt: skip


def _payload(seq: int, length: int) -> bytes:
    return _PATTERN[seq % 256 : seq % 256 + length]


class RingModel(RuleBasedStateMachine):
    impl: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.name = f"vg-test{os.getpid()}-hyp{next(_names)}"
        self.owner = self.impl.create(self.name, CAP)
        self.producer = self.impl.attach(self.name, "producer")
        self.consumer = self.impl.attach(self.name, "consumer", spin_us=0)
        self.staged: list[tuple[Fields, int]] = []
        self.published: deque[tuple[Fields, int, int]] = deque()  # fields, length, end pos
        self.w = self.pub = self.r = self.released = 0
        self.seq = 0
        self.written = self.read = self.dropped = 0
        self.read_released = 0  # the shared read counter moves when records are released

    def teardown(self) -> None:
        gc.collect()
        for handle in (self.consumer, self.producer, self.owner):
            handle.close()

    @initialize()
    def start(self) -> None:
        assert self.owner.available() == 0

    # -- model helpers -----------------------------------------------------------------

    def _fits(self, length: int) -> int | None:
        """End position after staging a record of ``length``, or None when full."""
        idx = self.w % CAP
        size = _size(length)
        pad = CAP - idx if idx + size > CAP else 0
        end = self.w + pad + size
        return end if end - self.released <= CAP else None

    def _next_fields(self, kind: int, session: int) -> Fields:
        self.seq += 1
        return (kind, self.seq & 0xFFFF, session, self.seq * 3, self.seq, -self.seq * 1000)

    def _stage(self, fields: Fields, length: int) -> bool:
        end = self._fits(length)
        if end is None:
            return False
        self.w = end
        self.staged.append((fields, length))
        self.written += 1
        return True

    def _publish(self) -> None:
        pos = self.pub
        for fields, length in self.staged:
            idx = pos % CAP
            if idx + _size(length) > CAP:
                pos += CAP - idx
            pos += _size(length)
            self.published.append((fields, length, pos))
        assert pos == self.w
        self.staged.clear()
        self.pub = self.w

    def _check(self, rec: Any, expected: tuple[Fields, int, int]) -> None:
        fields, length, end = expected
        seq = fields[4]
        got = (rec.kind, rec.flags, rec.session, rec.turn, rec.seq, rec.origin_ns)
        assert got == fields
        assert bytes(rec.payload) == _payload(seq, length)
        self.r = end
        self.read += 1

    # -- producer rules ----------------------------------------------------------------

    @rule(
        length=st.one_of(st.integers(0, 64), st.integers(0, MAX_PAYLOAD)),
        kind=st.integers(0, 0xFFFE),
        session=st.integers(0, 2**32 - 1),
    )
    def try_write(self, length: int, kind: int, session: int) -> None:
        fields = self._next_fields(kind, session)
        expected = self._stage(fields, length)
        if not expected:
            self.dropped += 1
        got = self.producer.try_write(_record(fields, length))
        assert got == expected
        if got:
            self._publish()

    @rule(length=st.integers(0, 700), kind=st.integers(0, 10))
    def stage(self, length: int, kind: int) -> None:
        fields = self._next_fields(kind, 1)
        expected = self._stage(fields, length)
        if not expected:
            self.dropped += 1
        got = self.producer.stage(_record(fields, length))
        assert got == expected

    @rule()
    def publish(self) -> None:
        count = len(self.staged)
        assert self.producer.publish() == count
        self._publish()

    @rule(lengths=st.lists(st.integers(0, 900), min_size=1, max_size=8))
    def write_batch(self, lengths: list[int]) -> None:
        batch = []
        expected = 0
        for length in lengths:
            fields = self._next_fields(2, 7)
            batch.append(_record(fields, length))
            if expected == len(batch) - 1 and self._stage(fields, length):
                expected += 1
        if expected < len(batch):
            self.dropped += 1
        assert self.producer.write_batch(batch) == expected
        self._publish()

    # -- consumer rules ----------------------------------------------------------------

    @rule()
    def try_read(self) -> None:
        rec = self.consumer.try_read()
        self.released, self.read_released = self.r, self.read
        if not self.published:
            assert rec is None
            return
        assert rec is not None
        self._check(rec, self.published.popleft())

    @rule(max_records=st.integers(1, 6))
    def read_batch(self, max_records: int) -> None:
        records = self.consumer.read_batch(max_records, timeout=0)
        self.released, self.read_released = self.r, self.read
        assert len(records) == min(max_records, len(self.published))
        for rec in records:
            self._check(rec, self.published.popleft())

    @precondition(lambda self: self.r != self.released)
    @rule()
    def release(self) -> None:
        self.consumer.release()
        self.released, self.read_released = self.r, self.read

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def counters_match(self) -> None:
        stats = self.owner.stats()
        assert stats["occupancy_bytes"] == self.pub - self.released == self.owner.available()
        assert stats["read"] == self.read_released
        assert stats["dropped_full"] == self.dropped
        # Staged records are counted when published.
        assert stats["written"] == self.written - len(self.staged)


STATE_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("ring_class", IMPLEMENTATIONS)
def test_ring_matches_model(ring_class: Any) -> None:
    machine = cast(
        type[RingModel],
        type(f"RingModel_{ring_class.__name__}", (RingModel,), {"impl": ring_class}),
    )
    run_state_machine_as_test(machine, settings=STATE_SETTINGS)
