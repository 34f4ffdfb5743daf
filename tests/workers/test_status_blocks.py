"""Status blocks: shared-memory fields, histograms, stale cleanup."""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections.abc import Iterator

import numpy as np
import posix_ipc
import pytest

from voicegate.workers.runtime.status import (
    BUCKET_BOUNDS_NS,
    BUCKETS,
    SIZE_BOUNDS,
    Field,
    Histogram,
    State,
    StatusBlock,
    bucket_of,
    buckets_of,
    remove_stale_blocks,
    size_bucket_of,
)


@pytest.fixture
def name() -> Iterator[str]:
    block_name = f"vg-t{os.getpid()}-{uuid.uuid4().hex[:8]}-x.status"
    yield block_name
    StatusBlock.unlink_name(block_name)


def test_bucket_bounds() -> None:
    assert bucket_of(0) == 0
    assert bucket_of(-5) == 0
    assert bucket_of(1023) == 0
    assert bucket_of(1024) == 1
    assert bucket_of(2047) == 1
    assert bucket_of(2048) == 2
    assert bucket_of(10**12) == BUCKETS - 1
    for k, bound in enumerate(BUCKET_BOUNDS_NS):
        assert bucket_of(bound - 1) == k
        assert bucket_of(bound) == k + 1
    values = np.array([0, -1, 1023, 1024, 2048, 10**6, 2**35, 2**40], dtype=np.int64)
    assert buckets_of(values).tolist() == [bucket_of(int(v)) for v in values]


def test_two_mappings_see_the_same_fields(name: str) -> None:
    owner = StatusBlock.create(name)
    reader = StatusBlock.attach(name)
    try:
        assert reader.get(Field.CREATOR_PID) == os.getpid()
        assert reader.creator_alive()
        owner.state = State.READY
        owner.add(Field.RECORDS_IN, 5)
        owner.add(Field.RECORDS_IN, 2)
        owner.beat(123)
        owner.last_error = "RuntimeError: model file missing"
        assert reader.state is State.READY
        assert reader.get(Field.RECORDS_IN) == 7
        assert reader.get(Field.HEARTBEAT_NS) == 123
        assert reader.last_error == "RuntimeError: model file missing"
        owner.last_error = "short"
        assert reader.last_error == "short"
        owner.last_error = "x" * 2000
        assert reader.last_error == "x" * 511
    finally:
        reader.close()
        owner.close()
    with pytest.raises(Exception, match="exists"):
        StatusBlock.create(name)


def test_histograms_accumulate_and_snapshot(name: str) -> None:
    block = StatusBlock.create(name)
    try:
        block.observe(Histogram.COMPUTE, 1500, count=3)
        block.observe_many(Histogram.RING_WAIT, np.array([10, 2000, 3000, 5_000_000], np.int64))
        block.observe_many(Histogram.RING_WAIT, np.array([], np.int64))
        snap = block.snapshot()
        compute = snap.histograms["compute"]
        assert compute.count == 3
        assert compute.sum_ns == 4500
        assert compute.buckets[1] == 3
        wait = snap.histograms["ring_wait"]
        assert wait.count == 4
        assert wait.sum_ns == 10 + 2000 + 3000 + 5_000_000
        assert wait.buckets.sum() == 4
        assert wait.buckets[0] == 1
        assert wait.buckets[bucket_of(5_000_000)] == 1
        assert wait.quantile_ns(0.5) == BUCKET_BOUNDS_NS[1]
        assert wait.quantile_ns(1.0) == BUCKET_BOUNDS_NS[bucket_of(5_000_000)]
        assert snap.histograms["tick"].count == 0
        assert snap.histograms["tick"].quantile_ns(0.5) == 0
    finally:
        block.close()


def test_size_buckets_hold_inclusive_powers_of_two() -> None:
    assert SIZE_BOUNDS == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    for size, bucket in ((0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (256, 8), (257, 9)):
        assert size_bucket_of(size) == bucket, size
    assert size_bucket_of(10**9) == len(SIZE_BOUNDS)


def test_batch_sizes_accumulate_apart_from_durations(name: str) -> None:
    block = StatusBlock.create(name)
    try:
        for size in (1, 2, 3, 64, 1000):
            block.observe_size(Histogram.BATCH, size)
        batch = block.snapshot().histograms["batch"]
        assert batch.count == 5 and batch.sum_ns == 1070
        assert batch.buckets.tolist()[: len(SIZE_BOUNDS) + 1] == [1, 1, 1, 0, 0, 0, 1, 0, 0, 1]
        assert block.snapshot().histograms["compute"].count == 0
        with pytest.raises(ValueError, match="RING_WAIT"):
            block.observe_size(Histogram.RING_WAIT, 1)
    finally:
        block.close()


def test_attach_rejects_missing_and_foreign_segments(name: str) -> None:
    with pytest.raises(FileNotFoundError, match=name):
        StatusBlock.attach(name)
    shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, size=8192)
    shm.close_fd()
    with pytest.raises(ValueError, match="magic"):
        StatusBlock.attach(name)


def _create_and_exit(name: str) -> None:
    StatusBlock.create(name).close()


def test_remove_stale_blocks_keeps_live_ones(name: str) -> None:
    prefix = name.rsplit("-", 1)[0] + "-"
    dead_name = prefix + "dead.status"
    other_name = prefix + "other"  # not a status block name: left alone
    live = StatusBlock.create(name)
    process = multiprocessing.get_context("spawn").Process(
        target=_create_and_exit, args=(other_name,)
    )
    process.start()
    process.join(60)
    process = multiprocessing.get_context("spawn").Process(
        target=_create_and_exit, args=(dead_name,)
    )
    process.start()
    process.join(60)
    try:
        assert os.path.exists("/dev/shm/" + dead_name)
        assert remove_stale_blocks(prefix) == [dead_name]
        assert not os.path.exists("/dev/shm/" + dead_name)
        assert os.path.exists("/dev/shm/" + name)
        assert os.path.exists("/dev/shm/" + other_name)
    finally:
        live.close()
        StatusBlock.unlink_name(dead_name)
        StatusBlock.unlink_name(other_name)
