"""The model-free stage of ``bench gateway``'s node: caller audio comes back as answer
audio, so the gateway's whole frame path (socket, ring out, ring in, egress task, send
queue, socket) is crossed both ways with no model.

Options ([workers.<stage>.options]):
    direct  true: answer through the first stage's event path straight to the gateway
            (one worker hop: the gateway alone is measured, and only one worker process
            is busy per frame); false (default): emit downstream like any stage, so
            placed last it makes every frame cross all four stages.

The first frame of a session confirms its turn (an empty TRANSCRIPT_FINAL, as a typed
turn would), because the gateway holds answer audio of unconfirmed turns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from voicegate.core.config import ConfigError
from voicegate.core.kinds import Kind
from voicegate.workers.stage import Batch, Output, Stage, StageContext


@dataclass
class EchoSession:
    confirmed: bool = False


class EchoStage(Stage[EchoSession]):
    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        for key, value in context.options.items():
            if key != "direct":
                raise ConfigError(f"workers.{context.name}.options.{key}", value, "unknown option")
        direct = context.options.get("direct", False)
        if not isinstance(direct, bool):
            raise ConfigError(f"workers.{context.name}.options.direct", direct, "must be a bool")
        self.direct = direct

    def open_session(self, session: int, turn: int, params: memoryview) -> EchoSession:
        return EchoSession()

    def on_records(
        self, batch: Batch, states: Mapping[int, EchoSession], out: Output
    ) -> None:
        emit = out.emit_event if self.direct else out.emit
        for m in batch:
            if m.kind != Kind.AUDIO_IN:
                continue
            state = states[m.session]
            if not state.confirmed:
                state.confirmed = True
                emit(m.replace(kind=Kind.TRANSCRIPT_FINAL, seq=0, payload=b""))
            emit(m.replace(kind=Kind.AUDIO_OUT))
