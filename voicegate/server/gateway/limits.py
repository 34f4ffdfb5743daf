"""What one caller may take of a gateway (``[limits]`` of the node configuration): fair
input per session, connections per address, and the time a connection may take to
become a session.

- ``TokenBucket``: a session's audio may run at most ``audio_burst_ms`` ahead of real
  time, and its ``text.input`` messages at ``text_inputs_per_s`` above a burst; going
  over closes the session with ``rate_limited`` (1008). So one caller cannot fill the
  ring to VAD that every session of the gateway shares; and within the burst, a session
  ahead of real time gives way when that ring is half full (``fair_share_refuses``).
- ``AddressLimiter``: open connections per client address, per gateway process; one
  over the limit is refused with ``too_many_connections`` (1013).
- ``handshake_protocol``: uvicorn's HTTP protocol with a deadline on the request that
  opens the WebSocket: a connection that has not sent a complete upgrade request within
  ``handshake_timeout_s`` (slowloris) is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from voicegate.core.clock import NS_PER_S


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` held; starts full."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"rate and burst must be > 0, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()

    def deficit(self) -> float:
        """Tokens spent and not yet refilled: for the audio bucket, how many ms the
        session's audio runs ahead of real time."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        return self.burst - self._tokens

    def take(self, cost: float) -> bool:
        """Spend ``cost`` tokens if there are that many; False (nothing spent) if not."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True


# Ahead of real time by more than this, a session's frames give way when the shared ring
# to VAD is more than half full (``fair_share_refuses``).
FAIR_AHEAD_MS = 200.0


def fair_share_refuses(ahead_ms: float, occupancy: int, capacity: int) -> bool:
    """Whether a frame of a session ``ahead_ms`` ahead of real time is refused while the
    ring every session of the gateway shares holds ``occupancy`` of ``capacity`` bytes:
    the second half of the ring is kept for sessions that stream at real time, so a
    caller pushing faster than that cannot push out another's frames."""
    return ahead_ms > FAIR_AHEAD_MS and 2 * occupancy > capacity


def audio_bucket(burst_ms: float, clock: Callable[[], float] = time.monotonic) -> TokenBucket:
    """Milliseconds of audio: real time (1000 ms per second) plus ``burst_ms`` ahead."""
    return TokenBucket(1000.0, burst_ms, clock)


class AddressLimiter:
    """Open connections per client address."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.open: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        count = self.open.get(address, 0)
        if count >= self.limit:
            return False
        self.open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self.open.get(address, 0) - 1
        if count > 0:
            self.open[address] = count
        else:
            self.open.pop(address, None)


def handshake_protocol(base: type[Any], timeout_s: float, on_timeout: Callable[[], None]) -> type:
    """A subclass of uvicorn's HTTP protocol class ``base`` that closes a connection
    whose first request has not been completely received ``timeout_s`` after the accept
    (its request cycle exists once the headers are in; a WebSocket upgrade hands the
    transport to another protocol, which this deadline then leaves alone)."""
    deadline_ns = int(timeout_s * NS_PER_S)

    class HandshakeDeadline(base):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._handshake_timer = asyncio.get_running_loop().call_later(
                deadline_ns / NS_PER_S, self._handshake_expired
            )

        def connection_lost(self, exc: Exception | None) -> None:
            self._handshake_timer.cancel()
            super().connection_lost(exc)

        def _handshake_expired(self) -> None:
            transport = self.transport
            if self.cycle is None and transport.get_protocol() is self:
                on_timeout()
                transport.close()

    HandshakeDeadline.__name__ = f"HandshakeDeadline{base.__name__}"
    return HandshakeDeadline
