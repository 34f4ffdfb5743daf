"""The native ring: a lock-free single-producer single-consumer ring of variable-length
records in POSIX shared memory.

Layout (voicegate/core/layout.py, the one definition): a 4 KiB control block whose
producer and consumer fields sit on separate 128-byte blocks, then a power-of-two data
area. Positions are 64-bit and only grow; ``pos & (capacity - 1)`` is the offset. Each
record is a 40-byte header and its payload, 8-byte aligned (docs/ring.md); a record that does not fit
before the end of the area is preceded by a padding record and placed at offset 0. Each
side caches the other's position and reloads it (acquire) only when the cache says the
ring is empty or full; publishing is one release store of ``write_pos`` (or
``read_pos``). Just before that store the producer writes the publish time into the
``sent_ns`` header field of every record it publishes, so the consumer can tell how long
each record waited without a stamp in the payload (the payload is copied once, by the
ring).

Waiting: spin for ``spin_us`` (a pause instruction per probe, the GIL released), then park
on a POSIX semaphore in slices of ``park_slice_s``, the GIL released. The handshake that
keeps wake-ups from being lost is Dekker's: the waiter sets its sleeping flag, issues a
full fence and re-checks the position; the publisher stores the position, issues a full
fence and loads the flag. At least one of them sees the other's store. The publisher
takes the flag with an atomic exchange and posts only if it was set, so posts are rare;
a post that lands after its waiter already woke (the slice timed out, or the re-check
found data) stays in the semaphore and is drained before the next park announces itself.
Between slices the waiter refreshes its heartbeat, checks the owner's ``closed`` flag
and whether its peer died, and honours its own timeout.

An asyncio consumer parks differently: it sets the flag to a third value and watches
the ring's doorbell FIFO from its event loop; a publisher that takes that value writes a
byte to the FIFO instead of posting (see aio.py).

Setup, role claims and removal are shared with the reference ring (segment.py). A handle
is used by one thread at a time (single producer, single consumer: one handle per side).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, ETIMEDOUT, errno
from libc.stdint cimport INT64_MAX, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, timespec
from posix.unistd cimport getpid

from voicegate.ext.includes.atomic cimport (
    vg_coarse_now_ns,
    vg_cpu_relax,
    vg_exchange_u32,
    vg_fence_seq_cst,
    vg_load_acquire_u64,
    vg_load_relaxed_u32,
    vg_load_relaxed_u64,
    vg_now_ns,
    vg_store_release_u32,
    vg_store_release_u64,
    vg_store_relaxed_u64,
)
from voicegate.ext.includes.layout cimport (
    VG_CTRL_CLOSED,
    VG_CTRL_CONSUMER_BEAT_NS,
    VG_CTRL_CONSUMER_PARKS,
    VG_CTRL_CONSUMER_PID,
    VG_CTRL_CONSUMER_SLEEPING,
    VG_CTRL_DROPPED_FULL,
    VG_CTRL_PRODUCER_BEAT_NS,
    VG_CTRL_PRODUCER_PARKS,
    VG_CTRL_PRODUCER_PID,
    VG_CTRL_PRODUCER_SLEEPING,
    VG_CTRL_READ,
    VG_CTRL_READ_POS,
    VG_CTRL_SPACE_WAKEUPS_SENT,
    VG_CTRL_WAKEUPS_SENT,
    VG_CTRL_WRITE_POS,
    VG_CTRL_WRITTEN,
    VG_KIND_PAD,
    VG_RECORD_HEADER_SIZE,
    vg_record_header,
)
from voicegate.ext.includes.semaphore cimport (
    SEM_FAILED,
    sem_clockwait,
    sem_close,
    sem_open,
    sem_post,
    sem_t,
    sem_trywait,
    sem_unlink,
)

import math
import os

from voicegate.ext import ring_format
from voicegate.ext.doorbell import DoorbellReader, DoorbellWriter
from voicegate.ext.errors import (
    STATUS_CLOSED,
    STATUS_CORRUPT,
    STATUS_OS_ERROR,
    STATUS_PEER_DIED,
    PeerDied,
    RingClosed,
    RingError,
    RingLayoutError,
    raise_for_status,
)
from voicegate.ext.segment import PEER_ROLE, Segment, cleanup_stale

__all__ = [
    "PeerDied",
    "Record",
    "Ring",
    "RingClosed",
    "RingError",
    "RingLayoutError",
    "cleanup_stale",
    "monotonic_ns",
]

cdef extern from "<unistd.h>" nogil:
    int unlink(const char *path)

cdef extern from "<sys/mman.h>" nogil:
    int shm_unlink(const char *name)

cdef uint32_t AWAKE = ring_format.AWAKE
cdef uint32_t PARKED_ON_SEMAPHORE = ring_format.PARKED_ON_SEMAPHORE
cdef uint32_t PARKED_ON_DOORBELL = ring_format.PARKED_ON_DOORBELL
cdef uint64_t U32_MAX = ring_format.U32_MAX
cdef long long U16_MAX = ring_format.U16_MAX
cdef long long MAX_KIND = ring_format.MAX_KIND

cdef enum:
    SIDE_NONE = 0
    SIDE_PRODUCER = 1
    SIDE_CONSUMER = 2

# Outcomes of one park slice (C level, no GIL).
cdef enum:
    PARK_READY = 0        # the condition held after announcing sleep: never slept
    PARK_WOKEN = 1
    PARK_TIMED_OUT = 2
    PARK_INTERRUPTED = 3
    PARK_ERROR = 4

cdef inline uint64_t _record_size(uint64_t length) noexcept nogil:
    return (VG_RECORD_HEADER_SIZE + length + 7) & ~(<uint64_t>7)


cdef void _stamp_sent(char *data, uint64_t mask, uint64_t start, uint64_t end,
                      int64_t now) noexcept nogil:
    """Write ``now`` as the send time of every record staged in [start, end)."""
    cdef vg_record_header *header
    cdef uint64_t pos = start
    while pos < end:
        header = <vg_record_header *>(data + (pos & mask))
        if header.kind == VG_KIND_PAD:
            pos += header.length  # a pad's header may not fit whole: skip it untouched
        else:
            header.sent_ns = now
            pos += _record_size(header.length)


cdef bint _spin_until_ge(char *ctrl, size_t off, uint64_t target,
                         int64_t until_ns) noexcept nogil:
    """Spin (bounded by ``until_ns``) until the position at ``off`` reaches ``target``."""
    cdef int i
    while True:
        for i in range(64):
            if vg_load_acquire_u64(ctrl, off) >= target:
                return True
            vg_cpu_relax()
        if vg_now_ns() >= until_ns:
            return vg_load_acquire_u64(ctrl, off) >= target


cdef int _park_slice(char *ctrl, size_t flag_off, size_t pos_off, uint64_t target,
                     sem_t *sem, int64_t until_ns, int *err) noexcept nogil:
    """Announce sleep, re-check, and sleep on ``sem`` until posted or ``until_ns``."""
    cdef timespec ts
    cdef int rc
    while sem_trywait(sem) == 0:
        pass  # posts meant for an earlier park (see the module docstring)
    vg_exchange_u32(ctrl, flag_off, PARKED_ON_SEMAPHORE)
    vg_fence_seq_cst()
    if vg_load_acquire_u64(ctrl, pos_off) >= target:
        vg_exchange_u32(ctrl, flag_off, AWAKE)
        return PARK_READY
    ts.tv_sec = until_ns // 1000000000
    ts.tv_nsec = until_ns % 1000000000
    rc = sem_clockwait(sem, CLOCK_MONOTONIC, &ts)
    err[0] = 0 if rc == 0 else errno
    vg_exchange_u32(ctrl, flag_off, AWAKE)
    if rc == 0:
        return PARK_WOKEN
    if err[0] == ETIMEDOUT:
        return PARK_TIMED_OUT
    if err[0] == EINTR:
        return PARK_INTERRUPTED
    return PARK_ERROR


cdef inline int64_t _deadline(int64_t now, double timeout) noexcept:
    if timeout < 0 or timeout * 1e9 >= <double>(INT64_MAX - now):
        return INT64_MAX
    return now + <int64_t>(timeout * 1e9)


cdef inline double _timeout_arg(object timeout) except? -2.0:
    """None (forever) becomes -1; negative and NaN timeouts are rejected."""
    if timeout is None:
        return -1.0
    cdef double value = timeout
    if not value >= 0:
        raise ValueError(f"timeout must be None or >= 0 seconds, got {timeout!r}")
    return value


def monotonic_ns():
    """CLOCK_MONOTONIC in ns, the clock of ``origin_ns`` and of the heartbeats."""
    return vg_now_ns()


cdef class Record:
    """One record: the header's fields (in the header's order: kind, flags, session, turn,
    seq, origin_ns, sent_ns) and its payload. The one record type of the node: rings
    return it, stages receive and emit it, the gateway link hands it to the gateway.

    Built by keyword only, so two swapped ids cannot type-check:
    ``Record(kind=Kind.AUDIO_IN, session=sid, turn=1, payload=frame)``. ``sent_ns`` is
    written by the ring when it publishes the record; a value given here is not sent.

    A record read from a ring holds a zero-copy read-only view into shared memory as its
    payload, valid until the consumer's next read, ``wait`` or ``release`` call; the view
    is made on first access, which must come before that call; ``detach`` makes a record
    that outlives it."""

    def __init__(self, *, long long kind, long long session, long long turn,
                 long long seq=0, long long origin_ns=0, payload=b"", long long flags=0,
                 long long sent_ns=0):
        if (kind < 0 or kind > MAX_KIND or flags < 0 or flags > U16_MAX
                or session < 0 or <uint64_t>session > U32_MAX
                or turn < 0 or <uint64_t>turn > U32_MAX
                or seq < 0 or <uint64_t>seq > U32_MAX):
            raise ring_format.record_field_error(
                kind=kind, flags=flags, session=session, turn=turn, seq=seq, origin_ns=origin_ns
            )
        self.kind = <uint32_t>kind
        self.flags = <uint32_t>flags
        self.session = <uint32_t>session
        self.turn = <uint32_t>turn
        self.seq = <uint32_t>seq
        self.origin_ns = origin_ns
        self.sent_ns = sent_ns
        self._payload = payload

    @property
    def payload(self):
        ring = self._ring
        if ring is None:
            return self._payload
        if ring._closed:
            raise RingClosed(f"ring {ring._name!r}: this handle is closed")
        if ring._generation != self._generation:
            raise RingError(
                f"ring {ring._name!r}: record seq={self.seq} was released; "
                "take its payload before the next read, wait or release"
            )
        return ring._ro[self._offset:self._offset + self._length]

    def replace(self, *, kind=None, session=None, turn=None, seq=None, origin_ns=None,
                payload=None, flags=None):
        """A copy with the given fields changed. Without a new payload it shares this
        record's: a record read from a ring stays a view into it (``detach`` copies)."""
        cdef Record copy = Record.__new__(Record)
        copy.kind = self.kind if kind is None else Record._u16(kind, "kind", MAX_KIND)
        copy.flags = self.flags if flags is None else Record._u16(flags, "flags", U16_MAX)
        copy.session = self.session if session is None else Record._u32(session, "session")
        copy.turn = self.turn if turn is None else Record._u32(turn, "turn")
        copy.seq = self.seq if seq is None else Record._u32(seq, "seq")
        copy.origin_ns = self.origin_ns if origin_ns is None else origin_ns
        copy.sent_ns = self.sent_ns
        if payload is not None:
            copy._payload = payload
        elif self._ring is None:
            copy._payload = self._payload
        else:
            copy._ring = self._ring
            copy._offset = self._offset
            copy._length = self._length
            copy._generation = self._generation
        return copy

    @property
    def borrowed(self):
        """True for a record whose payload is a view into the ring it was read from."""
        return self._ring is not None

    @classmethod
    def __class_getitem__(cls, item):
        return cls  # Record[bytes] in annotations and aliases: the type is generic in stubs

    def detach(self):
        """This record, or a copy with its payload as bytes when it is a view into a ring."""
        return self if self._ring is None else self.replace(payload=bytes(self.payload))

    @staticmethod
    def _u16(object value, str field, long long high):
        cdef long long v = value
        if v < 0 or v > high:
            raise ValueError(f"record field {field}={v} out of range [0, {high}]")
        return v

    @staticmethod
    def _u32(object value, str field):
        cdef long long v = value
        if v < 0 or <uint64_t>v > U32_MAX:
            raise ValueError(f"record field {field}={v} out of range [0, {U32_MAX}]")
        return v

    def __repr__(self):
        # Never the payload itself: it may be audio or a transcript.
        cdef Py_ssize_t length = self._length if self._ring is not None else memoryview(self._payload).nbytes
        return (
            f"Record(kind={self.kind}, flags={self.flags:#x}, session={self.session}, "
            f"turn={self.turn}, seq={self.seq}, origin_ns={self.origin_ns}, "
            f"sent_ns={self.sent_ns}, payload=<{length} bytes>)"
        )


