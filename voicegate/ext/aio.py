"""asyncio consumers of a ring, without a thread per ring.

Design choice: a doorbell file descriptor, not a waiter thread. Each ring has a FIFO next
to its segment (see ``doorbell.py``). An asyncio consumer registers the FIFO's fd with
its event loop once (``loop.add_reader``); to wait, it *arms* the doorbell: it sets the
consumer's sleeping flag to "parked on doorbell" and re-checks for records behind the
same full fence a semaphore park uses. A producer that finds the flag set takes it with
an atomic exchange and, seeing the doorbell value, writes one byte to the FIFO instead of
posting the semaphore. The event loop wakes on that byte like on any socket.

Why not one waiter thread per process: a thread blocked in ``sem_wait`` serves one ring
at a time, and the GIL hand-off on every wake-up would compete with the event loop; a
doorbell costs the producer one ``write`` (what a semaphore post with a sleeper costs in
a futex wake anyway), adds nothing when the consumer is busy (the flag is only set while
the loop has nothing to read), and any number of rings share one loop.

The wait is sliced like a semaphore park: every ``park_slice_s`` the reader refreshes its
heartbeat, checks that the producer lives (``PeerDied``) and that the owner has not
closed the ring (``RingClosed``), and honours its own timeout.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Protocol

from voicegate.ext.errors import STATUS_PEER_DIED, raise_for_status
from voicegate.ext.protocol import DEFAULT_PARK_SLICE_S


class DoorbellConsumer(Protocol):
    """The part of the ring API (Cython ``Ring`` and ``ReferenceRing``) used here."""

    @property
    def name(self) -> str: ...
    @property
    def peer_pid(self) -> int: ...
    def peer_alive(self) -> bool: ...
    def beat(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def read_batch(self, max_records: int = 256, timeout: float | None = 0.0) -> list[Any]: ...
    def doorbell_fileno(self) -> int: ...
    def arm_doorbell(self) -> bool: ...
    def disarm_doorbell(self) -> None: ...


class AsyncRingReader:
    """Awaitable reads from a ring held in the consumer role, on the running event loop.

    Records and payload views have the ring's usual lifetime: valid until the next read,
    wait or release on that ring.
    """

    def __init__(self, ring: DoorbellConsumer, *, park_slice_s: float = DEFAULT_PARK_SLICE_S):
        if not park_slice_s > 0:
            raise ValueError(f"park_slice_s must be > 0, got {park_slice_s}")
        self._ring = ring
        self._slice = park_slice_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._waiter: asyncio.Future[bool] | None = None

    @property
    def ring(self) -> DoorbellConsumer:
        return self._ring

    def _register(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._fd = self._ring.doorbell_fileno()
            loop.add_reader(self._fd, self._on_bell)
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(f"ring {self._ring.name!r}: reader is bound to another loop")
        return loop

    def _on_bell(self) -> None:
        # Level-triggered: the FIFO must be emptied or the loop calls back again at once.
        while True:
            try:
                if len(os.read(self._fd, 4096)) < 4096:
                    break
            except BlockingIOError:
                break
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    async def wait(self, timeout: float | None = None) -> bool:
        """Release what was read, then wait until a record is available (False at the
        timeout). Raises PeerDied when the producer died, RingClosed when the owner closed
        the ring and it is empty."""
        loop = self._register()
        ring = self._ring
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if ring.wait(0):
                return True
            now = loop.time()
            if deadline is not None and now >= deadline:
                return False
            rung = False
            if ring.arm_doorbell():
                waiter: asyncio.Future[bool] = loop.create_future()
                self._waiter = waiter
                delay = self._slice if deadline is None else min(self._slice, deadline - now)
                timer = loop.call_later(delay, _resolve, waiter, False)
                try:
                    rung = await waiter
                finally:
                    timer.cancel()
                    self._waiter = None
                    ring.disarm_doorbell()
            if not rung:
                # A slice passed without a ring: the producer may be gone (this reads /proc,
                # so it is not done on every wake-up).
                ring.beat()
                if ring.peer_pid != 0 and not ring.peer_alive() and not ring.wait(0):
                    raise_for_status(STATUS_PEER_DIED, ring.name, "producer gone while waiting")

    async def read_batch(self, max_records: int = 256, timeout: float | None = None) -> list[Any]:
        """Up to ``max_records`` records, waiting up to ``timeout`` for the first one."""
        if not await self.wait(timeout):
            return []
        return self._ring.read_batch(max_records, 0.0)

    async def read(self, timeout: float | None = None) -> Any | None:
        """The next record, or None at the timeout."""
        records = await self.read_batch(1, timeout)
        return records[0] if records else None

    def close(self) -> None:
        """Stop watching the doorbell (the ring itself stays open)."""
        if self._loop is not None:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            self._loop = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.cancel()

    async def __aenter__(self) -> AsyncRingReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _resolve(waiter: asyncio.Future[bool], rung: bool) -> None:
    if not waiter.done():
        waiter.set_result(rung)
