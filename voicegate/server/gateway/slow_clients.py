"""How much answer audio a client has not taken yet, from its TCP socket.

A client that stops reading first fills its own receive buffer, then the server's send
buffer; with kernel autotuning both can hold tens of seconds of paced audio before a
send blocks, so a blocked send alone finds such a client late or never. The bytes in the
socket's send queue that the peer has not acknowledged (``SIOCOUTQ``) grow from the
moment its window closes: that is the signal the gateway uses (``unread_limit_ms``).
"""

from __future__ import annotations

import array
import fcntl
import termios
from typing import Any


def socket_fd_of(websocket: Any) -> int:
    """The file descriptor of the TCP connection under a Starlette WebSocket served by
    uvicorn (its protocol object holds the transport); -1 when it cannot be found."""
    transport = _find_transport(getattr(websocket, "_send", None), 6)
    if transport is None:
        return -1
    sock = transport.get_extra_info("socket")
    try:
        return int(sock.fileno()) if sock is not None else -1
    except (OSError, ValueError):
        return -1


# The ioctl's result buffer, reused: the gateway asks after every answer frame it sends,
# from its one event-loop thread.
_OUTQ = array.array("i", [0])


def unread_backlog(fd: int) -> int:
    """Bytes sent on ``fd`` that the peer has not acknowledged; -1 when unknown."""
    if fd < 0:
        return -1
    try:
        fcntl.ioctl(fd, termios.TIOCOUTQ, _OUTQ, True)
    except OSError:
        return -1
    return _OUTQ[0]


def _find_transport(send: Any, depth: int) -> Any:
    """The transport behind an ASGI ``send``: uvicorn's protocol method, possibly
    wrapped in closures by Starlette's middleware."""
    if send is None or depth <= 0:
        return None
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:
        return transport
    for cell in getattr(send, "__closure__", None) or ():
        try:
            inner = cell.cell_contents
        except ValueError:
            continue
        if callable(inner):
            found = _find_transport(inner, depth - 1)
            if found is not None:
                return found
    return None
