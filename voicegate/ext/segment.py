"""A ring's kernel objects: the shared-memory segment, its two semaphores and its
doorbell FIFO; creating them, checking the header on attach, claiming a role, removing
them, and removing what a crashed owner left behind.

Both ring implementations set up through this module; only the hot paths (records,
positions, waiting) differ. Control fields are accessed through native-endian memoryview
casts of the mapping: an aligned 4- or 8-byte item is read and written with one load or
store, which is what makes the pure-Python reference ring's index updates atomic.

Objects are created and unlinked with posix_ipc directly, which does not register them
with multiprocessing's resource tracker: the owner alone unlinks them.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import stat
import struct
import time
from collections.abc import Iterator
from typing import Final

import posix_ipc

from voicegate.core.layout import (
    CONTROL_FIELDS,
    CONTROL_OFFSETS,
    DATA_OFFSET,
    RECORD_HEADER_SIZE,
    RING_MAGIC,
    RING_VERSION,
)
from voicegate.ext.doorbell import DoorbellWriter
from voicegate.ext.errors import RingClosed, RingError, RingLayoutError
from voicegate.ext.procinfo import process_alive, self_start_time
from voicegate.ext.ring_format import (
    AWAKE,
    SHM_DIR,
    RingNames,
    check_capacity,
    ring_names,
)

# A segment whose header never became valid is only treated as abandoned once it is this
# old: its creator may still be initialising it.
STALE_UNINITIALISED_AGE_S: Final[float] = 10.0

_FIELD_TYPES: Final[dict[str, str]] = {name: ctype for name, ctype, _ in CONTROL_FIELDS}
_HEADER_BYTES: Final[int] = 64  # every creator-written field lies below this offset

# pid, start, heartbeat and sleeping-flag fields of each side.
ROLE_FIELDS: Final[dict[str, tuple[str, str, str, str]]] = {
    "producer": ("producer_pid", "producer_start", "producer_beat_ns", "producer_sleeping"),
    "consumer": ("consumer_pid", "consumer_start", "consumer_beat_ns", "consumer_sleeping"),
}
PEER_ROLE: Final[dict[str, str]] = {"producer": "consumer", "consumer": "producer"}


def _read_field(header: bytes, name: str) -> int:
    code = "=Q" if _FIELD_TYPES[name] == "uint64_t" else "=I"
    return int(struct.unpack_from(code, header, CONTROL_OFFSETS[name])[0])


def check_header(header: bytes, file_size: int, where: str) -> int:
    """Validate a segment's creator-written header; returns its capacity."""
    if file_size < DATA_OFFSET or len(header) < _HEADER_BYTES:
        raise RingLayoutError(
            f"{where}: {file_size} bytes, smaller than the {DATA_OFFSET}-byte control block"
        )
    magic = _read_field(header, "magic")
    if magic != RING_MAGIC:
        raise RingLayoutError(
            f"{where}: bad magic {magic:#018x}, expected {RING_MAGIC:#018x} "
            "(not a voicegate ring, or never initialised)"
        )
    version = _read_field(header, "version")
    if version != RING_VERSION:
        raise RingLayoutError(f"{where}: layout version {version}, this build reads {RING_VERSION}")
    header_size = _read_field(header, "record_header_size")
    if header_size != RECORD_HEADER_SIZE:
        raise RingLayoutError(
            f"{where}: record header of {header_size} bytes, this build uses {RECORD_HEADER_SIZE}"
        )
    data_offset = _read_field(header, "data_offset")
    if data_offset != DATA_OFFSET:
        raise RingLayoutError(f"{where}: data offset {data_offset}, expected {DATA_OFFSET}")
    capacity = _read_field(header, "capacity")
    try:
        check_capacity(capacity)
    except ValueError as exc:
        raise RingLayoutError(f"{where}: header capacity: {exc}") from None
    if file_size != DATA_OFFSET + capacity:
        raise RingLayoutError(
            f"{where}: {file_size} bytes, but capacity {capacity} needs {DATA_OFFSET + capacity}"
        )
    return capacity


