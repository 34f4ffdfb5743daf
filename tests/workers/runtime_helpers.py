"""Shared by the worker-runtime tests (uniquely named: tests/ has no packages).

Also imported by spawned worker processes, which find it on the sys.path the test
process hands down: the test-only stages live here.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import voicegate.ext
from voicegate.core import toml_text
from voicegate.core.clock import monotonic_ns
from voicegate.core.config import PASSTHROUGH_STAGE, STAGES, NodeConfig, load_config
from voicegate.core.kinds import Flag, Kind, session_id
from voicegate.core.payloads import DrainEvent, WorkerRestarted
from voicegate.ext.ring_format import SHM_DIR
from voicegate.workers.gateway_link import GatewayLink, Received
from voicegate.workers.metrics import read_node_status
from voicegate.workers.stage import Batch, Output, Record, Stage, StageContext
from voicegate.workers.status import State, StatusSnapshot

# Every shared-memory object the worker tests create is named under this prefix.
NODE_PREFIX = f"rt{os.getpid()}-"
_counter = itertools.count()

# The worker tests run on the native ring once its source exists (a missing build is
# then a failure, not a skip), on the reference ring until then.
RING_IMPL = (
    "native" if Path(voicegate.ext.__file__).with_name("_ring.pyx").exists() else "reference"
)


def unique_node_name() -> str:
    return f"{NODE_PREFIX}{next(_counter)}"


def shm_leftovers(fragment: str) -> list[str]:
    """/dev/shm entries (segments, semaphores, doorbells) whose name holds ``fragment``."""
    return sorted(entry for entry in os.listdir(SHM_DIR) if fragment in entry)


class CrashAfterReadyStage(Stage[None]):
    """Forwards nothing and exits the process on its first tick after
    ``options.crash_after_s`` seconds: a worker that keeps crashing."""

    tick_interval_s = 0.05

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        self.ticks_left = int(float(context.options.get("crash_after_s", 0.2)) / 0.05)

    def open_session(self, session: int, turn: int, params: memoryview) -> None:
        return None

    def on_records(self, batch: Batch, states: Mapping[int, None], out: Output) -> None:
        pass

    def tick(self, now_ns: int, states: Mapping[int, None], out: Output) -> None:
        self.ticks_left -= 1
        if self.ticks_left <= 0:
            os._exit(7)


class FailingLoadStage(Stage[None]):
    """A stage whose model load fails."""

    def load(self) -> None:
        raise FileNotFoundError("model file /nonexistent/model.onnx not found")

    def open_session(self, session: int, turn: int, params: memoryview) -> None:
        return None

    def on_records(self, batch: Batch, states: Mapping[int, None], out: Output) -> None:
        pass


class EchoCountStage(Stage[list[int]]):
    """Keeps per-session state (the seqs seen this turn) and forwards each record with
    the count so far appended, so tests can see state reset by new turns."""

    def open_session(self, session: int, turn: int, params: memoryview) -> list[int]:
        return []

    def new_turn(self, session: int, turn: int, state: list[int]) -> None:
        state.clear()

    def on_records(
        self, batch: Batch, states: Mapping[int, list[int]], out: Output
    ) -> None:
        for m in batch:
            seen = states[m.session]
            if m.kind != Kind.COMMIT:
                seen.append(m.seq)
            out.emit(m.replace(payload=bytes(m.payload) + b"#%d" % len(seen)))


# -- a node under test ----------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
TAGS = b"|vad|stt|llm|tts"  # what the pass-through pipeline appends


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid``."""
    members: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def wait_until(
    predicate: Callable[[], object], what: str, timeout: float = 60.0, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class NodeProcess:
    """A supervisor started as ``python -m voicegate.workers`` in its own process group,
    as a service manager would. ``kill_group`` ends everything it started."""

    def __init__(self, tmp: Path, sections: Mapping[str, Mapping[str, object]]) -> None:
        self.name = unique_node_name()
        settings: dict[str, dict[str, object]] = {
            "node": {"name": self.name, "gateways": 2, "drain_timeout_s": 5.0},
            "rings": {"impl": RING_IMPL},
            "health": {
                "heartbeat_interval_s": 0.05,
                "heartbeat_timeout_s": 1.0,
                "restart_backoff_s": 0.05,
                "ready_timeout_s": 60.0,
            },
        }
        # The runtime's tests run the model-free stage unless they name another.
        settings["workers"] = {name: {"stage": PASSTHROUGH_STAGE} for name in STAGES}
        for section, values in sections.items():
            if section == "workers":
                for stage, table in values.items():
                    assert isinstance(table, Mapping)
                    settings["workers"].setdefault(stage, {}).update(table)
                continue
            settings.setdefault(section, {}).update(values)
        self.config_path = tmp / f"{self.name}.toml"
        self.config_path.write_text(_toml(settings))
        self.config = load_config(self.config_path, env={})
        self.prefix = self.config.shm_prefix
        self.log_path = tmp / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(Path(__file__).parent)])
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "voicegate.workers", "--config", str(self.config_path)],
                stdout=log,
                stderr=log,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"supervisor exited with {self.proc.returncode}:\n{self.log()}"
                )
            node = read_node_status(self.config).get("node")
            # The pid tells this supervisor's block from one a killed instance left.
            return node is not None and node.pid == self.pid and node.state is State.READY

        wait_until(ready, f"node {self.name} to be ready", timeout)

    def status(self, process: str) -> StatusSnapshot:
        return read_node_status(self.config)[process]

    def worker_pid(self, stage: str) -> int:
        return self.status(stage).pid

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"supervisor did not exit:\n{self.log()}") from None

    def leftovers(self) -> list[str]:
        return shm_leftovers(self.prefix)

    def kill_group(self) -> None:
        """SIGKILL everything in the node's process group and reap the supervisor."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(30)
        wait_until(lambda: not group_members(self.pid), "the process group to be gone", 30)

    def remove_leftovers(self) -> None:
        for entry in self.leftovers():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{SHM_DIR}/{entry}")


def _toml(settings: Mapping[str, Mapping[str, object]]) -> str:
    return toml_text.dumps(settings)


class TurnInterrupted(Exception):  # noqa: N818 - an event, not a bug
    """A WORKER_RESTARTED arrived while a turn was being collected."""


class TestGateway:
    """The test playing gateway ``index``: sessions, turns, and the gateway's duties on
    WORKER_RESTARTED (re-open every session with its next turn) and DRAIN."""

    __test__ = False  # not a test class

    def __init__(self, config: NodeConfig, index: int) -> None:
        self.index = index
        self.link = GatewayLink(config, index)
        self.turns: dict[int, int] = {}
        self.restarts: list[WorkerRestarted] = []
        self.drains: list[DrainEvent] = []

    def close(self) -> None:
        self.link.close()

    def session(self, local: int) -> int:
        return session_id(self.index, local)

    def _send(self, kind: int, sid: int, seq: int, payload: bytes = b"", flags: int = 0) -> None:
        ok = self.link.send_wait(
            Record(
                kind=kind,
                session=sid,
                turn=self.turns[sid],
                seq=seq,
                origin_ns=monotonic_ns(),
                payload=payload,
                flags=flags,
            ),
            timeout=30.0,
        )
        assert ok, f"gateway {self.index}: ring to vad stayed full for 30 s"

    def open(self, sessions: Sequence[int]) -> None:
        for sid in sessions:
            self.turns[sid] = 1
            self._send(Kind.SESSION_OPEN, sid, 0, b"rate=16000")

    def close_sessions(self, sessions: Sequence[int], timeout: float = 60.0) -> None:
        """Close the sessions and wait until the close came back through every stage."""
        for sid in sessions:
            self._send(Kind.SESSION_CLOSE, sid, 0)
            del self.turns[sid]
        pending = set(sessions)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(pending)} SESSION_CLOSE did not come back")
            for record in self.link.receive(timeout=0.05):
                if record.kind == Kind.SESSION_CLOSE:
                    pending.discard(record.session)

    def next_turn(self, sessions: Sequence[int]) -> None:
        for sid in sessions:
            self.turns[sid] += 1

    @staticmethod
    def frame(sid: int, turn: int, seq: int) -> bytes:
        return b"s%d-t%d-f%d" % (sid, turn, seq)

    def send_frames(self, sessions: Sequence[int], seqs: range) -> None:
        for seq in seqs:
            for sid in sessions:
                self._send(Kind.AUDIO_IN, sid, seq, self.frame(sid, self.turns[sid], seq))

    def commit(self, sessions: Sequence[int]) -> None:
        for sid in sessions:
            self._send(Kind.COMMIT, sid, COMMIT_SEQ)

    def poll_control(self, timeout: float = 0.0) -> None:
        for record in self.link.control(timeout=timeout):
            if record.kind == Kind.WORKER_RESTARTED:
                self.restarts.append(WorkerRestarted.unpack(record.payload))
            elif record.kind == Kind.DRAIN:
                self.drains.append(DrainEvent.unpack(record.payload))
            else:
                raise AssertionError(f"unexpected control record {record!r}")

    def wait_restart(self, timeout: float = 60.0) -> WorkerRestarted:
        count = len(self.restarts)
        deadline = time.monotonic() + timeout
        while len(self.restarts) == count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no WORKER_RESTARTED at gateway {self.index} in {timeout} s")
            self.poll_control(0.05)
        return self.restarts[count]

    def reopen_all(self) -> None:
        """What a gateway does on WORKER_RESTARTED: the turn in flight failed; every
        session moves to its next turn and introduces itself again."""
        for sid in self.turns:
            self.turns[sid] += 1
            self._send(Kind.SESSION_OPEN, sid, 0, b"rate=16000", Flag.REOPEN)

    def collect(self, sessions: Sequence[int], timeout: float = 60.0) -> dict[int, list[Received]]:
        """Records of the sessions' current turns until each one's COMMIT comes back."""
        got: dict[int, list[Received]] = {sid: [] for sid in sessions}
        pending = set(sessions)
        restarts = len(self.restarts)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"gateway {self.index}: {len(pending)} sessions got no COMMIT back "
                    f"within {timeout:g} s"
                )
            for record in self.link.receive(timeout=0.05):
                sid = record.session
                if sid not in got or record.turn != self.turns.get(sid):
                    continue  # another session's or an older, abandoned turn
                if record.kind == Kind.SESSION_OPEN:
                    continue  # the echo of an open or re-open
                got[sid].append(record)
                if record.kind == Kind.COMMIT:
                    pending.discard(sid)
            self.poll_control()
            if len(self.restarts) > restarts:
                raise TurnInterrupted(str(self.restarts[-1]))
        return got

    def run_turn(self, sessions: Sequence[int], frames: int) -> None:
        """One complete turn of every session, checked."""
        self.send_turn(sessions, frames)
        self.verify_turn(sessions, frames, self.collect(sessions))

    def send_turn(self, sessions: Sequence[int], frames: int) -> None:
        self.send_frames(sessions, range(1, frames + 1))
        self.commit(sessions)

    def verify_turn(
        self, sessions: Sequence[int], frames: int, got: Mapping[int, list[Received]]
    ) -> None:
        """Every frame of the turn came back, in order, through every stage; then the
        sessions move to their next turn."""
        for sid in sessions:
            turn = self.turns[sid]
            expected = [
                (Kind.AUDIO_IN, seq, self.frame(sid, turn, seq) + TAGS)
                for seq in range(1, frames + 1)
            ] + [(Kind.COMMIT, COMMIT_SEQ, TAGS)]
            assert [(r.kind, r.seq, r.payload) for r in got[sid]] == expected, (
                f"session {sid} turn {turn}"
            )
        self.next_turn(sessions)


COMMIT_SEQ = 1_000_000
