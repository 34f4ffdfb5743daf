"""sd_notify: the datagrams arrive, as systemd would read them, on a socket of the test's."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicegate.workers.runtime.sdnotify import Notifier


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = str(tmp_path / "notify")
    sock.bind(name)
    sock.settimeout(10)
    yield sock, name
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"voicegate-test-notify-{os.getpid()}"
    sock.bind(b"\0" + name.encode())
    sock.settimeout(10)
    yield sock, "@" + name
    sock.close()


def test_messages_reach_a_path_socket(path_socket: tuple[socket.socket, str]) -> None:
    sock, name = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": name})
    assert notifier.enabled
    assert notifier.ready(status="0 sessions")
    assert sock.recv(4096) == b"READY=1\nSTATUS=0 sessions"
    assert not notifier.status("0 sessions")  # already said
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.status("12 sessions\nsecond line")
    assert sock.recv(4096) == b"STATUS=12 sessions second line"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.close()


def test_messages_reach_an_abstract_socket(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, name = abstract_socket
    notifier = Notifier({"NOTIFY_SOCKET": name})
    assert notifier.ready()
    assert sock.recv(4096) == b"READY=1"
    assert notifier.status("draining")
    assert sock.recv(4096) == b"STATUS=draining"
    notifier.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert notifier.watchdog_interval() is None


def test_bad_socket_names_and_lines_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        Notifier({"NOTIFY_SOCKET": "relative/name"})
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent")})
    with pytest.raises(ValueError, match="KEY=value"):
        notifier.notify("READY")
    with pytest.raises(OSError, match="absent"):
        notifier.ready()
    notifier.close()


def test_watchdog_interval_follows_watchdog_usec_and_pid() -> None:
    base = {"NOTIFY_SOCKET": "@x"}
    assert Notifier({**base, "WATCHDOG_USEC": "30000000"}).watchdog_interval() == 30.0
    mine = {**base, "WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval() == 2.5
    other = {**base, "WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(other).watchdog_interval() is None
    with pytest.raises(ValueError, match="WATCHDOG_USEC"):
        Notifier({**base, "WATCHDOG_USEC": "soon"}).watchdog_interval()
    with pytest.raises(ValueError, match="WATCHDOG_USEC"):
        Notifier({**base, "WATCHDOG_USEC": "0"}).watchdog_interval()


def test_watchdog_pings_at_half_the_interval(path_socket: tuple[socket.socket, str]) -> None:
    sock, name = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "4000000"})
    sent = [t for t in (100.0, 101.0, 101.9, 102.0, 103.5, 104.0) if notifier.watchdog_if_due(t)]
    assert sent == [100.0, 102.0, 104.0]
    assert [sock.recv(4096) for _ in sent] == [b"WATCHDOG=1"] * 3
    assert not Notifier({"NOTIFY_SOCKET": name}).watchdog_if_due(100.0)
    notifier.close()


def test_repeated_status_is_sent_once(path_socket: tuple[socket.socket, str]) -> None:
    sock, name = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": name})
    assert [notifier.status(t) for t in ("3 sessions", "3 sessions", "4 sessions")] == [
        True,
        False,
        True,
    ]
    assert sock.recv(4096) == b"STATUS=3 sessions"
    assert sock.recv(4096) == b"STATUS=4 sessions"
    notifier.close()
