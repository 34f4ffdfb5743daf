"""In-process harness for one model-backed stage: a context on a bundle, records in,
what the stage emitted out (shared by the tests/workers/test_*_stage.py files)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias, cast

from typing_extensions import Buffer

from voicegate.core.clock import monotonic_ns
from voicegate.core.config import NodeConfig, NodeSettings
from voicegate.core.kinds import Kind
from voicegate.ext import Record
from voicegate.models.synth import Scripted, synth_bundle
from voicegate.workers.stage import Stage, StageContext

Out: TypeAlias = Record[bytes]  # what a stage emitted, its payload copied


@dataclass
class Recorder:
    """An Output that keeps everything: ``records`` went downstream, ``events`` straight
    to the gateway (``emit_event``)."""

    records: list[Out] = field(default_factory=list)
    events: list[Out] = field(default_factory=list)

    def emit(self, record: Record[Buffer]) -> None:
        self.records.append(_copied(record))

    def emit_event(self, record: Record[Buffer]) -> None:
        self.events.append(_copied(record))

    def clear(self) -> None:
        self.records.clear()
        self.events.clear()

    def take(self, kind: Kind | None = None, *, event_path: bool = False) -> list[Out]:
        return [r for r in (self.events if event_path else self.records)
                if kind is None or r.kind == kind]  # fmt: skip


def context(
    name: str, bundle: Path | None, options: Mapping[str, Any] | None = None
) -> StageContext:
    config = NodeConfig(node=NodeSettings(bundle=bundle))
    return StageContext(name, config, dict(options or {}), (0,), 1)


def open_params(
    input: tuple[str, int] = ("pcm16", 16000),
    output: tuple[str, int] = ("pcm16", 16000),
    instructions: str | None = None,
) -> bytes:
    return json.dumps({
        "input": {"encoding": input[0], "sample_rate": input[1]},
        "output": {"encoding": output[0], "sample_rate": output[1]},
        "instructions": instructions,
    }).encode()


def _copied(record: Record[Buffer]) -> Out:
    return cast("Out", record.replace(payload=bytes(memoryview(record.payload))))


def msg(
    kind: int, session: int, turn: int, payload: bytes = b"", *, flags: int = 0, seq: int = 0,
    origin_ns: int = 0, sent_ns: int = 0,
) -> Record[memoryview]:
    """A record as a ring read hands it to a stage: its payload a memoryview."""
    return Record(
        kind=kind, session=session, turn=turn, seq=seq, origin_ns=origin_ns,
        payload=memoryview(payload), flags=flags, sent_ns=sent_ns,
    )


class Harness:
    """Drives a stage the way the worker runtime does, for the records a test gives."""

    def __init__(self, stage: Stage[Any]) -> None:
        self.stage = stage
        self.states: dict[int, Any] = {}
        self.turns: dict[int, int] = {}
        self.out = Recorder()

    def open(self, session: int, turn: int, params: bytes) -> None:
        self.states[session] = self.stage.open_session(session, turn, memoryview(params))
        self.turns[session] = turn

    def send(self, *messages: Record[memoryview]) -> None:
        for m in messages:
            if m.turn > self.turns[m.session]:
                self.turns[m.session] = m.turn
                self.stage.new_turn(m.session, m.turn, self.states[m.session])
            if m.kind in (Kind.CANCEL, Kind.BARGE_IN):
                continue  # the runtime handles and forwards these itself
            self.stage.on_records([m], self.states, self.out)

    def send_batch(self, messages: list[Record[memoryview]]) -> None:
        """Records of the current turns in one ``on_records`` call, as a ring read gives."""
        self.stage.on_records(messages, self.states, self.out)

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            self.stage.tick(monotonic_ns(), self.states, self.out)


# The shipped speech samples (VOICEGATE_SPEECH_DIR overrides, as for the model tests).
SPEECH = Path(
    os.environ.get("VOICEGATE_SPEECH_DIR")
    or Path(__file__).resolve().parents[2].parent / "shared" / "speech"
)
TRANSCRIPT = "What time does the store open?"
REPLY = "We open at nine, and close at eight. Anything else?"


def scripted_bundle(root: Path) -> Path:
    """STT, LLM and TTS with known outputs: the transcript (one token per 160 ms of
    audio), the reply, and audio that encodes its phoneme ids."""
    synth_bundle(
        root, seed=5, stages=("stt", "llm", "tts"),
        scripted=Scripted(reply=REPLY, transcript=TRANSCRIPT, tts=True),
    )
    return root
