"""Per-process status blocks in shared memory: state, heartbeat, counters, histograms.

The supervisor creates one block per worker, per gateway and one for itself, and alone
unlinks them. Each block has one writer for each field: the process it describes, except
the creator fields and ``RESTARTS``/``LAST_REPLACE_NS``, which the supervisor writes.
Any process may read a block at any time (the metrics endpoint does, from a gateway):
fields are aligned int64 words, so a reader never sees a torn value, only values from
slightly different moments. Counters survive a worker restart, because the replacement
attaches to the same block, so exported counters stay monotonic.

Duration histograms use fixed log2 buckets over nanoseconds: bucket 0 holds values below
1024 ns, bucket k holds [2**(9+k), 2**(10+k)) ns and the last bucket everything from about
34 s up. The size histogram (``Histogram.BATCH``, items per model call) uses the same row
layout with its own bounds: bucket k holds sizes in (2**(k-1), 2**k] for k up to 8 (1, 2,
3-4, ..., 129-256) and bucket 9 everything above 256.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import numpy as np
import numpy.typing as npt
import posix_ipc

from voicegate.core.clock import NS_PER_S, monotonic_ns
from voicegate.workers.runtime.process_control import is_alive, process_start_ticks

MAGIC: Final[int] = int.from_bytes(b"VGSTAT01", "little")
VERSION: Final[int] = 2  # 2: Histogram.BATCH added


class State(IntEnum):
    """Lifecycle of the process a block describes."""

    EMPTY = 0  # created, no process yet
    STARTING = 1  # process spawned, setting up
    LOADING = 2  # loading models
    READY = 3  # serving
    DRAINING = 4  # finishing turns in flight, admitting nothing new
    DRAINED = 5  # nothing in flight any more (gateways)
    STOPPED = 6  # exited cleanly
    FAILED = 7  # exited on an error; LAST_ERROR says which


class Field(IntEnum):
    """Index of each int64 word in the block header."""

    MAGIC = 0
    VERSION = 1
    CREATOR_PID = 2
    CREATOR_START = 3  # creator's start ticks: a reused pid does not look alive
    PID = 4
    PID_START = 5
    STATE = 6
    HEARTBEAT_NS = 7
    GENERATION = 8  # how many processes have run with this block
    RESTARTS = 9  # replacements after a failure (supervisor)
    STARTED_NS = 10
    READY_NS = 11
    LOAD_NS = 12  # model load time of the current process
    LAST_REPLACE_NS = 13  # failure detected -> replacement ready (supervisor)
    RECORDS_IN = 14
    RECORDS_OUT = 15
    DROPPED_STALE = 16  # records of a turn that is no longer current
    DROPPED_UNKNOWN = 17  # records of a session this worker does not know
    DROPPED_OUTPUT = 18  # records given up at shutdown because the next ring stayed full
    BATCHES = 19
    SESSIONS = 20  # sessions open now
    OUTPUT_WAIT_NS = 21  # time blocked on a full output ring (backpressure)
    UNSTAMPED = 22  # records without a send stamp: no ring wait measured
    TICKS = 23
    DROPPED_UNROUTABLE = 24  # records for a gateway this node does not have
    SESSION_FAILURES = 25  # session turns the stage failed on (the worker went on)


HEADER_WORDS: Final[int] = 32


class Histogram(IntEnum):
    RING_WAIT = 0  # send stamp -> read, per record
    COMPUTE = 1  # duration of the stage call that handled the record, per record
    TICK = 2  # duration of each time-driven tick
    BATCH = 3  # items per model call (a size, not a duration: see SIZE_BOUNDS)


# Histograms whose values are durations in ns; the others hold sizes.
DURATION_HISTOGRAMS: Final[frozenset[Histogram]] = frozenset(
    (Histogram.RING_WAIT, Histogram.COMPUTE, Histogram.TICK)
)


BUCKETS: Final[int] = 27
_HIST_WORDS: Final[int] = BUCKETS + 2  # buckets, then count, then sum of values in ns
_ERROR_BYTES: Final[int] = 512
_WORDS: Final[int] = HEADER_WORDS + len(Histogram) * _HIST_WORDS
SIZE: Final[int] = _WORDS * 8 + _ERROR_BYTES

# Exclusive upper bound of each bucket in ns; the last bucket has none.
BUCKET_BOUNDS_NS: Final[tuple[int, ...]] = tuple(1 << (10 + k) for k in range(BUCKETS - 1))


# Inclusive upper bound of each size bucket; the bucket after the last holds the rest.
SIZE_BOUNDS: Final[tuple[int, ...]] = tuple(1 << k for k in range(9))


def size_bucket_of(size: int) -> int:
    """Size histogram bucket of ``size`` items (sizes below 1 count as 1)."""
    return min(max(size - 1, 0).bit_length(), len(SIZE_BOUNDS))


def bucket_of(ns: int) -> int:
    """Histogram bucket of a duration in ns."""
    return min(max(ns.bit_length() - 10, 0), BUCKETS - 1)


def buckets_of(ns: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Vectorised ``bucket_of``."""
    # frexp's exponent is the bit length for integers below 2**53.
    _, exponent = np.frexp(np.maximum(ns, 0).astype(np.float64))
    return np.clip(exponent.astype(np.int64) - 10, 0, BUCKETS - 1)


