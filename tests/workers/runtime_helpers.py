"""Shared by the worker-runtime tests (uniquely named: tests/ has no packages).

Also imported by spawned worker processes, which find it on the sys.path the test
process hands down: the test-only stages live here.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import voicegate.ext
from voicegate.core.kinds import Kind
from voicegate.ext.protocol import SHM_DIR
from voicegate.workers.stage import Message, Output, Stage, StageContext

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

    def on_records(self, batch: Sequence[Message], states: Mapping[int, None], out: Output) -> None:
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

    def on_records(self, batch: Sequence[Message], states: Mapping[int, None], out: Output) -> None:
        pass


class EchoCountStage(Stage[list[int]]):
    """Keeps per-session state (the seqs seen this turn) and forwards each record with
    the count so far appended, so tests can see state reset by new turns."""

    def open_session(self, session: int, turn: int, params: memoryview) -> list[int]:
        return []

    def new_turn(self, session: int, turn: int, state: list[int]) -> None:
        state.clear()

    def on_records(
        self, batch: Sequence[Message], states: Mapping[int, list[int]], out: Output
    ) -> None:
        for m in batch:
            seen = states[m.session]
            if m.kind != Kind.COMMIT:
                seen.append(m.seq)
            out.emit(
                m.kind,
                m.session,
                m.turn,
                m.seq,
                m.origin_ns,
                bytes(m.payload) + b"#%d" % len(seen),
                m.flags,
            )