class Segment:
    """One mapped ring segment. ``ctrl`` maps the control block, ``data`` the record area:
    two mappings so that payload views (exports of ``data`` only) can be detected at
    close time before anything in the control block has been changed."""

    def __init__(
        self, names: RingNames, shm: posix_ipc.SharedMemory, capacity: int, owner: bool
    ) -> None:
        self.names = names
        self.capacity = capacity
        self.owner = owner
        self._shm = shm
        self.ctrl = mmap.mmap(shm.fd, DATA_OFFSET)
        try:
            self.data = mmap.mmap(shm.fd, capacity, offset=DATA_OFFSET)
        except BaseException:
            self.ctrl.close()
            raise
        self._ctrl_view = memoryview(self.ctrl)
        self.u64 = self._ctrl_view.cast("Q")
        self.u32 = self._ctrl_view.cast("I")
        self._claimed: str | None = None
        self._open = True
        self.unlinked = False

    # -- creation and attachment ----------------------------------------------------

    @classmethod
    def create(cls, name: str, capacity: int) -> Segment:
        names = ring_names(name)
        check_capacity(capacity)
        shm = _create_shm(names, capacity)
        try:
            seg = cls(names, shm, capacity, owner=True)
        except BaseException:
            _unlink_quietly(names)
            shm.close_fd()
            raise
        try:
            seg.set("version", RING_VERSION)
            seg.set("record_header_size", RECORD_HEADER_SIZE)
            seg.set("capacity", capacity)
            seg.set("data_offset", DATA_OFFSET)
            seg.set("creator_pid", os.getpid())
            seg.set("creator_start", self_start_time())
            for sem_name in (names.data_sem, names.space_sem):
                _create_semaphore(sem_name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(names.doorbell)
            os.mkfifo(names.doorbell, 0o600)
            # The magic goes last: an attacher that sees it finds everything else in place.
            seg.set("magic", RING_MAGIC)
        except BaseException:
            seg.unlink()
            seg.close_data()
            seg.close()
            raise
        return seg

    @classmethod
    def open(cls, name: str) -> Segment:
        names = ring_names(name)
        try:
            shm = posix_ipc.SharedMemory(names.shm)
        except posix_ipc.ExistentialError:
            raise RingError(
                f"no ring named {names.name!r} ({names.shm_path} does not exist)"
            ) from None
        try:
            size = os.fstat(shm.fd).st_size
            header = os.pread(shm.fd, _HEADER_BYTES, 0)
            capacity = check_header(header, size, f"segment {names.shm_path}")
            if _read_field(header, "closed"):
                raise RingClosed(f"ring {names.name!r} is closed (its owner is removing it)")
            return cls(names, shm, capacity, owner=False)
        except BaseException:
            shm.close_fd()
            raise

    # -- control fields ---------------------------------------------------------------

    def get(self, field: str) -> int:
        off = CONTROL_OFFSETS[field]
        if _FIELD_TYPES[field] == "uint64_t":
            return int(self.u64[off >> 3])
        return int(self.u32[off >> 2])

    def set(self, field: str, value: int) -> None:
        off = CONTROL_OFFSETS[field]
        if _FIELD_TYPES[field] == "uint64_t":
            self.u64[off >> 3] = value
        else:
            self.u32[off >> 2] = value

    @property
    def closed_by_owner(self) -> bool:
        return self.get("closed") != 0

    # -- roles ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # flock on the segment's fd serialises attachers of one ring across processes.
        fcntl.flock(self._shm.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._shm.fd, fcntl.LOCK_UN)

    def holder(self, role: str) -> tuple[int, int]:
        """(pid, start time) of the process holding ``role``; pid 0 when none."""
        pid_field, start_field, _, _ = ROLE_FIELDS[role]
        while True:
            pid = self.get(pid_field)
            start = self.get(start_field)
            if self.get(pid_field) == pid:
                return pid, start

    def holder_alive(self, role: str) -> bool:
        pid, start = self.holder(role)
        return pid != 0 and process_alive(pid, start)

    def holder_died(self, role: str) -> bool:
        """True when a process did hold ``role`` and has exited without detaching."""
        pid, start = self.holder(role)
        return pid != 0 and not process_alive(pid, start)

    def claim(self, role: str) -> None:
        """Take ``role``; a holder that is dead (gone, zombie, pid reused) is replaced."""
        pid_field, start_field, beat_field, sleeping_field = ROLE_FIELDS[role]
        with self._locked():
            pid, start = self.holder(role)
            if pid != 0 and process_alive(pid, start):
                raise RingError(
                    f"ring {self.names.name!r}: the {role} role is held by live pid {pid}"
                )
            # pid last, so that a reader that sees the new pid also sees its start time.
            self.set(pid_field, 0)
            self.set(start_field, self_start_time())
            self.set(beat_field, time.monotonic_ns())
            self.set(sleeping_field, AWAKE)
            self.set(pid_field, os.getpid())
        self._claimed = role

    def release_claim(self) -> None:
        role = self._claimed
        if role is None:
            return
        self._claimed = None
        pid_field, _, _, sleeping_field = ROLE_FIELDS[role]
        with self._locked():
            if self.get(pid_field) == os.getpid():
                self.set(sleeping_field, AWAKE)
                self.set(pid_field, 0)

    # -- teardown -----------------------------------------------------------------------

    def unlink(self) -> None:
        """Mark the segment closed and remove every name (owner only). Only once: after
        that the names may belong to a new ring."""
        if self.unlinked:
            return
        if self._open:
            self.set("closed", 1)
        _unlink_quietly(self.names)
        self.unlinked = True

    def close_data(self) -> None:
        """Unmap the record area; BufferError (and nothing changed) while payload views
        into it are still alive."""
        if not self.data.closed:
            self.data.close()

    def close(self) -> None:
        """Unmap the control block and close the fd; call after :meth:`close_data`."""
        if not self._open:
            return
        self._open = False
        self.u64.release()
        self.u32.release()
        self._ctrl_view.release()
        self.ctrl.close()
        self._shm.close_fd()


def _create_shm(names: RingNames, capacity: int) -> posix_ipc.SharedMemory:
    for attempt in range(2):
        try:
            return posix_ipc.SharedMemory(
                names.shm, posix_ipc.O_CREX, mode=0o600, size=DATA_OFFSET + capacity
            )
        except posix_ipc.ExistentialError:
            reason = stale_reason(names.shm_path)
            if attempt == 0 and reason is not None:
                _retire(names)
                continue
            owner = _creator_pid(names.shm_path)
            raise RingError(
                f"ring {names.name!r} already exists ({names.shm_path}), owned by live pid {owner}"
            ) from None
    raise AssertionError("unreachable")


def _create_semaphore(name: str) -> None:
    try:
        sem = posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=0o600, initial_value=0)
    except posix_ipc.ExistentialError:
        # Our segment is brand new (created exclusively), so a semaphore of that name is
        # an orphan of a crashed instance.
        posix_ipc.unlink_semaphore(name)
        sem = posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=0o600, initial_value=0)
    sem.close()


