"""Pure-Python reference ring: the same API, layout and wait protocol as the Cython ring
in ``_ring.pyx``, written for clarity; it is the executable specification the Cython
ring is tested against, and works where the extension is not built.

Memory-ordering assumptions (documented, not enforced by the language):

- Control fields are read and written through native memoryview casts, so an aligned
  4- or 8-byte field is loaded or stored with one instruction, which is atomic on
  x86-64 and arm64: a reader never sees half of a position.
- Publication order (payload bytes, then ``write_pos``; consumer reads ``write_pos``, then
  the payload) relies on the hardware keeping stores in order and loads in order. x86-64
  (TSO) does; on weaker machines this reference is a specification, not a transport.
- The one reordering TSO allows, a store followed by a load of another location, is what
  loses wake-ups in the sleeping-flag handshake. :func:`_full_fence` orders them with an
  uncontended lock acquire/release, a locked read-modify-write and so a full barrier on
  x86-64.
- There is no atomic exchange in pure Python, so a waker clears the sleeping flag with a
  plain store. The cost is at most a spare semaphore post, which the next park drains;
  the waker always posts after clearing, so no wake-up is lost.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import posix_ipc

from voicegate.core.layout import (
    CONTROL_OFFSETS,
    KIND_PAD,
    RECORD_FORMAT,
    RECORD_HEADER_SIZE,
    record_offsets,
    record_size,
)
from voicegate.ext.doorbell import DoorbellReader, DoorbellWriter
from voicegate.ext.errors import (
    STATUS_CLOSED,
    STATUS_CORRUPT,
    STATUS_PEER_DIED,
    RingClosed,
    RingError,
    raise_for_status,
)
from voicegate.ext.ring_format import (
    AWAKE,
    DEFAULT_PARK_SLICE_S,
    DEFAULT_SPIN_US,
    PARKED_ON_DOORBELL,
    PARKED_ON_SEMAPHORE,
    Role,
    check_role,
    check_timing,
    payload_too_large,
    record_field_error,
)
from voicegate.ext.segment import PEER_ROLE, ROLE_FIELDS, Segment

_RECORD = struct.Struct(RECORD_FORMAT)
_PAD_HEAD = struct.Struct("<IHH")  # length, kind, flags: all of a pad that must fit
_SENT = struct.Struct("<q")
_SENT_OFFSET: Final[int] = record_offsets()["sent_ns"]

_Q: Final[dict[str, int]] = {name: off >> 3 for name, off in CONTROL_OFFSETS.items()}
_I: Final[dict[str, int]] = {name: off >> 2 for name, off in CONTROL_OFFSETS.items()}

_FENCE_LOCK = threading.Lock()

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from voicegate.ext._ring import Record


def _full_fence() -> None:
    _FENCE_LOCK.acquire()
    _FENCE_LOCK.release()


def monotonic_ns() -> int:
    """CLOCK_MONOTONIC in ns, the clock of ``origin_ns`` and of the heartbeats."""
    return time.monotonic_ns()


def _record_class() -> type[Record[Buffer]]:
    """The one record type, from the compiled extension (imported on first use, so this
    module loads before the extension is built)."""
    from voicegate.ext import _ring  # noqa: PLC0415 (see the docstring)

    return _ring.Record


def _view_record(
    *, kind: int, flags: int, session: int, turn: int, seq: int, origin_ns: int, sent_ns: int,
    payload: memoryview,
) -> Record[memoryview]:
    from voicegate.ext import _ring  # noqa: PLC0415 (see _record_class)

    return _ring.Record(
        kind=kind, session=session, turn=turn, seq=seq, origin_ns=origin_ns, payload=payload,
        flags=flags, sent_ns=sent_ns,
    )


class ReferenceRing:
    """Single-producer single-consumer ring of variable-length records in POSIX shared
    memory (see ``voicegate/ext/_ring.pyi`` for the contract)."""

    def __init__(self, segment: Segment, role: Role, spin_us: float, park_slice_s: float) -> None:
        """Use :meth:`create` or :meth:`attach`."""
        check_timing(spin_us, park_slice_s)
        self._seg = segment
        self._name = segment.names.name
        self._role: Role = role
        self._owner = segment.owner
        # Closed until fully constructed, so that __del__ of a half-built handle is inert.
        self._closed = True
        self._spin_s = spin_us / 1e6
        self._slice_s = park_slice_s
        self._cap = segment.capacity
        self._mask = segment.capacity - 1
        self._max_payload = segment.capacity // 2 - RECORD_HEADER_SIZE
        self._q = segment.u64
        self._i = segment.u32
        # Semaphores before views: a failure here must leave no export of the mapping.
        try:
            self._data_sem = posix_ipc.Semaphore(segment.names.data_sem)
            self._space_sem = posix_ipc.Semaphore(segment.names.space_sem)
        except posix_ipc.ExistentialError:
            raise RingClosed(f"ring {self._name!r} is being removed (semaphores gone)") from None
        self._data = memoryview(segment.data)
        self._ro = self._data.toreadonly()
        self._bell_reader: DoorbellReader | None = None
        self._bell_writer: DoorbellWriter | None = None
        self._slice_timeouts = 0
        self._waiting = 0  # threads parked on this handle's semaphores
        q = self._q
        # Producer state: staged position, published position, cached consumer index.
        self._wpos = self._pub = q[_Q["write_pos"]]
        self._cached_rpos = q[_Q["read_pos"]]
        self._written = q[_Q["written"]]
        self._dropped = q[_Q["dropped_full"]]
        self._wakeups = q[_Q["wakeups_sent"]]
        self._pparks = q[_Q["producer_parks"]]
        self._staged = 0
        # Consumer state: handed-out position, released position, cached producer index.
        self._rpos = self._released = q[_Q["read_pos"]]
        self._cached_wpos = self._rpos
        self._read = q[_Q["read"]]
        self._cparks = q[_Q["consumer_parks"]]
        self._space_wakeups = q[_Q["space_wakeups_sent"]]
        if role in ROLE_FIELDS:
            _, _, beat_field, _ = ROLE_FIELDS[role]
            self._beat_index = _Q[beat_field]
            self._peer = PEER_ROLE[role]
        else:
            self._beat_index = -1
            self._peer = ""
        self._closed = False

    # -- construction -------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        capacity: int,
        *,
        role: Role = "owner",
        spin_us: float = DEFAULT_SPIN_US,
        park_slice_s: float = DEFAULT_PARK_SLICE_S,
    ) -> ReferenceRing:
        role = check_role(role, ("owner", "producer", "consumer"))
        seg = Segment.create(name, capacity)
        try:
            if role != "owner":
                seg.claim(role)
            return cls(seg, role, spin_us, park_slice_s)
        except BaseException:
            seg.unlink()
            seg.close_data()
            seg.close()
            raise

    @classmethod
    def attach(
        cls,
        name: str,
        role: Role,
        *,
        spin_us: float = DEFAULT_SPIN_US,
        park_slice_s: float = DEFAULT_PARK_SLICE_S,
    ) -> ReferenceRing:
        role = check_role(role, ("producer", "consumer", "observer"))
        seg = Segment.open(name)
        try:
            if role != "observer":
                seg.claim(role)
            return cls(seg, role, spin_us, park_slice_s)
        except BaseException:
            seg.release_claim()
            seg.close_data()
            seg.close()
            raise

    # -- properties ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def role(self) -> Role:
        return self._role

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def max_payload(self) -> int:
        return self._max_payload

    @property
    def slice_timeouts(self) -> int:
        """Park slices of this handle that ended by timeout rather than by a wake-up."""
        return self._slice_timeouts

    # -- checks -------------------------------------------------------------------------

    def _check(self, role: str, op: str) -> None:
        if self._closed:
            raise RingClosed(f"ring {self._name!r}: this handle is closed")
        if self._role != role:
            raise RingError(
                f"ring {self._name!r}: {op} needs the {role} role; this handle is {self._role}"
            )

    def _owner_closed(self) -> bool:
        return self._i[_I["closed"]] != 0

    def _beat(self) -> None:
        self._q[self._beat_index] = time.monotonic_ns()

    # -- producer -----------------------------------------------------------------------

    def _stage(self, record: Record[Buffer], count_drop: bool) -> bool:
        if not isinstance(record, _record_class()):
            raise TypeError(f"a ring takes a Record, not {type(record).__name__}")
        kind, flags, session, turn = record.kind, record.flags, record.session, record.turn
        seq, origin_ns, payload = record.seq, record.origin_ns, record.payload
        error = record_field_error(
            kind=kind, flags=flags, session=session, turn=turn, seq=seq, origin_ns=origin_ns
        )
        if error is not None:
            raise error
        with memoryview(payload) as view, view.cast("B") as body:
            length = body.nbytes
            if length > self._max_payload:
                raise payload_too_large(length, self._max_payload, self._name)
            size = record_size(length)
            w = self._wpos
            idx = w & self._mask
            pad = self._cap - idx if idx + size > self._cap else 0
            end = w + pad + size
            if end - self._cached_rpos > self._cap:
                self._cached_rpos = self._q[_Q["read_pos"]]
                if end - self._cached_rpos > self._cap:
                    if count_drop:
                        self._dropped += 1
                        self._q[_Q["dropped_full"]] = self._dropped
                    return False
            data = self._data
            if pad:
                _PAD_HEAD.pack_into(data, idx, pad, KIND_PAD, 0)
                idx = 0
            # sent_ns stays 0 until publish writes the publish time.
            _RECORD.pack_into(data, idx, length, kind, flags, session, turn, seq, 0, origin_ns, 0)
            start = idx + RECORD_HEADER_SIZE
            data[start : start + length] = body
        self._wpos = end
        self._written += 1
        self._staged += 1
        return True

    def _wake_consumer(self) -> None:
        index = _I["consumer_sleeping"]
        state = self._i[index]
        if state == AWAKE:
            return
        self._i[index] = AWAKE
        if state == PARKED_ON_DOORBELL:
            if self._bell_writer is None:
                self._bell_writer = DoorbellWriter(self._seg.names.doorbell)
            self._bell_writer.ring()
        else:
            self._data_sem.release()
        self._wakeups += 1
        self._q[_Q["wakeups_sent"]] = self._wakeups

    def try_write(self, record: Record[Buffer]) -> bool:
        """Write and publish one record; never blocks. False (and counted) when full."""
        self._check("producer", "try_write")
        if not self._stage(record, True):
            return False
        self.publish()
        return True

    def stage(self, record: Record[Buffer]) -> bool:
        """Write one record without publishing it. False (and counted) when full."""
        self._check("producer", "stage")
        return self._stage(record, True)

    def publish(self) -> int:
        """Publish staged records and wake a parked consumer; returns how many."""
        self._check("producer", "publish")
        if self._owner_closed():
            raise_for_status(STATUS_CLOSED, self._name, "its owner closed it")
        count = self._staged
        if self._wpos != self._pub:
            self._stamp_sent(time.monotonic_ns())
            self._q[_Q["write_pos"]] = self._wpos
            self._pub = self._wpos
            self._staged = 0
            self._q[_Q["written"]] = self._written
            _full_fence()
            self._wake_consumer()
        self._beat()
        return count

    def _stamp_sent(self, now: int) -> None:
        """Write ``now`` as the send time of every staged record (pads are skipped)."""
        pos, data = self._pub, self._data
        while pos < self._wpos:
            idx = pos & self._mask
            length, kind, _ = _PAD_HEAD.unpack_from(data, idx)
            if kind == KIND_PAD:
                pos += length
                continue
            _SENT.pack_into(data, idx + _SENT_OFFSET, now)
            pos += record_size(length)

    def write_batch(self, records: Iterable[Record[Buffer]]) -> int:
        """Stage records until one does not fit, then publish them all at once. A record
        that is invalid (bad field, payload too large) raises and the batch writes nothing."""
        self._check("producer", "write_batch")
        count = 0
        saved = (self._wpos, self._written, self._staged)
        try:
            for record in records:
                if not self._stage(record, True):
                    break
                count += 1
        except BaseException:
            # Unpublished bytes past write_pos are invisible: rewinding erases the batch.
            self._wpos, self._written, self._staged = saved
            raise
        self.publish()
        return count

    def write(self, record: Record[Buffer], timeout: float | None = None) -> bool:
        """Write one record, waiting (spin, then park) up to ``timeout`` s for space."""
        self._check("producer", "write")
        if self._stage(record, False):
            self.publish()
            return True
        self.publish()  # what was staged before must be visible before we wait
        if timeout is not None and timeout <= 0:
            return self._drop()
        now = time.monotonic()
        deadline = math.inf if timeout is None else now + timeout
        spin_end = min(now + self._spin_s, deadline)
        while time.monotonic() < spin_end:
            if self._stage(record, False):
                self.publish()
                return True
        sleeping = _I["producer_sleeping"]
        while True:
            slice_end = min(time.monotonic() + self._slice_s, deadline)
            _drain(self._space_sem)
            self._i[sleeping] = PARKED_ON_SEMAPHORE
            _full_fence()
            if self._stage(record, False):
                self._i[sleeping] = AWAKE
                self.publish()
                return True
            if self._owner_closed():
                self._i[sleeping] = AWAKE
                raise_for_status(STATUS_CLOSED, self._name, "its owner closed it")
            if not _acquire_counted(self, self._space_sem, slice_end - time.monotonic()):
                self._slice_timeouts += 1
            self._i[sleeping] = AWAKE
            self._pparks += 1
            self._q[_Q["producer_parks"]] = self._pparks
            self._beat()
            if self._stage(record, False):
                self.publish()
                return True
            if self._owner_closed():
                raise_for_status(STATUS_CLOSED, self._name, "its owner closed it")
            if self._seg.holder_died("consumer"):
                raise_for_status(STATUS_PEER_DIED, self._name, "consumer gone while waiting")
            if time.monotonic() >= deadline:
                return self._drop()

    def _drop(self) -> bool:
        self._dropped += 1
        self._q[_Q["dropped_full"]] = self._dropped
        return False

    # -- consumer -----------------------------------------------------------------------

    def _has_record(self) -> bool:
        if self._rpos != self._cached_wpos:
            return True
        self._cached_wpos = self._q[_Q["write_pos"]]
        return self._rpos != self._cached_wpos

    def _corrupt(self, detail: str) -> None:
        raise_for_status(STATUS_CORRUPT, self._name, detail)

    def _next(self) -> Record[memoryview] | None:
        if not self._has_record():
            return None
        r = self._rpos
        idx = r & self._mask
        data = self._data
        length, kind, _ = _PAD_HEAD.unpack_from(data, idx)
        if kind == KIND_PAD:
            if length != self._cap - idx:
                self._corrupt(f"pad of {length} bytes at offset {idx}, expected {self._cap - idx}")
            r += length
            idx = 0
            if r >= self._cached_wpos:
                self._corrupt(f"pad at position {r - length} not followed by a record")
        length, kind, flags, session, turn, seq, _, origin_ns, sent_ns = _RECORD.unpack_from(
            data, idx
        )
        size = record_size(length)
        if length > self._max_payload or idx + size > self._cap or r + size > self._cached_wpos:
            self._corrupt(f"record of {length} bytes at position {r} overruns the ring")
        start = idx + RECORD_HEADER_SIZE
        record = _view_record(
            kind=kind, flags=flags, session=session, turn=turn, seq=seq, origin_ns=origin_ns,
            sent_ns=sent_ns, payload=self._ro[start : start + length],
        )  # fmt: skip
        self._rpos = r + size
        self._read += 1
        return record

    def _release(self) -> None:
        if self._rpos == self._released:
            return
        q = self._q
        q[_Q["read_pos"]] = self._rpos
        self._released = self._rpos
        q[_Q["read"]] = self._read
        _full_fence()
        sleeping = _I["producer_sleeping"]
        if self._i[sleeping] != AWAKE:
            self._i[sleeping] = AWAKE
            self._space_sem.release()
            self._space_wakeups += 1
            q[_Q["space_wakeups_sent"]] = self._space_wakeups
        self._beat()

    def _wait_readable(self, timeout: float | None) -> bool:
        if self._has_record():
            return True
        if timeout is not None and timeout <= 0:
            if self._owner_closed():
                raise_for_status(STATUS_CLOSED, self._name, "its owner closed it")
            return False
        now = time.monotonic()
        deadline = math.inf if timeout is None else now + timeout
        spin_end = min(now + self._spin_s, deadline)
        while time.monotonic() < spin_end:
            if self._has_record():
                return True
        sleeping = _I["consumer_sleeping"]
        while True:
            slice_end = min(time.monotonic() + self._slice_s, deadline)
            _drain(self._data_sem)
            self._i[sleeping] = PARKED_ON_SEMAPHORE
            _full_fence()
            if self._has_record():
                self._i[sleeping] = AWAKE
                return True
            if self._owner_closed():
                self._i[sleeping] = AWAKE
                raise_for_status(STATUS_CLOSED, self._name, "its owner closed it")
            if not _acquire_counted(self, self._data_sem, slice_end - time.monotonic()):
                self._slice_timeouts += 1
            self._i[sleeping] = AWAKE
            self._cparks += 1
            self._q[_Q["consumer_parks"]] = self._cparks
            self._beat()
            if self._has_record():
                return True
            if self._owner_closed():
                raise_for_status(STATUS_CLOSED, self._name, "its owner closed it")
            if self._seg.holder_died("producer"):
                raise_for_status(STATUS_PEER_DIED, self._name, "producer gone while waiting")
            if time.monotonic() >= deadline:
                return False

    def try_read(self) -> Record[memoryview] | None:
        self._check("consumer", "try_read")
        self._release()
        record = self._next()
        if record is None:
            self._beat()
            if self._owner_closed():
                raise_for_status(STATUS_CLOSED, self._name, "its owner closed it")
        return record

    def read(self, timeout: float | None = None) -> Record[memoryview] | None:
        """Next record, waiting up to ``timeout`` seconds (None: forever)."""
        self._check("consumer", "read")
        self._release()
        if not self._wait_readable(timeout):
            return None
        return self._next()

    def read_batch(
        self, max_records: int = 256, timeout: float | None = 0.0
    ) -> list[Record[memoryview]]:
        """Up to ``max_records`` records; waits up to ``timeout`` for the first one."""
        self._check("consumer", "read_batch")
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        self._release()
        if not self._wait_readable(timeout):
            return []
        records: list[Record[memoryview]] = []
        while len(records) < max_records:
            record = self._next()
            if record is None:
                break
            records.append(record)
        return records

    def wait(self, timeout: float | None = None) -> bool:
        """Release what was read, then wait until a record is available."""
        self._check("consumer", "wait")
        self._release()
        return self._wait_readable(timeout)

    def release(self) -> None:
        """Hand the space of every record read so far back to the producer."""
        self._check("consumer", "release")
        self._release()

    def available(self) -> int:
        """Bytes published and not yet released (occupancy)."""
        if self._closed:
            raise RingClosed(f"ring {self._name!r}: this handle is closed")
        return int(self._q[_Q["write_pos"]] - self._q[_Q["read_pos"]])

    # -- asyncio doorbell ---------------------------------------------------------------

    def doorbell_fileno(self) -> int:
        """A non-blocking fd that becomes readable when an armed doorbell is rung."""
        self._check("consumer", "doorbell_fileno")
        if self._bell_reader is None:
            self._bell_reader = DoorbellReader(self._seg.names.doorbell)
        return self._bell_reader.fileno()

    def arm_doorbell(self) -> bool:
        """Release what was read and ask the producer to ring the doorbell on its next
        publish. False (not armed) when a record is already available or the ring closed."""
        self._check("consumer", "arm_doorbell")
        self._release()
        self.doorbell_fileno()
        assert self._bell_reader is not None
        self._bell_reader.drain()
        if self._has_record() or self._owner_closed():
            return False
        sleeping = _I["consumer_sleeping"]
        self._i[sleeping] = PARKED_ON_DOORBELL
        _full_fence()
        if self._has_record() or self._owner_closed():
            self._i[sleeping] = AWAKE
            return False
        self._cparks += 1
        self._q[_Q["consumer_parks"]] = self._cparks
        return True

    def disarm_doorbell(self) -> None:
        self._check("consumer", "disarm_doorbell")
        self._i[_I["consumer_sleeping"]] = AWAKE
        self._beat()

    # -- liveness -----------------------------------------------------------------------

    def _peer_role(self) -> str:
        if not self._peer:
            raise RingError(f"ring {self._name!r}: the {self._role} role has no peer")
        return self._peer

    def beat(self) -> None:
        """Publish this side's heartbeat (done implicitly by reads, writes and waits)."""
        if self._beat_index < 0:
            raise RingError(f"ring {self._name!r}: the {self._role} role has no heartbeat")
        self._check(self._role, "beat")
        self._beat()

    @property
    def peer_pid(self) -> int:
        return self._seg.holder(self._peer_role())[0]

    def peer_alive(self) -> bool:
        return self._seg.holder_alive(self._peer_role())

    def peer_beat_age(self) -> float:
        role = self._peer_role()
        if self._seg.holder(role)[0] == 0:
            return math.inf
        beat = self._q[_Q[ROLE_FIELDS[role][2]]]
        return max(0.0, (time.monotonic_ns() - beat) / 1e9)

    # -- misc ---------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        if self._closed:
            raise RingClosed(f"ring {self._name!r}: this handle is closed")
        q = self._q
        out = {
            name: int(q[_Q[name]])
            for name in (
                "written",
                "dropped_full",
                "read",
                "wakeups_sent",
                "consumer_parks",
                "producer_parks",
                "space_wakeups_sent",
            )
        }
        out["occupancy_bytes"] = int(q[_Q["write_pos"]] - q[_Q["read_pos"]])
        out["capacity"] = self._cap
        out["producer_pid"] = self._seg.holder("producer")[0]
        out["consumer_pid"] = self._seg.holder("consumer")[0]
        return out

    def _wake_all(self) -> None:
        # The owner is going away: every parked side must wake and see ``closed``.
        self._data_sem.release()
        self._space_sem.release()
        if self._i[_I["consumer_sleeping"]] == PARKED_ON_DOORBELL:
            DoorbellWriter(self._seg.names.doorbell).ring()

    def unlink(self) -> None:
        """Mark the ring closed, wake both sides and remove its names (owner only)."""
        if not self._owner:
            raise RingError(f"ring {self._name!r}: only its owner (creator) may unlink it")
        if self._closed:
            raise RingClosed(f"ring {self._name!r}: this handle is closed")
        self._seg.set("closed", 1)
        _full_fence()
        self._wake_all()
        self._seg.unlink()

    def close(self) -> None:
        """Detach; the owner also unlinks the segment and semaphores. BufferError (and
        nothing changed) while payload views of records read are still alive."""
        if self._closed:
            return
        if self._waiting:
            raise RingError(
                f"ring {self._name!r}: another thread is waiting on this handle; "
                "close() must wait until it returns"
            )
        self._ro.release()
        self._data.release()
        try:
            self._seg.close_data()
        except BufferError:
            self._data = memoryview(self._seg.data)
            self._ro = self._data.toreadonly()
            raise BufferError(
                f"ring {self._name!r}: payload views of records read are still alive; "
                "drop or release() them before close()"
            ) from None
        if self._role == "consumer" and not self._owner_closed():
            self._release()  # a clean detach consumes what was read
        self._closed = True
        self._seg.release_claim()
        if self._owner:
            self._seg.set("closed", 1)
            _full_fence()
            self._wake_all()
            self._seg.unlink()
        for end in (self._bell_reader, self._bell_writer):
            if end is not None:
                end.close()
        self._data_sem.close()
        self._space_sem.close()
        self._seg.close()

    def __enter__(self) -> ReferenceRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A handle dropped without close(): give the role back and, for the owner in its
        # own process (not a forked copy), remove the names. The mappings are freed by
        # their own finalisers once no payload view needs them.
        if getattr(self, "_closed", True):
            return
        try:
            self._seg.release_claim()
            if (
                self._owner
                and self._seg.get("creator_pid") == os.getpid()
                and not self._seg.unlinked
            ):
                self._seg.unlink()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"capacity={self._cap}"
        return f"<ReferenceRing {self._name!r} role={self._role} {state}>"


def _drain(sem: posix_ipc.Semaphore) -> None:
    # A post that arrived after its waiter had already woken (by timeout or by finding
    # data) is still in the semaphore; drained before announcing sleep, it cannot make
    # this park return early.
    while True:
        try:
            sem.acquire(0)
        except posix_ipc.BusyError:
            return


def _acquire_counted(ring: ReferenceRing, sem: posix_ipc.Semaphore, timeout: float) -> bool:
    ring._waiting += 1
    try:
        return _acquire(sem, timeout)
    finally:
        ring._waiting -= 1


def _acquire(sem: posix_ipc.Semaphore, timeout: float) -> bool:
    try:
        sem.acquire(max(timeout, 0.0))
    except posix_ipc.BusyError:
        return False
    return True
