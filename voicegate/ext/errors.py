"""Ring exceptions, and the one place where a ring failure's status becomes an exception.

The failures both ring implementations detect while reading, writing or waiting (the
owner closed the ring, the peer died, a record is corrupt, a system call failed) are
named by a ``STATUS_*`` code and raised through :func:`raise_for_status`, so the Cython
ring and the reference ring raise the same exception with the same message. The GIL-free
C helpers of the Cython ring report their outcome to their caller, which raises through
this function once it holds the GIL again. Misuse of the API (a bad argument, the wrong
role, a closed handle) is raised where it is checked, as any Python API does.
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


STATUS_CLOSED: Final[int] = -1
STATUS_PEER_DIED: Final[int] = -2
STATUS_OS_ERROR: Final[int] = -3
STATUS_CORRUPT: Final[int] = -4


def raise_for_status(status: int, ring: str, detail: str = "", errno: int = 0) -> NoReturn:
    """Raise the exception for the failure ``status``."""
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
