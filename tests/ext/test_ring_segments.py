"""Segment headers checked on attach, corrupt records rejected, stale objects of crashed
owners removed, and process identity (zombies, reused pids) read correctly."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import posix_ipc
import pytest

from voicegate.core.layout import CONTROL_OFFSETS, DATA_OFFSET
from voicegate.ext import Record
from voicegate.ext.errors import RingClosed, RingError, RingLayoutError
from voicegate.ext.procinfo import process_alive, process_state, self_start_time
from voicegate.ext.ring_format import PARKED_ON_SEMAPHORE, SHM_DIR
from voicegate.ext.segment import STALE_UNINITIALISED_AGE_S, cleanup_stale

CAP = 4096


def _peek(name: str, offset: int) -> int:
    fd = os.open(f"{SHM_DIR}/{name}", os.O_RDONLY)
    try:
        return int(struct.unpack("=I", os.pread(fd, 4, offset))[0])
    finally:
        os.close(fd)


def _poke(name: str, offset: int, fmt: str, value: int) -> int:
    """Overwrite a field of segment ``name`` in place; returns the old value."""
    fd = os.open(f"{SHM_DIR}/{name}", os.O_RDWR)
    try:
        old = struct.unpack(fmt, os.pread(fd, struct.calcsize(fmt), offset))[0]
        os.pwrite(fd, struct.pack(fmt, value), offset)
        return int(old)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("field", "fmt", "value", "message"),
    [
        ("magic", "=Q", 0x1234, "bad magic"),
        ("version", "=I", 99, "layout version 99"),
        ("record_header_size", "=I", 32, "record header of 32 bytes"),  # the version 1 header
        ("capacity", "=Q", 8192, "capacity 8192 needs"),
        ("capacity", "=Q", 3000, "power of two"),
        ("data_offset", "=Q", 8192, "data offset"),
    ],
)
def test_mismatched_header_is_rejected(  # noqa: PLR0917 (parametrized)
    impl: Any, ring_name: str, field: str, fmt: str, value: int, message: str
) -> None:
    with impl.create(ring_name, CAP):
        old = _poke(ring_name, CONTROL_OFFSETS[field], fmt, value)
        with pytest.raises(RingLayoutError, match=message):
            impl.attach(ring_name, "consumer")
        _poke(ring_name, CONTROL_OFFSETS[field], fmt, old)
        impl.attach(ring_name, "consumer").close()


def test_truncated_segment_is_rejected(impl: Any, ring_name: str) -> None:
    shm = posix_ipc.SharedMemory(f"/{ring_name}", posix_ipc.O_CREX, size=100)
    try:
        with pytest.raises(RingLayoutError, match="smaller than the 4096-byte control block"):
            impl.attach(ring_name, "producer")
    finally:
        shm.close_fd()
        shm.unlink()


def test_corrupt_record_length_is_rejected(impl: Any, ring_name: str) -> None:
    with impl.create(ring_name, CAP, role="consumer") as consumer:
        producer = impl.attach(ring_name, "producer")
        producer.try_write(Record(kind=1, session=0, turn=0, payload=b"abcdefgh"))
        _poke(ring_name, DATA_OFFSET, "=I", 3000)  # length field of the first record
        with pytest.raises(RingLayoutError, match="corrupt record"):
            consumer.try_read()
        producer.close()


def test_corrupt_padding_record_is_rejected(impl: Any, ring_name: str) -> None:
    with impl.create(ring_name, CAP, role="consumer") as consumer:
        producer = impl.attach(ring_name, "producer")
        body = b"q" * 1200
        for seq in range(3):
            assert producer.try_write(Record(kind=1, session=0, turn=0, seq=seq, payload=body))
        assert len(consumer.read_batch()) == 3
        consumer.release()
        assert producer.try_write(
            Record(kind=1, session=0, turn=0, seq=3, payload=body)
        )  # pad at 3 * 1240, record at 0
        _poke(ring_name, DATA_OFFSET + 3 * 1240, "=I", 8)
        with pytest.raises(RingLayoutError, match="pad"):
            consumer.try_read()
        producer.close()


def _spawn_creator(impl: Any, name: str) -> subprocess.Popen[str]:
    code = (
        f"import sys, time\nfrom {impl.__module__} import {impl.__name__} as R\n"
        "from voicegate.ext import Record\n"
        f"r = R.create({name!r}, {CAP}, role='producer')\n"
        "r.try_write(Record(kind=1, session=0, turn=0, payload=b'x'))\n"
        "print('ready', flush=True)\ntime.sleep(120)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_cleanup_removes_a_killed_owners_objects(impl: Any, ring_name: str) -> None:
    proc = _spawn_creator(impl, ring_name)
    try:
        assert cleanup_stale(ring_name) == []  # its owner is alive
        with pytest.raises(RingError, match="already exists"):
            impl.create(ring_name, CAP)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
    assert os.path.exists(f"{SHM_DIR}/sem.{ring_name}-d")
    assert cleanup_stale(ring_name) == [ring_name]
    left = [e for e in os.listdir(SHM_DIR) if ring_name in e]
    assert left == []


def test_cleanup_wakes_workers_of_a_killed_owner(impl: Any, ring_name: str) -> None:
    proc = _spawn_creator(impl, ring_name)  # the owner, also the producer
    try:
        consumer = impl.attach(ring_name, "consumer", spin_us=0, park_slice_s=3600)
        assert consumer.read(timeout=1).seq == 0
        outcome: list[BaseException] = []

        def park() -> None:
            try:
                consumer.read(timeout=None)  # only the cleanup's post can end this wait
            except BaseException as exc:
                outcome.append(exc)

        parked = threading.Thread(target=park, daemon=True)
        parked.start()
        while _peek(ring_name, CONTROL_OFFSETS["consumer_sleeping"]) != PARKED_ON_SEMAPHORE:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert cleanup_stale(ring_name) == [ring_name]
        parked.join()
        assert len(outcome) == 1 and isinstance(outcome[0], RingClosed)
        consumer.close()
    finally:
        proc.kill()
        proc.wait()


def test_create_replaces_a_killed_owners_segment(impl: Any, ring_name: str) -> None:
    proc = _spawn_creator(impl, ring_name)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with impl.create(ring_name, CAP, role="consumer") as ring:
        assert ring.try_read() is None  # a fresh ring, not the dead one's record
        assert ring.stats()["written"] == 0


def test_cleanup_of_uninitialised_and_orphaned_objects(ring_name: str) -> None:
    young = posix_ipc.SharedMemory(f"/{ring_name}", posix_ipc.O_CREX, size=DATA_OFFSET + CAP)
    young.close_fd()
    orphan = posix_ipc.Semaphore(f"/{ring_name}x-d", posix_ipc.O_CREX)
    orphan.close()
    assert cleanup_stale(ring_name) == [ring_name + "x"]
    assert os.path.exists(f"{SHM_DIR}/{ring_name}")  # may still be initialising
    old = time.time() - STALE_UNINITIALISED_AGE_S - 1
    os.utime(f"{SHM_DIR}/{ring_name}", (old, old))
    assert cleanup_stale(ring_name) == [ring_name]
    assert not os.path.exists(f"{SHM_DIR}/{ring_name}")
    with pytest.raises(ValueError, match="prefix"):
        cleanup_stale("")


def test_cleanup_keeps_live_rings(impl: Any, ring_name: str) -> None:
    with impl.create(ring_name, CAP):
        assert cleanup_stale(ring_name) == []
        assert os.path.exists(f"{SHM_DIR}/{ring_name}")


def test_process_identity_detects_zombies_and_reuse() -> None:
    me = os.getpid()
    assert process_alive(me, self_start_time())
    assert not process_alive(me, self_start_time() + 1)  # a reused pid
    assert not process_alive(0, 0)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = process_state(child.pid)
        assert state is not None and process_alive(child.pid, state.start_time)
        os.kill(child.pid, signal.SIGKILL)
        while process_state(child.pid).state != "Z":  # type: ignore[union-attr]
            time.sleep(0.001)
        os.kill(child.pid, 0)  # a zombie still "exists" for kill(0)...
        assert not process_alive(child.pid, state.start_time)  # ...but is dead
    finally:
        child.kill()
        child.wait()
    assert process_state(child.pid) is None or not process_alive(child.pid, state.start_time)


def test_failed_attach_leaves_nothing_held(impl: Any, ring_name: str) -> None:
    with impl.create(ring_name, CAP) as owner:
        os.unlink(f"{SHM_DIR}/sem.{ring_name}-d")  # as if the owner were removing it
        with pytest.raises(RingClosed, match="being removed"):
            impl.attach(ring_name, "consumer")
        assert owner.stats()["consumer_pid"] == 0  # the role was given back
