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
from collections.abc import Sequence
from typing import Any, Protocol

from voicegate.ext.errors import STATUS_PEER_DIED, raise_for_status
from voicegate.ext.ring_format import DEFAULT_PARK_SLICE_S


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
        return await wait_any((self,), timeout)

    def _check_peer(self) -> None:
        # A slice passed without a ring: the producer may be gone (this reads /proc, so
        # it is not done on every wake-up).
        ring = self._ring
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


async def wait_any(readers: Sequence[AsyncRingReader], timeout: float | None = None) -> bool:
    """Release what was read on every ring of ``readers``, then wait until any of them
    has a record (False at the timeout). One future and one timer serve all the rings:
    every armed doorbell resolves the same future, so a consumer of several rings pays
    for one wait, not one task per ring. Raises like ``AsyncRingReader.wait``."""
    loop = asyncio.get_running_loop()
    for reader in readers:
        reader._register()
    park_slice = min(reader._slice for reader in readers)
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        for reader in readers:
            if reader._ring.wait(0):
                return True
        now = loop.time()
        if deadline is not None and now >= deadline:
            return False
        waiter: asyncio.Future[bool] = loop.create_future()
        armed: list[AsyncRingReader] = []
        rung = False
        try:
            for reader in readers:
                if not reader._ring.arm_doorbell():
                    break  # a record came (or the ring closed) since the check above
                armed.append(reader)
                reader._waiter = waiter
            else:
                delay = park_slice if deadline is None else min(park_slice, deadline - now)
                timer = loop.call_later(delay, _resolve, waiter, False)
                try:
                    rung = await waiter
                finally:
                    timer.cancel()
        finally:
            for reader in armed:
                reader._waiter = None
                reader._ring.disarm_doorbell()
        if not rung:
            for reader in readers:
                reader._check_peer()


def _resolve(waiter: asyncio.Future[bool], rung: bool) -> None:
    if not waiter.done():
        waiter.set_result(rung)