def _shm_name(name: str) -> str:
    return name if name.startswith("/") else "/" + name


class StatusBlock:
    """One status block mapped into this process."""

    def __init__(self, name: str, memory: mmap.mmap) -> None:
        self.name = name
        self._mmap = memory
        self.words: npt.NDArray[np.int64] = np.frombuffer(memory, dtype=np.int64, count=_WORDS)
        self._hist: npt.NDArray[np.int64] = self.words[HEADER_WORDS:].reshape(
            len(Histogram), _HIST_WORDS
        )
        self._error = memoryview(memory)[_WORDS * 8 : SIZE]

    @classmethod
    def create(cls, name: str) -> StatusBlock:
        """Create a zeroed block owned by the calling process; fails if it exists."""
        shm = posix_ipc.SharedMemory(_shm_name(name), posix_ipc.O_CREX, mode=0o600, size=SIZE)
        try:
            memory = mmap.mmap(shm.fd, SIZE)
        finally:
            shm.close_fd()
        block = cls(name, memory)
        block.words[Field.VERSION] = VERSION
        block.words[Field.CREATOR_PID] = os.getpid()
        block.words[Field.CREATOR_START] = process_start_ticks(os.getpid()) or 0
        block.words[Field.MAGIC] = MAGIC
        return block

    @classmethod
    def attach(cls, name: str) -> StatusBlock:
        """Map an existing block. Raises FileNotFoundError when there is none and
        ValueError when the segment is not a status block of this version."""
        try:
            shm = posix_ipc.SharedMemory(_shm_name(name))
        except posix_ipc.ExistentialError:
            raise FileNotFoundError(f"status block {name!r} does not exist") from None
        try:
            if shm.size < SIZE:
                raise ValueError(f"status block {name!r} is {shm.size} bytes, expected {SIZE}")
            memory = mmap.mmap(shm.fd, SIZE)
        finally:
            shm.close_fd()
        block = cls(name, memory)
        magic, version = int(block.words[Field.MAGIC]), int(block.words[Field.VERSION])
        if magic != MAGIC or version != VERSION:
            block.close()
            raise ValueError(
                f"status block {name!r}: magic {magic:#x} version {version}, "
                f"expected {MAGIC:#x} version {VERSION}"
            )
        return block

    @staticmethod
    def unlink_name(name: str) -> bool:
        """Remove a block's name; False when it did not exist."""
        try:
            posix_ipc.unlink_shared_memory(_shm_name(name))
        except posix_ipc.ExistentialError:
            return False
        return True

    def close(self) -> None:
        """Unmap; the name stays until ``unlink_name``."""
        if self._mmap.closed:
            return
        # numpy views and the memoryview export the mmap's buffer; drop them first.
        self._error.release()
        del self.words
        del self._hist
        self._mmap.close()

    # -- fields ---------------------------------------------------------------------

    def get(self, field: Field) -> int:
        return int(self.words[field])

    def set(self, field: Field, value: int) -> None:
        self.words[field] = value

    def add(self, field: Field, value: int) -> None:
        self.words[field] += value

    @property
    def state(self) -> State:
        return State(int(self.words[Field.STATE]))

    @state.setter
    def state(self, value: State) -> None:
        self.words[Field.STATE] = value

    def beat(self, now_ns: int | None = None) -> None:
        self.words[Field.HEARTBEAT_NS] = monotonic_ns() if now_ns is None else now_ns

    def heartbeat_age_s(self, now_ns: int | None = None) -> float:
        beat = int(self.words[Field.HEARTBEAT_NS])
        if beat == 0:
            return float("inf")
        return ((monotonic_ns() if now_ns is None else now_ns) - beat) / NS_PER_S

    def claim(self) -> None:
        """Record the calling process as the one this block describes."""
        pid = os.getpid()
        self.words[Field.PID_START] = process_start_ticks(pid) or 0
        self.words[Field.PID] = pid

    def holder_alive(self) -> bool:
        """True when the process recorded by ``claim`` still runs."""
        return is_alive(self.get(Field.PID), self.get(Field.PID_START))

    def creator_alive(self) -> bool:
        return is_alive(self.get(Field.CREATOR_PID), self.get(Field.CREATOR_START))

    @property
    def last_error(self) -> str:
        raw = bytes(self._error)
        return raw[: raw.find(b"\0") if b"\0" in raw else len(raw)].decode(errors="replace")

    @last_error.setter
    def last_error(self, text: str) -> None:
        raw = text.encode()[: _ERROR_BYTES - 1]
        self._error[: len(raw)] = raw
        self._error[len(raw)] = 0

    # -- histograms -----------------------------------------------------------------

    def observe(self, histogram: Histogram, ns: int, count: int = 1) -> None:
        """Add ``count`` samples of value ``ns``."""
        row = self._hist[histogram]
        row[bucket_of(ns)] += count
        row[BUCKETS] += count
        row[BUCKETS + 1] += ns * count

    def observe_size(self, histogram: Histogram, size: int) -> None:
        """Add one sample of ``size`` items to a size histogram (``Histogram.BATCH``)."""
        if histogram in DURATION_HISTOGRAMS:
            raise ValueError(f"histogram {histogram.name} holds durations, not sizes")
        row = self._hist[histogram]
        row[size_bucket_of(size)] += 1
        row[BUCKETS] += 1
        row[BUCKETS + 1] += size

    def observe_many(self, histogram: Histogram, ns: npt.NDArray[np.int64]) -> None:
        if len(ns) == 0:
            return
        row = self._hist[histogram]
        row[:BUCKETS] += np.bincount(buckets_of(ns), minlength=BUCKETS)
        row[BUCKETS] += len(ns)
        row[BUCKETS + 1] += int(ns.sum())

    def histogram(self, histogram: Histogram) -> HistogramSnapshot:
        row = self._hist[histogram].copy()
        return HistogramSnapshot(
            histogram.name.lower(), row[:BUCKETS].copy(), int(row[BUCKETS]), int(row[BUCKETS + 1])
        )

    def snapshot(self, now_ns: int | None = None) -> StatusSnapshot:
        words = self.words.copy()
        now_ns = monotonic_ns() if now_ns is None else now_ns
        beat = int(words[Field.HEARTBEAT_NS])
        return StatusSnapshot(
            name=self.name,
            state=State(int(words[Field.STATE])),
            pid=int(words[Field.PID]),
            heartbeat_age_s=(now_ns - beat) / NS_PER_S if beat else float("inf"),
            counters={f.name.lower(): int(words[f]) for f in Field if f > Field.STATE},
            histograms={h.name.lower(): self.histogram(h) for h in Histogram},
            last_error=self.last_error,
        )


