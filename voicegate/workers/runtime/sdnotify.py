"""The systemd notification protocol (sd_notify), for a ``Type=notify`` service.

A notification is one datagram of ``KEY=value`` lines sent to the AF_UNIX socket named
by ``$NOTIFY_SOCKET``; a name starting with ``@`` is in the abstract namespace (the
``@`` stands for a leading NUL byte). Without ``$NOTIFY_SOCKET`` (not started by systemd)
every call does nothing, so the supervisor can call the notifier unconditionally.

What the supervisor sends:

- ``READY=1`` once every worker is loaded and the port listens;
- ``WATCHDOG=1`` at half the interval ``watchdog_interval()`` returns, while its
  workers are healthy (stopping the pings is how it asks systemd for a restart);
- ``STATUS=...`` a one-line human summary (the number of sessions);
- ``STOPPING=1`` when a shutdown begins, so systemd reports "deactivating".
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Final

NOTIFY_SOCKET: Final[str] = "NOTIFY_SOCKET"
WATCHDOG_USEC: Final[str] = "WATCHDOG_USEC"
WATCHDOG_PID: Final[str] = "WATCHDOG_PID"


class Notifier:
    """Sends notifications to the service manager; a no-op without ``$NOTIFY_SOCKET``."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._env = dict(env)
        self.address = _socket_address(env.get(NOTIFY_SOCKET, ""))
        self._sock: socket.socket | None = None
        self._last_status: str | None = None
        self._next_ping_s = 0.0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram. False when disabled; an error
        sending raises OSError naming the socket (a wrong socket is a broken unit)."""
        if self.address is None:
            return False
        for line in assignments:
            if "=" not in line or "\n" in line:
                raise ValueError(f"sd_notify: {line!r} is not one KEY=value line")
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            raise OSError(exc.errno, f"sd_notify to {self._env[NOTIFY_SOCKET]!r}: {exc}") from None
        return True

    def ready(self, status: str | None = None) -> bool:
        return self._send_with_status("READY=1", status)

    def status(self, text: str) -> bool:
        """Send STATUS=text unless it is the text sent last (the supervisor may call this
        every loop with the session count)."""
        line = _status_line(text)
        if line == self._last_status:
            return False
        sent = self.notify(line)
        if sent:
            self._last_status = line
        return sent

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def watchdog_if_due(self, now_s: float) -> bool:
        """Ping when half the watchdog interval has passed since the last ping (``now_s``
        on any monotonic clock in seconds); False when not due or no watchdog is set.
        Call it from the loop that proves health: a loop that stalls stops the pings."""
        interval = self.watchdog_interval()
        if interval is None or now_s < self._next_ping_s:
            return False
        self._next_ping_s = now_s + interval / 2
        return self.watchdog()

    def stopping(self, status: str | None = None) -> bool:
        return self._send_with_status("STOPPING=1", status)

    def _send_with_status(self, line: str, status: str | None) -> bool:
        if status is None:
            return self.notify(line)
        status_line = _status_line(status)
        sent = self.notify(line, status_line)
        if sent:
            self._last_status = status_line
        return sent

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds when systemd expects pings from this process
        (``WatchdogSec=`` set, and ``$WATCHDOG_PID`` absent or this pid), else None.
        Ping at half of it, as sd_watchdog_enabled(3) advises."""
        usec_text = self._env.get(WATCHDOG_USEC, "")
        if not usec_text:
            return None
        try:
            usec = int(usec_text)
        except ValueError:
            raise ValueError(f"${WATCHDOG_USEC} = {usec_text!r}: not an integer") from None
        if usec <= 0:
            raise ValueError(f"${WATCHDOG_USEC} = {usec_text!r}: must be > 0")
        pid_text = self._env.get(WATCHDOG_PID, "")
        if pid_text:
            try:
                pid = int(pid_text)
            except ValueError:
                raise ValueError(f"${WATCHDOG_PID} = {pid_text!r}: not an integer") from None
            if pid != os.getpid():
                return None
        return usec / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(name: str) -> str | bytes | None:
    if not name:
        return None
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    if not name.startswith("/"):
        raise ValueError(f"${NOTIFY_SOCKET} = {name!r}: must be an absolute path or start with @")
    return name


def _status_line(text: str) -> str:
    # STATUS is one line; a newline would start a new assignment.
    return "STATUS=" + " ".join(text.splitlines())
