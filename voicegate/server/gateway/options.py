"""The gateway's tunables (``voicegate serve`` flags)."""

from __future__ import annotations

from dataclasses import dataclass

from voicegate.server.protocols.native_wire import DEFAULT_LIMITS, ProtocolLimits


@dataclass(frozen=True)
class GatewayOptions:
    max_sessions: int = 256  # node-wide
    send_queue_frames: int = 100  # answer audio records queued per client (~2 s at 20 ms)
    stall_ms: float = 200.0  # a send blocked this long means the client is not reading
    lead_ms: float = 300.0  # answer audio is sent at most this far ahead of real time
    send_buffer_bytes: int = 0  # SO_SNDBUF of client sockets; 0: the kernel's autotuning
    # Answer audio the client's TCP stack has not acknowledged, in ms of its format, that
    # makes it a slow client, however large the kernel buffers are (unread_backlog).
    unread_limit_ms: float = 2000.0
    limits: ProtocolLimits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.send_queue_frames < 1:
            raise ValueError(f"send_queue_frames must be >= 1, got {self.send_queue_frames}")