def _unlink_quietly(names: RingNames) -> None:
    with contextlib.suppress(posix_ipc.ExistentialError):
        posix_ipc.unlink_shared_memory(names.shm)
    for sem_name in (names.data_sem, names.space_sem):
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_semaphore(sem_name)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(names.doorbell)


def _retire(names: RingNames) -> None:
    """Remove an abandoned ring. Workers may still be attached to it (only its owner
    died): mark it closed and wake both sides first, so that they get RingClosed instead
    of waiting on a segment nobody can find any more."""
    try:
        fd = os.open(names.shm_path, os.O_RDWR)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            header = os.pread(fd, _HEADER_BYTES, 0)
            if len(header) == _HEADER_BYTES and _read_field(header, "magic") == RING_MAGIC:
                os.pwrite(fd, struct.pack("=I", 1), CONTROL_OFFSETS["closed"])
                for sem_name in (names.data_sem, names.space_sem):
                    with contextlib.suppress(posix_ipc.Error):
                        sem = posix_ipc.Semaphore(sem_name)
                        sem.release()
                        sem.close()
                DoorbellWriter(names.doorbell).ring()
        finally:
            os.close(fd)
    _unlink_quietly(names)


def _read_header(path: str) -> tuple[bytes, os.stat_result]:
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        return f.read(_HEADER_BYTES), st


def _creator_pid(path: str) -> int:
    try:
        header, _ = _read_header(path)
    except OSError:
        return 0
    return _read_field(header, "creator_pid") if len(header) >= _HEADER_BYTES else 0


def stale_reason(path: str) -> str | None:
    """Why the segment at ``path`` is abandoned, or None when it is (or may be) in use."""
    try:
        header, st = _read_header(path)
    except FileNotFoundError:
        return None
    except PermissionError:
        return None  # another user's segment: not ours to judge
    if not stat.S_ISREG(st.st_mode):
        return None
    try:
        check_header(header, st.st_size, path)
    except RingLayoutError as exc:
        if time.time() - st.st_mtime >= STALE_UNINITIALISED_AGE_S:
            return f"unreadable header: {exc}"
        return None
    pid = _read_field(header, "creator_pid")
    start = _read_field(header, "creator_start")
    if not process_alive(pid, start):
        return f"creator pid {pid} is gone"
    return None


def cleanup_stale(prefix: str = "vg-") -> list[str]:
    """Unlink segments and semaphores under ``prefix`` whose creator process is gone.

    Also removes segments whose header never became valid (after
    ``STALE_UNINITIALISED_AGE_S``), and semaphores and doorbells whose segment no longer
    exists. Returns the names of the rings whose objects were removed.
    """
    if "/" in prefix or not prefix:
        raise ValueError(f"invalid prefix {prefix!r}")
    removed: set[str] = set()
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.startswith(prefix) and "." not in entry:
            try:
                names = ring_names(entry)
            except ValueError:
                continue
            if stale_reason(names.shm_path) is not None:
                _retire(names)
                removed.add(names.name)
    for entry in os.listdir(SHM_DIR):
        base = _orphan_base(entry, prefix)
        if base is None or os.path.exists(f"{SHM_DIR}/{base}"):
            continue
        try:
            names = ring_names(base)
        except ValueError:
            continue
        _unlink_quietly(names)
        removed.add(names.name)
    return sorted(removed)


def _orphan_base(entry: str, prefix: str) -> str | None:
    """Ring name a semaphore or doorbell entry of /dev/shm belongs to, if it is one."""
    if entry.startswith("sem." + prefix) and entry[-2:] in ("-d", "-s"):
        return entry[4:-2]
    if entry.startswith(prefix) and entry.endswith(".bell"):
        return entry[: -len(".bell")]
    return None