@dataclass(frozen=True)
class HistogramSnapshot:
    name: str
    buckets: npt.NDArray[np.int64]  # counts per bucket; bounds in BUCKET_BOUNDS_NS
    count: int
    sum_ns: int  # the sum of the values: ns, or items for a size histogram

    def quantile_ns(self, q: float) -> int:
        """Upper bound of the bucket holding the q-quantile (0 when empty)."""
        if self.count == 0:
            return 0
        rank = q * self.count
        cumulative = np.cumsum(self.buckets)
        k = int(np.searchsorted(cumulative, rank, side="left"))
        k = min(k, BUCKETS - 1)
        return BUCKET_BOUNDS_NS[k] if k < BUCKETS - 1 else BUCKET_BOUNDS_NS[-1] * 2


@dataclass(frozen=True)
class StatusSnapshot:
    """A copy of one block, taken at one moment."""

    name: str
    state: State
    pid: int
    heartbeat_age_s: float
    counters: dict[str, int]
    histograms: dict[str, HistogramSnapshot]
    last_error: str


def remove_stale_blocks(prefix: str, suffix: str = ".status") -> list[str]:
    """Unlink the status blocks named ``<prefix>...<suffix>`` whose creator is gone (or
    that are not valid blocks); returns their names."""
    try:
        names = sorted(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return []
    removed: list[str] = []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        try:
            block = StatusBlock.attach(name)
        except FileNotFoundError:
            continue
        except ValueError:
            stale = True
        else:
            stale = not block.creator_alive()
            block.close()
        if stale and StatusBlock.unlink_name(name):
            removed.append(name)
    return removed
