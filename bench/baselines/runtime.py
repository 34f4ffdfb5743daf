"""The worker runtime's record rules, in process: one Stage driven by direct calls.

Both baselines run the very Stage classes voicegate's workers run; what they change is
only how the stages are connected (threads and queues, or one request after the other),
never what a stage does with a record. So this follows ``voicegate.workers.worker``:
lifecycle control is handled here and forwarded, records of unknown sessions and of old
turns are dropped, a newer turn advances the session first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from typing_extensions import Buffer

from voicegate.core.clock import monotonic_ns
from voicegate.core.config import NodeConfig, NodeSettings
from voicegate.core.kinds import Kind
from voicegate.ext import Record
from voicegate.workers.gateway_link import Received
from voicegate.workers.llm_stage import LlmStage
from voicegate.workers.stage import Stage, StageContext
from voicegate.workers.stt_stage import SttStage
from voicegate.workers.tts_stage import TtsStage
from voicegate.workers.vad_stage import VadStage

Deliver = Callable[[Received], None]

_LIFECYCLE = frozenset(
    {Kind.SESSION_OPEN, Kind.SESSION_CLOSE, Kind.CANCEL, Kind.BARGE_IN, Kind.ERROR}
)
STAGE_CLASSES: tuple[tuple[str, type[Stage[Any]]], ...] = (
    ("vad", VadStage),
    ("stt", SttStage),
    ("llm", LlmStage),
    ("tts", TtsStage),
)


class _Outbox:
    """A stage's Output: data records collected for the next hop, event-path records
    handed to the gateway side at once (stamped, as the ring's send stamp would be)."""

    def __init__(self, to_gateway: Deliver) -> None:
        self.records: list[Received] = []
        self._to_gateway = to_gateway

    def emit(self, record: Record[Buffer]) -> None:
        self.records.append(_sent(record))

    def emit_event(self, record: Record[Buffer]) -> None:
        self._to_gateway(_sent(record))

    def take(self) -> list[Received]:
        taken, self.records = self.records, []
        return taken


def _sent(record: Record[Buffer]) -> Received:
    """A copy of what a stage emitted, stamped as the ring stamps what it publishes."""
    return Record(
        kind=record.kind, session=record.session, turn=record.turn, seq=record.seq,
        origin_ns=record.origin_ns, payload=bytes(memoryview(record.payload)),
        flags=record.flags, sent_ns=monotonic_ns(),
    )  # fmt: skip


class StageRunner:
    """One stage and its session table; ``handle`` and ``tick`` return what the stage
    emitted downstream (event-path records went to ``to_gateway`` already)."""

    def __init__(self, stage: Stage[Any], to_gateway: Deliver) -> None:
        self.stage = stage
        self.outbox = _Outbox(to_gateway)
        self.states: dict[int, Any] = {}
        self.turns: dict[int, int] = {}

    @property
    def tick_interval_s(self) -> float | None:
        return self.stage.tick_interval_s

    def handle(self, records: Sequence[Received]) -> list[Received]:
        run: list[Record[memoryview]] = []
        for r in records:
            if r.kind in _LIFECYCLE:
                self._flush(run)
                self._control(r)
                continue
            current = self.turns.get(r.session)
            if current is None or r.turn < current:
                continue  # unknown session or stale turn: dropped, as the worker does
            if r.turn > current:
                self._flush(run)
                self._advance(r.session, r.turn)
            run.append(r.replace(payload=memoryview(r.payload)))
        self._flush(run)
        return self.outbox.take()

    def tick(self) -> list[Received]:
        self.stage.tick(monotonic_ns(), self.states, self.outbox)
        return self.outbox.take()

    def _flush(self, run: list[Record[memoryview]]) -> None:
        if run:
            self.stage.on_records(list(run), self.states, self.outbox)
            run.clear()

    def _advance(self, session: int, turn: int) -> None:
        self.turns[session] = turn
        self.stage.new_turn(session, turn, self.states[session])

    def _control(self, r: Received) -> None:
        current = self.turns.get(r.session)
        if r.kind == Kind.SESSION_OPEN:
            if current is None:
                self.states[r.session] = self.stage.open_session(
                    r.session, r.turn, memoryview(r.payload)
                )
                self.turns[r.session] = r.turn
            elif r.turn > current:
                self._advance(r.session, r.turn)
        elif r.kind == Kind.SESSION_CLOSE:
            if current is not None:
                state = self.states.pop(r.session)
                del self.turns[r.session]
                self.stage.close_session(r.session, state, self.outbox)
        elif r.kind in (Kind.CANCEL, Kind.BARGE_IN) and current is not None and r.turn > current:
            self._advance(r.session, r.turn)
        self.outbox.emit(r)


def load_stages(bundle: Path, to_gateway: Deliver) -> list[StageRunner]:
    """The four stages on ``bundle`` with voicegate's default options, models loaded."""
    config = NodeConfig(node=NodeSettings(bundle=bundle))
    runners: list[StageRunner] = []
    for name, cls in STAGE_CLASSES:
        options = dict(config.workers[name].options)
        stage = cls(StageContext(name, config, options, (0,), 1))
        stage.load()
        runners.append(StageRunner(stage, to_gateway))
    return runners
