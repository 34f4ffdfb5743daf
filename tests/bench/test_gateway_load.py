"""The load generator of ``bench gateway``: its frames and its incremental parser; the
ramp of load steps and the worktree of ``--against``."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench._gateway_load import FRAME_BYTES, Tally, WsSession
from bench._wsraw import MASK, client_frame
from bench.gateway import ROOT, Step, ramp, revision_tree, sessions_held


def _unmask(frame: bytes) -> tuple[int, bytes]:
    b0, b1 = frame[0], frame[1]
    assert b1 & 0x80, "client frames must be masked"
    n, pos = b1 & 0x7F, 2
    if n == 126:
        (n,), pos = struct.unpack_from("!H", frame, 2), 4
    key, body = frame[pos : pos + 4], frame[pos + 4 :]
    assert len(body) == n
    return b0, bytes(b ^ key[i % 4] for i, b in enumerate(body))


def _server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([n]) if n < 126 else bytes([126]) + struct.pack("!H", n)
    return head + payload


def test_client_frames_are_masked_and_unmask_to_the_payload() -> None:
    for payload in (b"", b"x", b'{"type": "session.start"}', bytes(range(256)) * 3):
        b0, body = _unmask(client_frame(0x1, payload))
        assert b0 == 0x81 and body == payload


def test_stamped_frame_unmasks_to_the_stamp_and_zeros() -> None:
    async def main() -> None:
        session = WsSession("h:1", "/", False, Tally())
        sent: list[bytes] = []
        session.transport = type(
            "T", (), {"write": lambda self, d: sent.append(d), "is_closing": lambda self: False}
        )()
        before = time.monotonic_ns()
        session.send_stamped(True)
        b0, body = _unmask(sent[0])
        assert b0 == 0x82 and len(body) == FRAME_BYTES
        sent_ns, measured = struct.unpack_from("<qB", body)
        assert before <= sent_ns <= time.monotonic_ns() and measured == 1
        assert body[9:] == bytes(FRAME_BYTES - 9)
        assert sent[0][4:8] == MASK

    asyncio.run(main())


def test_parser_takes_frames_split_and_joined_anywhere() -> None:
    async def main() -> None:
        tally = Tally()
        session = WsSession("h:1", "/", False, tally)
        session._upgraded = True
        stamp = struct.pack("<qBxxx", time.monotonic_ns(), 1)
        audio = stamp + bytes(FRAME_BYTES - len(stamp))
        stream = (
            _server_frame(0x1, b'{"type": "transcript.final"}')
            + _server_frame(0x2, audio)
            + _server_frame(0x2, audio[:100], fin=False)  # a fragmented message
            + _server_frame(0x0, audio[100:])
            + _server_frame(0x2, struct.pack("<qBxxx", 5, 0))  # sent before the window
        )
        for i in range(0, len(stream), 7):  # TCP reads cut frames anywhere
            session.data_received(stream[i : i + 7])
        assert tally.back == 2 and len(tally.latencies_ns) == 2
        assert all(0 <= ns < 10**10 for ns in tally.latencies_ns)
        assert not session._buf

    asyncio.run(main())


# -- bench gateway's ramp and its old-against-new worktree


def _fake(capacity: int, calls: list[tuple[str, int]], label: str) -> Callable[[int], Step]:
    """A server that holds up to ``capacity`` sessions (p99 1 ms), then misses the budget."""

    def measure(count: int) -> Step:
        calls.append((label, count))
        return Step(count, frames_sent=100, frames_back=100, p99_ms=1.0 if count <= capacity
                    else 9.0)  # fmt: skip

    return measure


def test_ramp_measures_both_servers_on_the_same_steps_in_alternating_turns() -> None:
    calls: list[tuple[str, int]] = []
    measures = {"old": _fake(250, calls, "old"), "new": _fake(420, calls, "new")}
    results = ramp(measures, start=100, coarse=100, fine=25, max_sessions=1000, budget_ms=5.0)
    assert sessions_held(results["old"], 5.0) == 250
    assert sessions_held(results["new"], 5.0) == 400
    coarse_old = [c for label, c in calls if label == "old"][:3]
    assert coarse_old == [100, 200, 300]
    # Steps 100, 200, 300: each step on both, the order turning round every step; old's
    # failed step (300) is measured twice, then only new goes on.
    assert calls[:8] == [
        ("old", 100), ("new", 100), ("new", 200), ("old", 200),
        ("old", 300), ("old", 300), ("new", 300), ("new", 400),
    ]  # fmt: skip
    assert ("old", 400) not in calls
    # Fine steps of each from its own last step held up to its own first failure.
    assert [s.sessions for s in results["old"]] == [100, 200, 225, 250, 275, 300]
    assert [s.sessions for s in results["new"]] == [100, 200, 300, 400, 425, 500]


def test_ramp_of_one_server_is_the_plain_ramp() -> None:
    calls: list[tuple[str, int]] = []
    results = ramp({"x": _fake(130, calls, "x")}, start=100, coarse=100, fine=25,
                   max_sessions=1000, budget_ms=5.0)  # fmt: skip
    assert [c for _, c in calls] == [100, 200, 200, 125, 150, 150]
    assert sessions_held(results["x"], 5.0) == 125


def test_revision_tree_checks_out_the_revision_and_removes_it(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with revision_tree("HEAD", tmp_path, build=False) as tree:
        assert (tree / "bench" / "gateway.py").is_file()
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "list", "--porcelain"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert f"worktree {tree}" in listed
        assert subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True,
            check=True,
        ).stdout.strip() == head  # fmt: skip
    assert not tree.exists()
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list", "--porcelain"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"worktree {tree}" not in listed
    with pytest.raises(RuntimeError, match="no-such-revision"), revision_tree(
        "no-such-revision", tmp_path, build=False
    ):
        pass
