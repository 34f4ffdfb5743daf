"""Ring exceptions, and the one place where status codes become exceptions.

The Cython ring's C-level helpers return small integer status codes (they run without
the GIL and cannot raise); :func:`raise_for_status` is the only translation from those
codes to Python exceptions, for both ring implementations.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Final, NoReturn


class RingError(Exception):
    """Base class of every ring failure."""


class RingLayoutError(RingError):
    """A segment's header or a record does not match the layout this build expects:
    wrong magic, version, header size or capacity, or a corrupt record."""


class RingClosed(RingError):  # noqa: N818 (the API's name)
    """The ring was closed: this handle by its own ``close()``, or the segment by its owner."""


class PeerDied(RingError):  # noqa: N818 (the API's name)
    """The process holding the other role of the ring has exited (kill -9 included)."""


STATUS_OK: Final[int] = 0
STATUS_TIMEOUT: Final[int] = 1
STATUS_CLOSED: Final[int] = -1
STATUS_PEER_DIED: Final[int] = -2
STATUS_OS_ERROR: Final[int] = -3
STATUS_CORRUPT: Final[int] = -4
STATUS_INTERRUPTED: Final[int] = -5


def raise_for_status(status: int, ring: str, detail: str = "", errno: int = 0) -> None:
    """Raise the exception for ``status``; return quietly for OK and TIMEOUT.

    STATUS_INTERRUPTED (a wait cut short by a signal) raises nothing here: the caller
    runs the Python signal handlers and retries.
    """
    if status in (STATUS_OK, STATUS_TIMEOUT, STATUS_INTERRUPTED):
        return
    suffix = f": {detail}" if detail else ""
    if status == STATUS_CLOSED:
        raise RingClosed(f"ring {ring!r} is closed{suffix}")
    if status == STATUS_PEER_DIED:
        raise PeerDied(f"ring {ring!r}: peer process died{suffix}")
    if status == STATUS_CORRUPT:
        raise RingLayoutError(f"ring {ring!r}: corrupt record{suffix}")
    if status == STATUS_OS_ERROR:
        code = errno or _errno.EIO
        raise RingError(f"ring {ring!r}: {os.strerror(code)} (errno {code}){suffix}") from (
            OSError(code, os.strerror(code))
        )
    _unknown(status, ring)


def _unknown(status: int, ring: str) -> NoReturn:
    raise RingError(f"ring {ring!r}: unknown status code {status}")
