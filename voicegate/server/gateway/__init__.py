"""The gateway: the node-facing side of every client connection.

- ``node``: one gateway process's server: the Starlette app that mounts every registered
  wire protocol (``voicegate.server.protocols``) and the ops routes, admission, the
  egress task that reads the pipeline's rings, the ring writes, counters and metrics.
- ``connection``: ``Connection``, one client connection whatever its wire protocol: it
  drives the protocol's state machine, carries out its actions, paces answer audio to
  the client and applies the slow-client policy. The benches' baseline servers use it too.
- ``turns``: ``SessionTurns``, one session's turn state: pipeline records in,
  protocol-neutral turn events out.
- ``send_queue``: the bounded queue of what waits to go to one client.
- ``limits``: per-address connection limits, token buckets, the ring's fair share.
- ``slow_clients``: reading a client socket's unacknowledged backlog.
- ``arrivals``: when each input frame arrived, to date VAD's events.
"""

from voicegate.core.config import GatewayOptions
from voicegate.server.gateway.node import Gateway

__all__ = ["Gateway", "GatewayOptions"]