cdef class Ring:
    """Single-producer single-consumer ring of variable-length records in POSIX shared
    memory (the contract is in ``_ring.pyi``)."""

    def __cinit__(self):
        self._closed = True  # until _setup completes, so __dealloc__ of a half-built ring is inert
        self._sem_data = NULL
        self._sem_space = NULL

    def __init__(self, *args, **kwargs):
        raise TypeError("use Ring.create(name, capacity) or Ring.attach(name, role)")

    # -- construction -------------------------------------------------------------------

    @classmethod
    def create(cls, name, capacity, *, role="owner", spin_us=ring_format.DEFAULT_SPIN_US,
               park_slice_s=ring_format.DEFAULT_PARK_SLICE_S):
        role = ring_format.check_role(role, ("owner", "producer", "consumer"))
        ring_format.check_timing(spin_us, park_slice_s)
        seg = Segment.create(name, capacity)
        cdef Ring ring = Ring.__new__(Ring)
        try:
            if role != "owner":
                seg.claim(role)
            ring._setup(seg, role, spin_us, park_slice_s)
        except BaseException:
            seg.unlink()
            ring._drop_handles()
            seg.close_data()
            seg.close()
            raise
        return ring

    @classmethod
    def attach(cls, name, role, *, spin_us=ring_format.DEFAULT_SPIN_US,
               park_slice_s=ring_format.DEFAULT_PARK_SLICE_S):
        role = ring_format.check_role(role, ("producer", "consumer", "observer"))
        ring_format.check_timing(spin_us, park_slice_s)
        seg = Segment.open(name)
        cdef Ring ring = Ring.__new__(Ring)
        try:
            if role != "observer":
                seg.claim(role)
            ring._setup(seg, role, spin_us, park_slice_s)
        except BaseException:
            seg.release_claim()
            ring._drop_handles()
            seg.close_data()
            seg.close()
            raise
        return ring

    cdef int _setup(self, object seg, str role, double spin_us, double park_slice_s) except -1:
        self._seg = seg
        self._name = seg.names.name
        self._role = role
        self._owner = seg.owner
        self._cap = seg.capacity
        self._mask = self._cap - 1
        self._max_payload = self._cap // 2 - VG_RECORD_HEADER_SIZE
        self._spin_ns = <int64_t>(spin_us * 1000.0)
        self._slice_ns = <int64_t>(park_slice_s * 1e9)
        self._creator_pid = seg.get("creator_pid")
        names = seg.names
        self._shm_name = os.fsencode(names.shm)
        self._data_sem_name = os.fsencode(names.data_sem)
        self._space_sem_name = os.fsencode(names.space_sem)
        self._bell_path = os.fsencode(names.doorbell)
        PyObject_GetBuffer(seg.ctrl, &self._ctrl_buf, PyBUF_WRITABLE)
        self._have_ctrl_buf = True
        self._ctrl = <char *>self._ctrl_buf.buf
        self._map_data()
        self._sem_data = sem_open(os.fsencode(names.data_sem), 0)
        if self._sem_data == SEM_FAILED:
            self._sem_data = NULL
            raise RingClosed(f"ring {self._name!r} is being removed (semaphores gone)")
        self._sem_space = sem_open(os.fsencode(names.space_sem), 0)
        if self._sem_space == SEM_FAILED:
            self._sem_space = NULL
            raise RingClosed(f"ring {self._name!r} is being removed (semaphores gone)")
        cdef char *ctrl = self._ctrl
        self._wpos = self._pub = vg_load_acquire_u64(ctrl, VG_CTRL_WRITE_POS)
        self._cached_rpos = vg_load_acquire_u64(ctrl, VG_CTRL_READ_POS)
        self._written = vg_load_relaxed_u64(ctrl, VG_CTRL_WRITTEN)
        self._dropped = vg_load_relaxed_u64(ctrl, VG_CTRL_DROPPED_FULL)
        self._wakeups = vg_load_relaxed_u64(ctrl, VG_CTRL_WAKEUPS_SENT)
        self._pparks = vg_load_relaxed_u64(ctrl, VG_CTRL_PRODUCER_PARKS)
        self._staged = 0
        self._rpos = self._released = self._cached_wpos = self._cached_rpos
        self._read = vg_load_relaxed_u64(ctrl, VG_CTRL_READ)
        self._cparks = vg_load_relaxed_u64(ctrl, VG_CTRL_CONSUMER_PARKS)
        self._space_wakeups = vg_load_relaxed_u64(ctrl, VG_CTRL_SPACE_WAKEUPS_SENT)
        if role == "producer":
            self._side = SIDE_PRODUCER
            self._beat_off = VG_CTRL_PRODUCER_BEAT_NS
            self._pid_off = VG_CTRL_PRODUCER_PID
        elif role == "consumer":
            self._side = SIDE_CONSUMER
            self._beat_off = VG_CTRL_CONSUMER_BEAT_NS
            self._pid_off = VG_CTRL_CONSUMER_PID
        else:
            self._side = SIDE_NONE
        self._peer = PEER_ROLE.get(role, "")
        self._closed = False
        return 0

    cdef int _map_data(self) except -1:
        PyObject_GetBuffer(self._seg.data, &self._data_buf, PyBUF_WRITABLE)
        self._have_data_buf = True
        self._data = <char *>self._data_buf.buf
        self._ro = memoryview(self._seg.data).toreadonly()
        return 0

    cdef void _unmap_data(self) noexcept:
        if self._ro is not None:
            self._ro.release()
            self._ro = None
        if self._have_data_buf:
            PyBuffer_Release(&self._data_buf)
            self._have_data_buf = False
        self._data = NULL

    # -- properties ---------------------------------------------------------------------

    @property
    def name(self):
        return self._name

    @property
    def role(self):
        return self._role

    @property
    def capacity(self):
        return self._cap

    @property
    def max_payload(self):
        return self._max_payload

    @property
    def slice_timeouts(self):
        """Park slices of this handle that ended by timeout rather than by a wake-up."""
        return self._slice_timeouts

    # -- checks -------------------------------------------------------------------------

    cdef int _check_open(self) except -1:
        if self._closed:
            raise RingClosed(f"ring {self._name!r}: this handle is closed")
        return 0

    cdef int _check(self, int side, str op) except -1:
        if self._closed:
            raise RingClosed(f"ring {self._name!r}: this handle is closed")
        if self._side != side:
            needed = "producer" if side == SIDE_PRODUCER else "consumer"
            raise RingError(
                f"ring {self._name!r}: {op} needs the {needed} role; this handle is {self._role}"
            )
        return 0

    cdef inline void _beat(self) noexcept:
        vg_store_relaxed_u64(self._ctrl, self._beat_off, <uint64_t>vg_coarse_now_ns())

    # -- producer -----------------------------------------------------------------------

    cdef int _stage(self, long long kind, long long session, long long turn, long long seq,
                    long long origin_ns, object payload, long long flags,
                    bint count_drop) except -1:
        """Stage one record: 1 when written, 0 when the ring is full. The fields come
        from a Record, which checked their ranges when it was built."""
        cdef Py_buffer view
        cdef int staged
        if PyBytes_CheckExact(payload):  # the common case, without a buffer export
            return self._stage_bytes(kind, session, turn, seq, origin_ns,
                                     PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload),
                                     flags, count_drop)
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            staged = self._stage_bytes(kind, session, turn, seq, origin_ns, <const char *>view.buf,
                                       view.len, flags, count_drop)
        finally:
            PyBuffer_Release(&view)
        return staged

    cdef int _stage_bytes(self, long long kind, long long session, long long turn,
                          long long seq, long long origin_ns, const char *body,
                          Py_ssize_t body_len, long long flags, bint count_drop) except -1:
        cdef uint64_t length = <uint64_t>body_len
        cdef uint64_t size, w, idx, pad, end
        cdef vg_record_header *header
        if length > self._max_payload:
            raise ring_format.payload_too_large(length, self._max_payload, self._name)
        size = _record_size(length)
        w = self._wpos
        idx = w & self._mask
        pad = self._cap - idx if idx + size > self._cap else 0
        end = w + pad + size
        if end - self._cached_rpos > self._cap:
            self._cached_rpos = vg_load_acquire_u64(self._ctrl, VG_CTRL_READ_POS)
            if end - self._cached_rpos > self._cap:
                if count_drop:
                    self._drop()
                return 0
        if pad:
            # Only length, kind and flags of a pad are guaranteed to fit (8-byte
            # alignment leaves at least 8 bytes before the end).
            header = <vg_record_header *>(self._data + idx)
            header.length = <uint32_t>pad
            header.kind = VG_KIND_PAD
            header.flags = 0
            idx = 0
        header = <vg_record_header *>(self._data + idx)
        header.length = <uint32_t>length
        header.kind = <uint32_t>kind
        header.flags = <uint32_t>flags
        header.session = <uint32_t>session
        header.turn = <uint32_t>turn
        header.seq = <uint32_t>seq
        header.reserved = 0
        header.origin_ns = origin_ns
        header.sent_ns = 0  # the publish time, written by _publish
        if length:
            memcpy(self._data + idx + VG_RECORD_HEADER_SIZE, body, length)
        self._wpos = end
        self._written += 1
        self._staged += 1
        return 1

    cdef int _drop(self) except -1:
        self._dropped += 1
        vg_store_relaxed_u64(self._ctrl, VG_CTRL_DROPPED_FULL, self._dropped)
        return 0

    cdef int _publish(self) except -1:
        cdef char *ctrl = self._ctrl
        if vg_load_relaxed_u32(ctrl, VG_CTRL_CLOSED):
            raise_for_status(STATUS_CLOSED, self._name, "its owner closed it")
        cdef int count = <int>self._staged
        if self._wpos != self._pub:
            _stamp_sent(self._data, self._mask, self._pub, self._wpos, vg_now_ns())
            vg_store_release_u64(ctrl, VG_CTRL_WRITE_POS, self._wpos)
            self._pub = self._wpos
            self._staged = 0
            vg_store_relaxed_u64(ctrl, VG_CTRL_WRITTEN, self._written)
            vg_fence_seq_cst()
            if vg_load_relaxed_u32(ctrl, VG_CTRL_CONSUMER_SLEEPING) != AWAKE:
                self._wake_consumer()
        self._beat()
        return count

    cdef int _wake_consumer(self) except -1:
        cdef uint32_t state = vg_exchange_u32(self._ctrl, VG_CTRL_CONSUMER_SLEEPING, AWAKE)
        if state == AWAKE:
            return 0
        if state == PARKED_ON_DOORBELL:
            if self._bell_writer is None:
                self._bell_writer = DoorbellWriter(self._seg.names.doorbell)
            self._bell_writer.ring()
        elif sem_post(self._sem_data) != 0:
            raise_for_status(STATUS_OS_ERROR, self._name, "sem_post", errno)
        self._wakeups += 1
        vg_store_relaxed_u64(self._ctrl, VG_CTRL_WAKEUPS_SENT, self._wakeups)
        return 0

    cdef inline int _stage_record(self, Record record, bint count_drop) except -1:
        return self._stage(record.kind, record.session, record.turn, record.seq,
                           record.origin_ns, record.payload, record.flags, count_drop)

    def try_write(self, Record record not None):
        """Write and publish one record; never blocks. False (and counted) when full."""
        self._check(SIDE_PRODUCER, "try_write")
        if not self._stage_record(record, True):
            return False
        self._publish()
        return True

    def stage(self, Record record not None):
        """Write one record without publishing it. False (and counted) when full."""
        self._check(SIDE_PRODUCER, "stage")
        return self._stage_record(record, True) == 1

    def publish(self):
        """Publish staged records and wake a parked consumer; returns how many."""
        self._check(SIDE_PRODUCER, "publish")
        return self._publish()

    def write_batch(self, records):
        """Stage records until one does not fit, then publish them all at once. A record
        that is invalid (not a Record, payload too large) raises and the batch writes
        nothing."""
        self._check(SIDE_PRODUCER, "write_batch")
        cdef int count = 0
        cdef uint64_t wpos = self._wpos, written = self._written, staged = self._staged
        cdef Record record
        try:
            for item in records:
                record = <Record?>item
                if not self._stage_record(record, True):
                    break
                count += 1
        except BaseException:
            # Unpublished bytes past write_pos are invisible: rewinding erases the batch.
            self._wpos, self._written, self._staged = wpos, written, staged
            raise
        self._publish()
        return count

    def write(self, Record record not None, timeout=None):
        """Write one record, waiting (spin, then park) up to ``timeout`` s for space."""
        self._check(SIDE_PRODUCER, "write")
        cdef double wait_s = _timeout_arg(timeout)
        cdef Py_buffer view
        cdef uint64_t length
        while True:
            if self._stage_record(record, False):
                self._publish()
                return True
            self._publish()  # what was staged before must be visible before we wait
            PyObject_GetBuffer(record.payload, &view, PyBUF_SIMPLE)
            length = <uint64_t>view.len
            PyBuffer_Release(&view)
            if not self._wait_space(length, wait_s):
                self._drop()
                return False

    cdef int _wait_space(self, uint64_t length, double timeout) except -1:
        """Wait until a record of ``length`` fits: 1, or 0 at the timeout."""
        cdef uint64_t size = _record_size(length)
        cdef uint64_t idx = self._wpos & self._mask
        cdef uint64_t pad = self._cap - idx if idx + size > self._cap else 0
        if timeout == 0:
            return 0
        # read_pos the consumer must reach for the record to fit
        return self._wait_until(True, self._wpos + pad + size - self._cap, timeout)

    cdef int _wait_until(self, bint for_space, uint64_t target, double timeout) except -1:
        """Wait until the peer's position reaches ``target``: 1, or 0 at the timeout
        (negative: wait forever). The producer waits for ``read_pos`` (room), the consumer
        for ``write_pos`` (a record): spin, then park in slices, checking between slices
        that the ring is open and the peer alive."""
        cdef char *ctrl = self._ctrl
        cdef size_t pos_off = VG_CTRL_READ_POS if for_space else VG_CTRL_WRITE_POS
        cdef size_t flag_off = VG_CTRL_PRODUCER_SLEEPING if for_space else VG_CTRL_CONSUMER_SLEEPING
        cdef sem_t *sem = self._sem_space if for_space else self._sem_data
        cdef int64_t now, deadline, spin_end, slice_end
        cdef int outcome, err = 0
        cdef bint ready
        now = vg_now_ns()
        deadline = _deadline(now, timeout)
        spin_end = min(now + self._spin_ns, deadline)
        if self._spin_ns > 0:
            self._waiting += 1
            with nogil:
                ready = _spin_until_ge(ctrl, pos_off, target, spin_end)
            self._waiting -= 1
            if ready:
                return 1
        while True:
            if (vg_load_relaxed_u32(ctrl, VG_CTRL_CLOSED)
                    and vg_load_acquire_u64(ctrl, pos_off) < target):
                raise_for_status(STATUS_CLOSED, self._name, "its owner closed it")
            slice_end = min(vg_now_ns() + self._slice_ns, deadline)
            self._waiting += 1
            with nogil:
                outcome = _park_slice(ctrl, flag_off, pos_off, target, sem, slice_end, &err)
            self._waiting -= 1
            if outcome == PARK_READY:
                return 1
            if outcome == PARK_ERROR:
                raise_for_status(STATUS_OS_ERROR, self._name, "sem_clockwait", err)
            if for_space:
                self._pparks += 1
                vg_store_relaxed_u64(ctrl, VG_CTRL_PRODUCER_PARKS, self._pparks)
            else:
                self._cparks += 1
                vg_store_relaxed_u64(ctrl, VG_CTRL_CONSUMER_PARKS, self._cparks)
            if outcome == PARK_TIMED_OUT:
                self._slice_timeouts += 1
            elif outcome == PARK_INTERRUPTED:
                PyErr_CheckSignals()
            self._beat()
            if vg_load_acquire_u64(ctrl, pos_off) >= target:
                return 1
            if vg_load_relaxed_u32(ctrl, VG_CTRL_CLOSED):
                raise_for_status(STATUS_CLOSED, self._name, "its owner closed it")
            if self._seg.holder_died(self._peer):
                raise_for_status(STATUS_PEER_DIED, self._name, f"{self._peer} gone while waiting")
            if vg_now_ns() >= deadline:
                return 0

    # -- consumer -----------------------------------------------------------------------

    cdef inline bint _has_record(self) noexcept:
        if self._rpos != self._cached_wpos:
            return True
        self._cached_wpos = vg_load_acquire_u64(self._ctrl, VG_CTRL_WRITE_POS)
        return self._rpos != self._cached_wpos

    cdef object _next(self):
        """The next record, or None when none is published."""
        if not self._has_record():
            return None
        cdef uint64_t r = self._rpos
        cdef uint64_t idx = r & self._mask
        cdef vg_record_header *header = <vg_record_header *>(self._data + idx)
        cdef uint64_t length, size
        if header.kind == VG_KIND_PAD:
            if header.length != self._cap - idx:
                raise_for_status(
                    STATUS_CORRUPT, self._name,
                    f"pad of {header.length} bytes at offset {idx}, expected {self._cap - idx}",
                )
            r += self._cap - idx
            idx = 0
            if r >= self._cached_wpos:
                raise_for_status(
                    STATUS_CORRUPT, self._name, f"pad at position {self._rpos} not followed by a record"
                )
            header = <vg_record_header *>self._data
        length = header.length
        size = _record_size(length)
        if length > self._max_payload or idx + size > self._cap or r + size > self._cached_wpos:
            raise_for_status(
                STATUS_CORRUPT, self._name,
                f"record of {length} bytes at position {r} overruns the ring",
            )
        cdef Record record = Record.__new__(Record)
        record.kind = header.kind
        record.flags = header.flags
        record.session = header.session
        record.turn = header.turn
        record.seq = header.seq
        record.origin_ns = header.origin_ns
        record.sent_ns = header.sent_ns
        record._ring = self
        record._offset = <Py_ssize_t>(idx + VG_RECORD_HEADER_SIZE)
        record._length = <Py_ssize_t>length
        record._generation = self._generation
        self._rpos = r + size
        self._read += 1
        return record

    cdef int _release(self) except -1:
        if self._rpos == self._released:
            return 0
        cdef char *ctrl = self._ctrl
        vg_store_release_u64(ctrl, VG_CTRL_READ_POS, self._rpos)
        self._released = self._rpos
        self._generation += 1
        vg_store_relaxed_u64(ctrl, VG_CTRL_READ, self._read)
        vg_fence_seq_cst()
        if vg_load_relaxed_u32(ctrl, VG_CTRL_PRODUCER_SLEEPING) != AWAKE:
            if vg_exchange_u32(ctrl, VG_CTRL_PRODUCER_SLEEPING, AWAKE) == PARKED_ON_SEMAPHORE:
                if sem_post(self._sem_space) != 0:
                    raise_for_status(STATUS_OS_ERROR, self._name, "sem_post", errno)
                self._space_wakeups += 1
                vg_store_relaxed_u64(ctrl, VG_CTRL_SPACE_WAKEUPS_SENT, self._space_wakeups)
        self._beat()
        return 0

    cdef int _wait_readable(self, double timeout) except -1:
        """1 when a record is available, 0 at the timeout (negative: wait forever)."""
        if self._has_record():
            return 1
        if timeout == 0:
            if vg_load_relaxed_u32(self._ctrl, VG_CTRL_CLOSED):
                raise_for_status(STATUS_CLOSED, self._name, "its owner closed it")
            return 0
        return self._wait_until(False, self._rpos + 1, timeout)

    def try_read(self):
        """The next record, or None when none is published; never blocks."""
        self._check(SIDE_CONSUMER, "try_read")
        self._release()
        record = self._next()
        if record is None:
            self._beat()
            if vg_load_relaxed_u32(self._ctrl, VG_CTRL_CLOSED):
                raise_for_status(STATUS_CLOSED, self._name, "its owner closed it")
        return record

    def read(self, timeout=None):
        """Next record, waiting up to ``timeout`` seconds (None: forever)."""
        self._check(SIDE_CONSUMER, "read")
        cdef double wait_s = _timeout_arg(timeout)
        self._release()
        if not self._wait_readable(wait_s):
            return None
        return self._next()

    def read_batch(self, int max_records=256, timeout=0.0):
        """Up to ``max_records`` records; waits up to ``timeout`` for the first one."""
        self._check(SIDE_CONSUMER, "read_batch")
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        cdef double wait_s = _timeout_arg(timeout)
        self._release()
        if not self._wait_readable(wait_s):
            return []
        cdef list records = []
        cdef int i
        for i in range(max_records):
            record = self._next()
            if record is None:
                break
            records.append(record)
        return records

    def wait(self, timeout=None):
        """Release what was read, then wait until a record is available. GIL released."""
        self._check(SIDE_CONSUMER, "wait")
        cdef double wait_s = _timeout_arg(timeout)
        self._release()
        return self._wait_readable(wait_s) == 1

    def release(self):
        """Hand the space of every record read so far back to the producer."""
        self._check(SIDE_CONSUMER, "release")
        self._release()

    def available(self):
        """Bytes published and not yet released (occupancy)."""
        self._check_open()
        return (vg_load_acquire_u64(self._ctrl, VG_CTRL_WRITE_POS)
                - vg_load_acquire_u64(self._ctrl, VG_CTRL_READ_POS))

    # -- asyncio doorbell ---------------------------------------------------------------

    def doorbell_fileno(self):
        """A non-blocking fd that becomes readable when an armed doorbell is rung."""
        self._check(SIDE_CONSUMER, "doorbell_fileno")
        if self._bell_reader is None:
            self._bell_reader = DoorbellReader(self._seg.names.doorbell)
        return self._bell_reader.fileno()

    def arm_doorbell(self):
        """Release what was read and ask the producer to ring the doorbell on its next
        publish. False (not armed) when a record is already there or the ring closed."""
        self._check(SIDE_CONSUMER, "arm_doorbell")
        self._release()
        self.doorbell_fileno()
        self._bell_reader.drain()
        cdef char *ctrl = self._ctrl
        if self._has_record() or vg_load_relaxed_u32(ctrl, VG_CTRL_CLOSED):
            return False
        vg_exchange_u32(ctrl, VG_CTRL_CONSUMER_SLEEPING, PARKED_ON_DOORBELL)
        vg_fence_seq_cst()
        if self._has_record() or vg_load_relaxed_u32(ctrl, VG_CTRL_CLOSED):
            vg_exchange_u32(ctrl, VG_CTRL_CONSUMER_SLEEPING, AWAKE)
            return False
        self._cparks += 1
        vg_store_relaxed_u64(ctrl, VG_CTRL_CONSUMER_PARKS, self._cparks)
        return True

    def disarm_doorbell(self):
        self._check(SIDE_CONSUMER, "disarm_doorbell")
        vg_exchange_u32(self._ctrl, VG_CTRL_CONSUMER_SLEEPING, AWAKE)
        self._beat()

    # -- liveness -----------------------------------------------------------------------

    def _peer_role(self):
        if not self._peer:
            raise RingError(f"ring {self._name!r}: the {self._role} role has no peer")
        return self._peer

    def beat(self):
        """Publish this side's heartbeat (done implicitly by reads, writes and waits)."""
        if self._side == SIDE_NONE:
            raise RingError(f"ring {self._name!r}: the {self._role} role has no heartbeat")
        self._check(self._side, "beat")
        self._beat()

    @property
    def peer_pid(self):
        return self._seg.holder(self._peer_role())[0]

    def peer_alive(self):
        """False when the peer has exited (kill -9, zombie, reused pid) or never attached."""
        return self._seg.holder_alive(self._peer_role())

    def peer_beat_age(self):
        """Seconds since the peer's last heartbeat; inf before it attached."""
        role = self._peer_role()
        if self._seg.holder(role)[0] == 0:
            return math.inf
        off = VG_CTRL_CONSUMER_BEAT_NS if role == "consumer" else VG_CTRL_PRODUCER_BEAT_NS
        beat = <int64_t>vg_load_relaxed_u64(self._ctrl, off)
        return max(0.0, (vg_coarse_now_ns() - beat) / 1e9)

    # -- misc ---------------------------------------------------------------------------

    def stats(self):
        """Shared counters of the ring, the same from any attached process."""
        self._check_open()
        cdef char *ctrl = self._ctrl
        return {
            "written": vg_load_relaxed_u64(ctrl, VG_CTRL_WRITTEN),
            "dropped_full": vg_load_relaxed_u64(ctrl, VG_CTRL_DROPPED_FULL),
            "read": vg_load_relaxed_u64(ctrl, VG_CTRL_READ),
            "wakeups_sent": vg_load_relaxed_u64(ctrl, VG_CTRL_WAKEUPS_SENT),
            "consumer_parks": vg_load_relaxed_u64(ctrl, VG_CTRL_CONSUMER_PARKS),
            "producer_parks": vg_load_relaxed_u64(ctrl, VG_CTRL_PRODUCER_PARKS),
            "space_wakeups_sent": vg_load_relaxed_u64(ctrl, VG_CTRL_SPACE_WAKEUPS_SENT),
            "occupancy_bytes": (vg_load_acquire_u64(ctrl, VG_CTRL_WRITE_POS)
                                - vg_load_acquire_u64(ctrl, VG_CTRL_READ_POS)),
            "capacity": self._cap,
            "producer_pid": self._seg.holder("producer")[0],
            "consumer_pid": self._seg.holder("consumer")[0],
        }

    cdef int _wake_all(self) except -1:
        # The owner is going away: every parked side must wake and see ``closed``.
        sem_post(self._sem_data)
        sem_post(self._sem_space)
        if vg_load_relaxed_u32(self._ctrl, VG_CTRL_CONSUMER_SLEEPING) == PARKED_ON_DOORBELL:
            DoorbellWriter(self._seg.names.doorbell).ring()
        return 0

    def unlink(self):
        """Mark the ring closed, wake both sides and remove its names (owner only)."""
        if not self._owner:
            raise RingError(f"ring {self._name!r}: only its owner (creator) may unlink it")
        self._check_open()
        vg_store_release_u32(self._ctrl, VG_CTRL_CLOSED, 1)
        vg_fence_seq_cst()
        self._wake_all()
        self._seg.unlink()

    def close(self):
        """Detach; the owner also unlinks the segment and semaphores. BufferError (and
        nothing changed) while payload views of records read are still alive."""
        if self._closed:
            return
        if self._waiting:
            raise RingError(
                f"ring {self._name!r}: another thread is waiting on this handle; "
                "close() must wait until it returns"
            )
        self._unmap_data()
        try:
            self._seg.close_data()
        except BufferError:
            self._map_data()
            raise BufferError(
                f"ring {self._name!r}: payload views of records read are still alive; "
                "drop or release() them before close()"
            ) from None
        if self._side == SIDE_CONSUMER and not vg_load_relaxed_u32(self._ctrl, VG_CTRL_CLOSED):
            self._release()  # a clean detach consumes what was read
        self._closed = True
        self._seg.release_claim()
        if self._owner:
            vg_store_release_u32(self._ctrl, VG_CTRL_CLOSED, 1)
            vg_fence_seq_cst()
            self._wake_all()
            self._seg.unlink()
        for end in (self._bell_reader, self._bell_writer):
            if end is not None:
                end.close()
        self._drop_handles()
        self._seg.close()

    cdef void _drop_handles(self) noexcept:
        """Close the semaphores and release this handle's exports of the mappings."""
        self._unmap_data()
        if self._sem_data != NULL:
            sem_close(self._sem_data)
            self._sem_data = NULL
        if self._sem_space != NULL:
            sem_close(self._sem_space)
            self._sem_space = NULL
        if self._have_ctrl_buf:
            PyBuffer_Release(&self._ctrl_buf)
            self._have_ctrl_buf = False
        self._ctrl = NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __dealloc__(self):
        # A handle dropped without close(): give the role back and, for the owner in its
        # own process (not a forked copy), remove the names. C calls on this handle's own
        # fields only (the names were encoded to bytes at setup; the one Python-level read
        # is the segment's ``unlinked`` flag): this may run during interpreter shutdown.
        # The mappings are freed by their own finalisers.
        if not self._closed and self._ctrl != NULL:
            if self._side != SIDE_NONE and vg_load_relaxed_u32(self._ctrl, self._pid_off) == <uint32_t>getpid():
                vg_store_release_u32(self._ctrl, self._pid_off, 0)
            if (self._owner and self._creator_pid == getpid() and self._bell_path is not None
                    and not self._seg.unlinked):
                vg_store_release_u32(self._ctrl, VG_CTRL_CLOSED, 1)
                shm_unlink(self._shm_name)
                sem_unlink(self._data_sem_name)
                sem_unlink(self._space_sem_name)
                unlink(self._bell_path)
        if self._sem_data != NULL:
            sem_close(self._sem_data)
        if self._sem_space != NULL:
            sem_close(self._sem_space)
        if self._have_data_buf:
            PyBuffer_Release(&self._data_buf)
        if self._have_ctrl_buf:
            PyBuffer_Release(&self._ctrl_buf)

    def __repr__(self):
        state = "closed" if self._closed else f"capacity={self._cap}"
        return f"<Ring {self._name!r} role={self._role} {state}>"
