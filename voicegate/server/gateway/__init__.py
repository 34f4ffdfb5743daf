"""The gateway: the node-facing side of every client connection, whatever its wire
protocol (``voicegate.server.protocols``). One ``Connection`` per client drives its
protocol's state machine, writes records to the pipeline and paces answer audio
back; one ``Gateway`` per process holds the app, admission, the egress task and the
counters.

Modules:
    arrivals      When each recent input frame of a session arrived, in two fixed int64 arrays: the
                  gateway dates VAD's decisions by it
    connection    One client connection, whatever its wire protocol
    event_loop    The event loop a process of ours runs on: uvloop when it is installed (uvicorn's
                  ``[standard]`` extra brings it), else asyncio's own
    limits        What one caller may take of a gateway (``[limits]`` of the node configuration):
                  fair input per session, connections per address
    node          A gateway process's server: the Starlette app and the one egress task
    process       The body of one gateway process
    send_queue    What waits to go to one client: answer audio, turn events and the connection's
                  own frames, in order, bounded in audio while the client is stalled
    slow_clients  How much answer audio a client has not taken yet, from its TCP socket
    supervision   The node's gateway processes, supervised like its workers
    turns         One session's turn state at the gateway: which pipeline records become which turn
                  events for the client, and when
"""

from voicegate.core.config import GatewayOptions
from voicegate.server.gateway.node import Gateway

__all__ = ["Gateway", "GatewayOptions"]
