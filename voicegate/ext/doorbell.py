"""The doorbell: a FIFO next to the ring segment that lets an asyncio consumer wait on a
file descriptor its event loop already watches, instead of on a semaphore (which would
need a thread per ring).

The consumer opens the FIFO read-write: it then never sees end-of-file or a hang-up when
a producer goes away, so the event loop is not woken in a loop by a dead peer. The
producer opens it write-only and non-blocking on first use; that open fails (ENXIO) when
no consumer holds the FIFO, and a write fails (EPIPE) once the consumer that held it has
gone, after which the next ring reopens it for a restarted consumer.
"""

from __future__ import annotations

import errno
import os

_BELL = b"\x01"


class DoorbellReader:
    """The consumer's end: a non-blocking fd that becomes readable when rung."""

    def __init__(self, path: str) -> None:
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                exc.errno, f"doorbell FIFO {path} does not exist (ring removed?)"
            ) from exc

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> int:
        """Consume pending rings; returns how many bytes were pending."""
        total = 0
        while True:
            try:
                chunk = os.read(self._fd, 4096)
            except BlockingIOError:
                return total
            total += len(chunk)
            if len(chunk) < 4096:
                return total

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class DoorbellWriter:
    """The producer's end, opened lazily: most rings never have an asyncio consumer."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd = -1

    def ring(self) -> bool:
        """Ring once; False when no consumer holds the doorbell open."""
        for _ in range(2):
            if self._fd < 0:
                try:
                    self._fd = os.open(self._path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                except OSError as exc:
                    if exc.errno in (errno.ENXIO, errno.ENOENT):
                        return False
                    raise
            try:
                os.write(self._fd, _BELL)
                return True
            except BlockingIOError:
                return True  # the FIFO is full of unread rings: the consumer will wake
            except BrokenPipeError:
                # The consumer that held the FIFO is gone; a restarted one may hold it now.
                self.close()
        return False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
