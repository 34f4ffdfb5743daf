"""The worker runtime: drives one Stage between its input and output rings.

Per batch read from an input ring it

1. records how long each record waited in the ring (publish time, in its header);
2. handles session lifecycle control itself (SESSION_OPEN, SESSION_CLOSE, CANCEL,
   BARGE_IN, ERROR): updates the session table, calls the stage's hooks and forwards the
   record downstream, so every later stage learns of it in order;
3. drops data records of unknown sessions and of turns older than the session's current
   turn (a newer turn makes the session's current turn advance first);
4. hands the remaining records to ``Stage.on_records`` in runs that never span a control
   record or a turn change, so the stage's output keeps the input's order, and records
   the call's duration as the compute time of each record in the run;
5. writes what the stage emitted, before the input batch is released (a record the stage
   forwards is copied once, ring to ring), with one publish per output ring, waiting for space
   when an output ring is full (backpressure) while still beating; a ring to a gateway
   never makes it wait: what does not fit there is dropped and counted.

A stage's failure on one session's record or hook fails that session's turn only (an
ERROR record follows the turn, see ``voicegate.workers.stage``); the worker goes on. The
runtime beats after every stage call, so a burst of short turns (each one a stage call)
never holds the heartbeat still however long the batch takes.

Sessions are re-known after a restart through SESSION_OPEN with ``Flag.REOPEN``, which
the gateways send on WORKER_RESTARTED: a replacement starts with an empty table and drops
records of sessions it has not seen opened (counted in DROPPED_UNKNOWN). A stage that
already knows a re-opened session only moves it to the new turn.

Ring wait is measured per record from ``sent_ns``, the publish time the ring writes into
each record's header (docs/ring.md): payloads carry no stamp, so a hop copies a payload
once into the ring, and not at all when a stage emits ``bytes``.
"""

from __future__ import annotations

import logging
import os
import select
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Generic, TypeVar, overload

import numpy as np
from typing_extensions import Buffer

from voicegate.core.clock import NS_PER_S, monotonic_ns
from voicegate.core.kinds import (
    Kind,
    gateway_of,
    kind_name,
    local_of,
)
from voicegate.core.log_limit import LogLimiter
from voicegate.core.payloads import StageId, TurnError, TurnErrorCode
from voicegate.ext import Record
from voicegate.ext.errors import PeerDied, RingClosed
from voicegate.workers.stage import SessionFailed, Stage
from voicegate.workers.status import Field, Histogram, StatusBlock

if TYPE_CHECKING:
    from voicegate.ext._ring import Ring

log = logging.getLogger("voicegate.worker")

S = TypeVar("S")
# A queued record: bytes from the stage, a copy of what it emitted, or a view into the
# input ring's batch being handled (written, or detached, before that batch is released).
_Pending = Record[Buffer]
_Read = Record[memoryview]  # a record as read from an input ring

# Control the runtime handles and forwards itself. COMMIT goes to the stage like data.
_LIFECYCLE = frozenset(
    {Kind.SESSION_OPEN, Kind.SESSION_CLOSE, Kind.CANCEL, Kind.BARGE_IN, Kind.ERROR}
)


