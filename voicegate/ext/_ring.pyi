"""Type stub for the Cython ring (voicegate/ext/_ring.pyx).

The pure-Python reference ring (voicegate/ext/reference.py) implements exactly this API.
"""

from collections.abc import Iterable
from typing import Generic, TypeVar, overload

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

# The payload's type: memoryview for a record read from a ring (a view into it), what it
# was built with otherwise (bytes for the gateway link's copies).
P_co = TypeVar("P_co", bound=Buffer, covariant=True)

Q = TypeVar("Q", bound=Buffer)

class Record(Generic[P_co]):
    """One record: the header's fields (kind, flags, session, turn, seq, origin_ns,
    sent_ns) and its payload; the one record type of the node. Built by keyword only.
    ``sent_ns`` is written by the ring when it publishes the record.

    A record read from a ring has a zero-copy read-only view into shared memory as its
    payload, valid until the consumer's next read, ``wait`` or ``release`` call."""

    @overload
    def __init__(
        self: Record[bytes],
        *,
        kind: int,
        session: int,
        turn: int,
        seq: int = 0,
        origin_ns: int = 0,
        flags: int = 0,
        sent_ns: int = 0,
    ) -> None: ...
    @overload
    def __init__(
        self,
        *,
        kind: int,
        session: int,
        turn: int,
        seq: int = 0,
        origin_ns: int = 0,
        payload: P_co,
        flags: int = 0,
        sent_ns: int = 0,
    ) -> None: ...
    @overload
    def replace(
        self,
        *,
        kind: int | None = None,
        session: int | None = None,
        turn: int | None = None,
        seq: int | None = None,
        origin_ns: int | None = None,
        payload: Q,
        flags: int | None = None,
    ) -> Record[Q]: ...
    @overload
    def replace(
        self,
        *,
        kind: int | None = None,
        session: int | None = None,
        turn: int | None = None,
        seq: int | None = None,
        origin_ns: int | None = None,
        flags: int | None = None,
    ) -> Record[P_co]:
        """A copy with the given fields changed; without a new payload it shares this
        record's (a view into a ring stays one: ``detach`` copies)."""
    @property
    def borrowed(self) -> bool:
        """True for a record whose payload is a view into the ring it was read from."""
    def detach(self) -> Record[Buffer]:
        """This record, or a copy with its payload as bytes when it is a view into a ring."""

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
    def payload(self) -> P_co:
        """A read-only memoryview into the ring for a record read from one; what it was
        built with otherwise."""

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
    def try_write(self, record: Record[Buffer]) -> bool:
        """Write and publish one record; never blocks. False (and counted) when full."""
    def stage(self, record: Record[Buffer]) -> bool:
        """Write one record without publishing it; ``publish`` makes all staged records
        visible at once. False (and counted) when full."""
    def publish(self) -> int:
        """Publish staged records (the ring writes the publish time into each header's
        ``sent_ns``) and wake a parked consumer; returns how many."""
    def write_batch(self, records: Iterable[Record[Buffer]]) -> int:
        """Stage records until one does not fit, then publish them all with one release
        store and at most one wake-up. Returns how many were written (a batch cut short
        counts one full event in ``dropped_full``)."""
    def write(self, record: Record[Buffer], timeout: float | None = None) -> bool:
        """Write one record, waiting (spin, then park) up to ``timeout`` seconds for space.
        Raises PeerDied when the consumer dies while the ring is full."""
    # -- consumer -------------------------------------------------------------------
    def try_read(self) -> Record[memoryview] | None: ...
    def read(self, timeout: float | None = None) -> Record[memoryview] | None:
        """Next record, waiting up to ``timeout`` seconds (None: forever). Raises
        PeerDied when the ring is empty and the producer died, RingClosed when it is
        empty and its owner closed it."""
    def read_batch(
        self, max_records: int = 256, timeout: float | None = 0.0
    ) -> list[Record[memoryview]]:
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
