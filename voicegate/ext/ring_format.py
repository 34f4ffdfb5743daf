"""The ring format's constants shared by the Cython ring and the reference ring: roles, the
values of the sleeping flags, default timings, segment names and record field checks."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final, Literal

from voicegate.core.layout import MAX_CAPACITY, MAX_KIND, MIN_CAPACITY

Role = Literal["producer", "consumer", "owner", "observer"]
ROLES: Final[tuple[str, ...]] = ("producer", "consumer", "owner", "observer")

# Values of producer_sleeping / consumer_sleeping: what a parked side waits on, so the
# other side knows how to wake it.
AWAKE: Final[int] = 0
PARKED_ON_SEMAPHORE: Final[int] = 1
PARKED_ON_DOORBELL: Final[int] = 2  # an asyncio consumer watching the doorbell FIFO

DEFAULT_SPIN_US: Final[float] = 50.0
# A parked side wakes at least this often to refresh its heartbeat, check that its peer
# lives and honour its own timeout.
DEFAULT_PARK_SLICE_S: Final[float] = 0.1

SHM_DIR: Final[str] = "/dev/shm"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,199}")

U16_MAX: Final[int] = 0xFFFF
U32_MAX: Final[int] = 0xFFFF_FFFF
I64_MIN: Final[int] = -(1 << 63)
I64_MAX: Final[int] = (1 << 63) - 1


@dataclass(frozen=True)
class RingNames:
    """Names of every kernel object of one ring, all derived from the ring's name."""

    name: str  # as given, without a leading slash
    shm: str  # POSIX shared memory name: /dev/shm/<name>
    data_sem: str  # the consumer parks here: /dev/shm/sem.<name>-d
    space_sem: str  # the producer parks here: /dev/shm/sem.<name>-s
    doorbell: str  # FIFO path an asyncio consumer watches

    @property
    def shm_path(self) -> str:
        return f"{SHM_DIR}/{self.name}"

    def sem_paths(self) -> tuple[str, str]:
        return (f"{SHM_DIR}/sem.{self.name}-d", f"{SHM_DIR}/sem.{self.name}-s")


def ring_names(name: str) -> RingNames:
    """Validate a ring name (letters, digits, '_' and '-'; an optional leading '/')."""
    if not isinstance(name, str):
        raise TypeError(f"ring name must be a str, not {type(name).__name__}")
    bare = name[1:] if name.startswith("/") else name
    if not _NAME_RE.fullmatch(bare):
        raise ValueError(
            f"invalid ring name {name!r}: use 1-200 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return RingNames(
        name=bare,
        shm=f"/{bare}",
        data_sem=f"/{bare}-d",
        space_sem=f"/{bare}-s",
        doorbell=f"{SHM_DIR}/{bare}.bell",
    )


def check_capacity(capacity: int) -> int:
    if not isinstance(capacity, int) or isinstance(capacity, bool):
        raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
    if capacity < MIN_CAPACITY or capacity > MAX_CAPACITY or capacity & (capacity - 1):
        raise ValueError(
            f"capacity {capacity} must be a power of two in [{MIN_CAPACITY}, {MAX_CAPACITY}]"
        )
    return capacity


def check_role(role: str, allowed: tuple[str, ...]) -> Role:
    if role not in allowed:
        raise ValueError(f"role must be one of {', '.join(allowed)}; got {role!r}")
    return role  # type: ignore[return-value]


def check_timing(spin_us: float, park_slice_s: float) -> None:
    if not (math.isfinite(spin_us) and spin_us >= 0):
        raise ValueError(f"spin_us must be a finite number >= 0, got {spin_us}")
    if not (math.isfinite(park_slice_s) and park_slice_s > 0):
        raise ValueError(f"park_slice_s must be a finite number > 0, got {park_slice_s}")


def record_field_error(
    *, kind: int, flags: int, session: int, turn: int, seq: int, origin_ns: int
) -> ValueError | None:
    """The error for the first record header field out of range, or None."""
    for field, value, low, high in (
        ("kind", kind, 0, MAX_KIND),
        ("flags", flags, 0, U16_MAX),
        ("session", session, 0, U32_MAX),
        ("turn", turn, 0, U32_MAX),
        ("seq", seq, 0, U32_MAX),
        ("origin_ns", origin_ns, I64_MIN, I64_MAX),
    ):
        if not low <= value <= high:
            return ValueError(f"record field {field}={value} out of range [{low}, {high}]")
    return None


def payload_too_large(length: int, max_payload: int, ring: str) -> ValueError:
    return ValueError(
        f"ring {ring!r}: payload of {length} bytes exceeds max_payload {max_payload} "
        "(half the capacity minus the record header); it could never fit"
    )