class Outbox:
    """Records a stage emitted, per output ring, until the runtime writes them.

    A full ring is waited on (backpressure), except a lossy one: a ring to a gateway,
    where what does not fit is dropped and counted, so that one gateway that stopped
    reading cannot stall the answers of every other gateway's sessions."""

    def __init__(
        self,
        rings: Sequence[Ring],
        route: Callable[[int], int],
        status: StatusBlock,
        lossy: Sequence[bool] | None = None,
        event_rings: Sequence[Ring] = (),
    ) -> None:
        self._rings = list(rings)
        self._route = route
        self._status = status
        self._lossy = list(lossy) if lossy is not None else [False] * len(self._rings)
        if len(self._lossy) != len(self._rings):
            raise ValueError(f"{len(self._lossy)} lossy flags for {len(self._rings)} rings")
        # Event rings go straight to each gateway (index = gateway_of(session)), past the
        # later stages; like every ring to a gateway they drop rather than wait.
        self._event_base = len(self._rings)
        self._event_count = len(event_rings)
        self._rings += event_rings
        self._lossy += [True] * len(event_rings)
        self._pending: list[list[_Pending]] = [[] for _ in self._rings]
        self._max_payload = [ring.max_payload for ring in self._rings]

    def emit(self, record: Record[Buffer]) -> None:
        self._queue(self._route(record.session), record)

    def emit_event(self, record: Record[Buffer]) -> None:
        gateway = gateway_of(record.session)
        if not self._event_count:
            raise RuntimeError("this stage has no event path to the gateways")
        index = self._event_base + gateway if gateway < self._event_count else -1
        self._queue(index, record)

    def _queue(self, index: int, record: Record[Buffer]) -> None:
        if not 0 <= index < len(self._rings):
            self._status.add(Field.DROPPED_UNROUTABLE, 1)
            return
        # One copy per hop: a record borrowed from an input ring (forwarded, or changed
        # with ``replace``) is written from that ring's memory before the batch is
        # released (see ``Worker._read``), and bytes are immutable; anything else (a
        # bytearray, a view the stage may reuse) is copied now.
        payload = record.payload
        if not record.borrowed and type(payload) is not bytes:
            payload = bytes(payload)
            record = record.replace(payload=payload)
        size = memoryview(payload).nbytes
        if size > self._max_payload[index]:
            raise ValueError(
                f"{kind_name(record.kind)} record of {size} bytes does not fit ring "
                f"{self._rings[index].name!r} (at most {self._max_payload[index]} bytes)"
            )
        self._pending[index].append(record)

    def pending(self) -> int:
        return sum(len(p) for p in self._pending)

    def detach_borrowed(self) -> None:
        """Copy the payloads of queued records that are views into an input ring: that
        ring's batch is about to be released."""
        for pending in self._pending:
            for i, record in enumerate(pending):
                if record.borrowed:
                    pending[i] = record.detach()

    def flush(self, beat: Callable[[], None], wait_s: float, give_up: Callable[[], bool]) -> bool:
        """Write everything queued. A full ring is waited on in slices of ``wait_s``,
        beating between them, until there is room or ``give_up()``; then what is left
        stays queued. True when nothing is left."""
        for ring, pending, lossy in zip(self._rings, self._pending, self._lossy, strict=True):
            if not pending:
                continue
            done = 0
            blocked_ns = 0
            while done < len(pending):
                now = monotonic_ns()
                done += ring.write_batch(islice(pending, done, None))
                if done == len(pending):
                    break
                if lossy:
                    self._status.add(Field.DROPPED_OUTPUT, len(pending) - done)
                    del pending[done:]
                    break
                if give_up():
                    break
                try:
                    if ring.write(pending[done], timeout=wait_s):
                        done += 1
                except PeerDied:
                    pass  # the consumer's replacement will attach and drain the ring
                beat()
                blocked_ns += monotonic_ns() - now
            self._status.add(Field.RECORDS_OUT, done)
            if blocked_ns:
                self._status.add(Field.OUTPUT_WAIT_NS, blocked_ns)
            del pending[:done]
        return not self.pending()

    def discard(self) -> int:
        """Drop everything still queued (counted); returns how many records."""
        dropped = self.pending()
        for pending in self._pending:
            pending.clear()
        if dropped:
            self._status.add(Field.DROPPED_OUTPUT, dropped)
        return dropped


