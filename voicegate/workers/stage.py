"""What a pipeline stage implements: a small class that the worker runtime drives.

The runtime (``voicegate.workers.worker``) reads the input rings in batches across all
sessions, keeps the session table, drops stale records and forwards session lifecycle
control. A stage only sees, in ring order:

- ``open_session`` / ``close_session`` when a session starts or ends at this stage;
- ``new_turn`` when a session's current turn changes (a new turn, a cancel, a barge-in);
- ``on_records`` with data records (and COMMIT) of known sessions' current turns, as a
  batch that may mix many sessions;
- ``tick`` every ``tick_interval_s`` for time-driven work (partial transcripts, decode
  steps), whether or not records arrived.

A stage sees records (``voicegate.ext.Record``) as the ring holds them: the payload is a
view into the input ring, valid only during the call. Everything a stage produces goes
through ``out.emit(record)``; the runtime routes and writes it after the call returns. A
record the stage does not consume is forwarded as it is (``out.emit(m)``) or changed
(``out.emit(m.replace(turn=t))``); new ones are built by keyword
(``Record(kind=Kind.LLM_TOKEN, session=m.session, turn=m.turn, payload=text)``).

One session's failure is that session's alone: an exception from ``open_session``,
``new_turn`` or ``on_records`` fails the turn of the session whose record (or hook) the
stage was handling, with an ERROR record to its gateway (``TurnErrorCode.INTERNAL``), and the
worker goes on serving every other session; what the stage emitted before it raised
stays. The runtime then calls ``new_turn`` with the same turn, for the stage to drop the
turn's work, and drops the turn's later records. A stage that batches several sessions
into one call (or fails in ``tick``) names the session with ``SessionFailed``; any other
exception from ``tick`` cannot be pinned on a session and ends the worker process: the
supervisor replaces it and the sessions with a turn in flight get an error event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeAlias, TypeVar

from typing_extensions import Buffer

from voicegate.core.config import NodeConfig
from voicegate.ext import Record

__all__ = ["Batch", "Output", "Record", "SessionFailed", "Stage", "StageContext"]

# What ``on_records`` is handed: records as read, their payloads views into the ring.
Batch: TypeAlias = Sequence[Record[memoryview]]

S = TypeVar("S")


class SessionFailed(Exception):  # noqa: N818 - an outcome a stage reports, like StopIteration
    """Raised by a stage: ``session``'s current turn failed (the runtime fails that turn
    and goes on). ``reason`` is for operators: never audio or text of the conversation."""

    def __init__(self, session: int, reason: str) -> None:
        super().__init__(reason)
        self.session = session
        self.reason = reason


class Output(Protocol):
    """Where a stage puts what it produces."""

    def emit(self, record: Record[Buffer]) -> None:
        """Queue one record downstream. A record of the batch (forwarded as is or changed
        with ``replace``) is written from the input ring before its batch is released;
        ``bytes`` are kept as they are; any other payload is copied at once."""

    def emit_event(self, record: Record[Buffer]) -> None:
        """Queue one record straight to the session's gateway, past the later stages
        (the first stage only: turn events whose latency the caller hears)."""


def _unrecorded(size: int) -> None:
    """Batch sizes of a stage that runs outside a worker process (tests, benches)."""


@dataclass(frozen=True)
class StageContext:
    """What a stage knows about the process it runs in."""

    name: str  # "vad", "stt", ...
    config: NodeConfig
    options: Mapping[str, Any]  # [workers.<name>.options]
    cpus: tuple[int, ...]  # the CPU set this worker is pinned to: size thread pools by it
    generation: int  # 1 for the first process of this worker, +1 per replacement
    # Where ``record_batch`` goes: the worker's status block (Histogram.BATCH).
    batch_sink: Callable[[int], None] = field(default=_unrecorded, compare=False)

    def record_batch(self, size: int) -> None:
        """Count one model call over ``size`` items (sessions, chunks, clauses): the
        node exports these as ``voicegate_model_batch_size``."""
        self.batch_sink(size)


class Stage(ABC, Generic[S]):
    """Base class of a pipeline stage; ``S`` is its per-session state."""

    # Seconds between ``tick`` calls; None: the stage has no time-driven work.
    tick_interval_s: ClassVar[float | None] = None

    def __init__(self, context: StageContext) -> None:
        self.context = context

    def load(self) -> None:
        """Load models and warm them up. The worker reports ready when this returns and
        the supervisor logs how long it took."""

    @abstractmethod
    def open_session(self, session: int, turn: int, params: memoryview) -> S:
        """A session starts at this stage; ``params`` is the SESSION_OPEN payload."""

    def close_session(self, session: int, state: S, out: Output) -> None:
        """A session ends here; emit anything still owed for it now."""

    def new_turn(self, session: int, turn: int, state: S) -> None:
        """``turn`` is now the session's current turn: drop work for older turns."""

    @abstractmethod
    def on_records(self, batch: Batch, states: Mapping[int, S], out: Output) -> None:
        """Handle a batch of current-turn records of known sessions, in ring order.
        ``states[m.session]`` is the state of each record's session."""

    def tick(self, now_ns: int, states: Mapping[int, S], out: Output) -> None:
        """Time-driven work, called every ``tick_interval_s``."""

    def unload(self) -> None:
        """Release resources before the process exits."""
