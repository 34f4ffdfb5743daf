"""Type stub for the Cython ring (voicegate/ext/_ring.pyx).

The pure-Python reference ring (voicegate/ext/reference.py) implements exactly this API.
"""

from collections.abc import Iterable

from typing_extensions import Buffer

from voicegate.ext.errors import (
    PeerDied as PeerDied,
)
from voicegate.ext.errors import (
    RingClosed as RingClosed,
)
from voicegate.ext.errors import (
    RingError as RingError,
)
from voicegate.ext.errors import (
    RingLayoutError as RingLayoutError,
)
from voicegate.ext.ring_format import Role as Role

# (kind, flags, session, turn, seq, origin_ns, payload)
RecordTuple = tuple[int, int, int, int, int, int, Buffer]

class Record:
    """One record read from a ring. ``payload`` is a zero-copy read-only view into shared
    memory that stays valid until the consumer's next read, ``wait`` or ``release`` call."""

    @property
    def kind(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def session(self) -> int: ...
    @property
    def turn(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def origin_ns(self) -> int: ...
    @property
    def sent_ns(self) -> int:
        """CLOCK_MONOTONIC ns when the producer published it (written by the ring)."""
    @property
    def payload(self) -> memoryview: ...

class Ring:
    """Single-producer single-consumer ring of variable-length records in POSIX shared
    memory. One process creates it (the owner, who alone unlinks it); one producer and one
    consumer attach by name; any number of observers may attach to read ``stats()``.

    ``attach`` raises RingError while another live process holds the role; a holder that
    died (pid gone, zombie, or pid reused) is replaced: a new producer resumes from the
    published ``write_pos``, a new consumer from the released ``read_pos``.
    """

    @classmethod
    def create(
        cls,
        name: str,
        capacity: int,
        *,
        role: Role = "owner",
        spin_us: float = 50.0,
        park_slice_s: float = 0.1,
    ) -> Ring:
        """Create the ring; ``role`` "producer" or "consumer" also takes that side."""
    @classmethod
    def attach(
        cls, name: str, role: Role, *, spin_us: float = 50.0, park_slice_s: float = 0.1
    ) -> Ring:
        """Attach as "producer", "consumer" or "observer" (stats only, no role taken)."""
    @property
    def name(self) -> str: ...
    @property
    def role(self) -> Role: ...
    @property
    def capacity(self) -> int: ...
    @property
    def max_payload(self) -> int: ...
    @property
    def slice_timeouts(self) -> int:
        """Park slices of this handle that ended by timeout rather than by a wake-up."""
    # -- producer -------------------------------------------------------------------
    def try_write(
        self,
        kind: int,
        session: int,
        turn: int,
        seq: int,
        origin_ns: int,
        payload: Buffer = b"",
        flags: int = 0,
    ) -> bool:
        """Write and publish one record; never blocks. False (and counted) when full."""
    def stage(
        self,
        kind: int,
        session: int,
        turn: int,
        seq: int,
        origin_ns: int,
        payload: Buffer = b"",
        flags: int = 0,
    ) -> bool:
        """Write one record without publishing it; ``publish`` makes all staged records
        visible at once. False (and counted) when full."""
    def publish(self) -> int:
        """Publish staged records and wake a parked consumer; returns how many."""
    def write_batch(self, records: Iterable[RecordTuple]) -> int:
        """Stage records until one does not fit, then publish them all with one release
        store and at most one wake-up. Returns how many were written (a batch cut short
        counts one full event in ``dropped_full``)."""
    def write(
        self,
        kind: int,
        session: int,
        turn: int,
        seq: int,
        origin_ns: int,
        payload: Buffer = b"",
        flags: int = 0,
        timeout: float | None = None,
    ) -> bool:
        """Write one record, waiting (spin, then park) up to ``timeout`` seconds for space.
        Raises PeerDied when the consumer dies while the ring is full."""
    # -- consumer -------------------------------------------------------------------
    def try_read(self) -> Record | None: ...
    def read(self, timeout: float | None = None) -> Record | None:
        """Next record, waiting up to ``timeout`` seconds (None: forever). Raises
        PeerDied when the ring is empty and the producer died, RingClosed when it is
        empty and its owner closed it."""
    def read_batch(self, max_records: int = 256, timeout: float | None = 0.0) -> list[Record]:
        """Up to ``max_records`` records; waits up to ``timeout`` for the first one."""
    def wait(self, timeout: float | None = None) -> bool:
        """Release what was read, then wait until a record is available. GIL released."""
    def release(self) -> None:
        """Hand the space of every record read so far back to the producer."""
    def available(self) -> int:
        """Bytes published and not yet released (occupancy)."""
    # -- asyncio support (see voicegate.ext.aio) -----------------------------------
    def doorbell_fileno(self) -> int:
        """A non-blocking fd that becomes readable when an armed doorbell is rung."""
    def arm_doorbell(self) -> bool:
        """Release what was read and ask the producer to ring the doorbell on its next
        publish; False (not armed) when a record is already there or the ring closed."""
    def disarm_doorbell(self) -> None: ...
    # -- liveness -------------------------------------------------------------------
    def beat(self) -> None:
        """Publish this side's heartbeat (done implicitly by reads, writes and waits)."""
    @property
    def peer_pid(self) -> int: ...
    def peer_alive(self) -> bool:
        """False when the peer role's process has exited (kill -9 included, zombies and
        reused pids detected), or when it has not attached yet."""
    def peer_beat_age(self) -> float:
        """Seconds since the peer's last heartbeat; inf before it attached."""
    # -- misc -----------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Shared counters, the same from any attached process (an "observer" too):
        written (published records), dropped_full (writes refused for lack of space),
        read (records released by the consumer), wakeups_sent, consumer_parks,
        producer_parks, space_wakeups_sent, occupancy_bytes, capacity, producer_pid and
        consumer_pid (0 when the role is free)."""
    def close(self) -> None:
        """Detach (a consumer first releases what it read); the owner also unlinks the
        segment and semaphores. Raises BufferError (and changes nothing) while payload
        views of records read are still alive."""
    def unlink(self) -> None:
        """Mark the ring closed, wake both sides and remove its names (owner only)."""
    def __enter__(self) -> Ring: ...
    def __exit__(self, *exc: object) -> None: ...

def cleanup_stale(prefix: str = "vg-") -> list[str]:
    """Unlink segments and semaphores under ``prefix`` whose creator process is gone."""

def monotonic_ns() -> int:
    """CLOCK_MONOTONIC in ns, the clock of ``origin_ns`` and of the heartbeats."""