class Worker(Generic[S]):
    """Runs ``stage`` over its rings until told to stop."""

    def __init__(
        self,
        stage: Stage[S],
        inputs: Sequence[Ring],
        outputs: Sequence[Ring],
        route: Callable[[int], int],
        status: StatusBlock,
        *,
        lossy_outputs: Sequence[bool] | None = None,
        event_outputs: Sequence[Ring] = (),
        batch_records: int = 256,
        heartbeat_interval_s: float = 0.1,
    ) -> None:
        if not inputs:
            raise ValueError("a worker needs at least one input ring")
        self.stage = stage
        self.inputs = list(inputs)
        self.status = status
        self.outbox = Outbox(outputs, route, status, lossy_outputs, event_outputs)
        self._batch = batch_records
        self._beat_s = heartbeat_interval_s
        self._turns: dict[int, int] = {}
        self._states: dict[int, S] = {}
        self._bells: list[int] | None = None
        tick = stage.tick_interval_s
        self._tick_ns = int(tick * NS_PER_S) if tick else 0
        self._next_tick_ns = monotonic_ns() + self._tick_ns if tick else 0
        self._stopping: Callable[[], bool] = _never
        # Sessions whose current turn failed here: the turn's later records are dropped.
        self._failed: dict[int, int] = {}
        try:
            self._stage_id = StageId.from_name(stage.context.name)
        except ValueError:
            self._stage_id = StageId.GATEWAY  # a stage run outside a node's topology
        self._failure_log = LogLimiter(log)

    @property
    def states(self) -> Mapping[int, S]:
        """Per-session state of the sessions open at this stage."""
        return self._states

    def current_turn(self, session: int) -> int | None:
        return self._turns.get(session)

    # -- the loop -------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool], stop_flush_s: float = 1.0) -> None:
        """Serve until ``should_stop()``; then write what is queued, waiting at most
        ``stop_flush_s`` for room in full output rings."""
        self._stopping = should_stop
        self.status.beat()
        try:
            while not should_stop():
                self.run_once(self._idle_timeout_s())
        except RingClosed:
            return  # the supervisor removed the rings: the node is going down
        deadline = monotonic_ns() + int(stop_flush_s * NS_PER_S)
        if not self.outbox.flush(
            self.status.beat, self._beat_s, lambda: monotonic_ns() >= deadline
        ):
            self.outbox.discard()

    def run_once(self, timeout_s: float) -> int:
        """One pass: read every input ring once (waiting up to ``timeout_s`` when all are
        empty), tick if due, write the output. Returns how many records were read."""
        if len(self.inputs) == 1:
            got = self._read(self.inputs[0], timeout_s)
        else:
            got = sum(self._read(ring, 0.0) for ring in self.inputs)
            if got == 0 and timeout_s > 0:
                self._wait_any(timeout_s)
                got = sum(self._read(ring, 0.0) for ring in self.inputs)
        if self._tick_ns:
            self._tick_if_due()
        self.outbox.flush(self.status.beat, self._beat_s, self._stopping)
        self.status.beat()
        return got

    def _wait_any(self, timeout_s: float) -> None:
        """Park until any input ring has a record: each ring's doorbell is armed (the
        producer then writes a byte to its FIFO instead of posting the semaphore) and one
        ``select`` waits on them all."""
        if self._bells is None:
            self._bells = [ring.doorbell_fileno() for ring in self.inputs]
        armed: list[Ring] = []
        try:
            for ring in self.inputs:
                if not ring.arm_doorbell():
                    return  # a record is there already (or the ring closed): read now
                armed.append(ring)
            select.select(self._bells, [], [], timeout_s)
        finally:
            for ring in armed:
                ring.disarm_doorbell()

    def _idle_timeout_s(self) -> float:
        timeout = self._beat_s
        if self._tick_ns:
            timeout = min(timeout, max(0.0, (self._next_tick_ns - monotonic_ns()) / NS_PER_S))
        return timeout

    def _tick_if_due(self) -> None:
        now = monotonic_ns()
        if now < self._next_tick_ns:
            return
        try:
            self.stage.tick(now, self._states, self.outbox)
        except SessionFailed as exc:
            turn = self._turns.get(exc.session)
            if turn is not None:
                self._fail(exc.session, turn, exc.reason)
        done = monotonic_ns()
        self.status.observe(Histogram.TICK, done - now)
        self.status.add(Field.TICKS, 1)
        # Skip missed ticks rather than run them back to back.
        self._next_tick_ns = max(self._next_tick_ns + self._tick_ns, done)

    def _read(self, ring: Ring, timeout_s: float) -> int:
        try:
            records = ring.read_batch(self._batch, timeout=timeout_s)
        except PeerDied:
            # The producer died with the ring empty (the wait already took its time):
            # its replacement attaches to the same ring, so there is nothing to do.
            return 0
        if not records:
            return 0
        read_ns = monotonic_ns()
        try:
            self._process(records, read_ns)
            # Written while the records the stage forwarded are still in the input ring:
            # their payloads go from ring to ring in one copy.
            self.outbox.flush(self.status.beat, self._beat_s, self._stopping)
        finally:
            # Payload views die here: the stage was told to copy what it keeps.
            self.outbox.detach_borrowed()
            ring.release()
        return len(records)

    # -- one batch ------------------------------------------------------------------

    def _process(self, records: list[_Read], read_ns: int) -> None:
        turns = self._turns
        run: list[_Read] = []
        waits: list[int] = []
        unstamped = stale = unknown = 0
        for record in records:
            sent_ns = record.sent_ns
            if sent_ns:
                waits.append(read_ns - sent_ns)
            else:
                unstamped += 1
            kind, session, turn = record.kind, record.session, record.turn
            if kind in _LIFECYCLE:
                if run:
                    self._run_stage(run)
                    run = []
                self._control(record)
                continue
            current = turns.get(session)
            if current is None:
                unknown += 1
                continue
            if turn != current:
                if turn < current:
                    stale += 1
                    continue
                if run:
                    self._run_stage(run)
                    run = []
                self._advance(session, turn)
            if self._failed.get(session) == turn:
                stale += 1  # the rest of a turn that failed here
                continue
            run.append(record)
        if run:
            self._run_stage(run)
        status = self.status
        status.add(Field.RECORDS_IN, len(records))
        status.add(Field.BATCHES, 1)
        if stale:
            status.add(Field.DROPPED_STALE, stale)
        if unknown:
            status.add(Field.DROPPED_UNKNOWN, unknown)
        if unstamped:
            status.add(Field.UNSTAMPED, unstamped)
        if waits:
            status.observe_many(Histogram.RING_WAIT, np.array(waits, dtype=np.int64))
        status.set(Field.SESSIONS, len(turns))

    def _run_stage(self, run: list[_Read]) -> None:
        while run:
            start = monotonic_ns()
            cursor = _Cursor(run)
            culprit: tuple[int, int, str] | None = None
            try:
                self.stage.on_records(cursor, self._states, self.outbox)
            except SessionFailed as exc:
                turn = self._turns.get(exc.session)
                culprit = (exc.session, turn, exc.reason) if turn is not None else None
            except Exception as exc:
                # Pinned on the session of the furthest record the stage looked at: it
                # was handling that one when it raised.
                m = run[max(cursor.furthest, 0)]
                culprit = (m.session, m.turn, _describe(exc))
            self.status.observe(Histogram.COMPUTE, monotonic_ns() - start, len(run))
            self.status.beat()
            if culprit is None:
                return
            session, turn, reason = culprit
            self._fail(session, turn, reason)
            # The records after the one it failed on were not handled: the other
            # sessions' go to the stage again.
            run = [m for m in run[cursor.furthest + 1 :] if m.session != session]

    def _fail(self, session: int, turn: int, reason: str) -> None:
        """``session``'s ``turn`` failed at this stage: an ERROR follows it, the stage
        drops its work (``new_turn`` with the same turn) and its later records go."""
        self._report(session, turn, reason)
        self._failed[session] = turn
        state = self._states.get(session)
        if state is None:
            return
        try:
            self.stage.new_turn(session, turn, state)
        except Exception as exc:
            self._failure_log.warning(
                "%s: dropping the failed turn of session %08x failed too (%s)",
                self.stage.context.name,
                session,
                _describe(exc),
            )

    def _report(self, session: int, turn: int, reason: str) -> None:
        self.status.add(Field.SESSION_FAILURES, 1)
        self._failure_log.warning(
            "%s failed on session %08x turn %d (%s): failing the turn; the worker goes on",
            self.stage.context.name,
            session,
            turn,
            reason,
        )
        payload = TurnError(TurnErrorCode.INTERNAL, self._stage_id, reason[:200]).pack()
        self.outbox.emit(Record(kind=Kind.ERROR, session=session, turn=turn, payload=payload))

    def _close(self, session: int) -> None:
        state = self._states.pop(session)
        del self._turns[session]
        self._failed.pop(session, None)
        try:
            self.stage.close_session(session, state, self.outbox)
        except Exception as exc:
            self.status.add(Field.SESSION_FAILURES, 1)
            self._failure_log.warning(
                "%s: closing session %08x failed (%s)",
                self.stage.context.name,
                session,
                _describe(exc),
            )

    def _advance(self, session: int, turn: int) -> None:
        self._turns[session] = turn
        self._failed.pop(session, None)
        try:
            self.stage.new_turn(session, turn, self._states[session])
        except Exception as exc:
            self._report(session, turn, _describe(exc))
            self._failed[session] = turn
        self.status.beat()

    def _control(self, record: _Read) -> None:
        kind, session, turn = record.kind, record.session, record.turn
        start = monotonic_ns()
        current = self._turns.get(session)
        failed = ""
        if kind == Kind.SESSION_OPEN:
            if current is None:
                try:
                    self._states[session] = self.stage.open_session(
                        session, turn, record.payload
                    )
                    self._turns[session] = turn
                except Exception as exc:
                    # Not known here: its records are dropped as of an unknown session.
                    failed = _describe(exc)
            elif turn > current:
                self._advance(session, turn)
        elif kind == Kind.SESSION_CLOSE:
            if local_of(session) == 0:
                # A gateway (re)started: the sessions of its index that are still open
                # here belonged to a predecessor that died with them.
                gateway = gateway_of(session)
                for sid in [s for s in self._turns if gateway_of(s) == gateway]:
                    self._close(sid)
            elif current is not None:
                self._close(session)
        elif kind in (Kind.CANCEL, Kind.BARGE_IN) and current is not None and turn > current:
            self._advance(session, turn)
        self.status.observe(Histogram.COMPUTE, monotonic_ns() - start)
        self.outbox.emit(record)  # forwarded as read: every later stage learns of it
        if failed:
            # After the open, so that the later stages know the session it is about.
            self._report(session, turn, failed)
        self.status.beat()


def _never() -> bool:
    return False


def _describe(exc: BaseException) -> str:
    """An exception for operators: its type and where it was raised, never its message,
    which may quote the session's input."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{where}"


class _Cursor(Sequence[_Read]):
    """The run a stage is handed: remembers the furthest record the stage looked at, so
    that a failure is pinned on the session it was handling."""

    __slots__ = ("_items", "furthest")

    def __init__(self, items: list[_Read]) -> None:
        self._items = items
        self.furthest = -1

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> _Read: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[_Read]: ...
    def __getitem__(self, index: int | slice) -> _Read | Sequence[_Read]:
        if isinstance(index, slice):
            picked = range(len(self._items))[index]
            if picked:
                self.furthest = max(self.furthest, picked[0], picked[-1])
            return self._items[index]
        item = self._items[index]
        self.furthest = max(self.furthest, index if index >= 0 else len(self._items) + index)
        return item

    def __iter__(self) -> Iterator[_Read]:
        for index, item in enumerate(self._items):
            self.furthest = max(self.furthest, index)
            yield item
