"""The last stage of ``bench gateway``'s model-free node: caller audio comes back as
answer audio, so the gateway's whole frame path (socket, ring to the first stage, the
stages' rings, egress task, send queue, socket) is crossed both ways with no model.

The first frame of a session confirms its turn (an empty TRANSCRIPT_FINAL, as a typed
turn would), because the gateway holds answer audio of unconfirmed turns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from voicegate.core.kinds import Kind
from voicegate.workers.stage import Message, Output, Stage


@dataclass
class EchoSession:
    confirmed: bool = False


class EchoStage(Stage[EchoSession]):
    def open_session(self, session: int, turn: int, params: memoryview) -> EchoSession:
        return EchoSession()

    def on_records(
        self, batch: Sequence[Message], states: Mapping[int, EchoSession], out: Output
    ) -> None:
        for m in batch:
            if m.kind != Kind.AUDIO_IN:
                continue
            state = states[m.session]
            if not state.confirmed:
                state.confirmed = True
                out.emit(Kind.TRANSCRIPT_FINAL, m.session, m.turn, 0, m.origin_ns, b"")
            out.emit(Kind.AUDIO_OUT, m.session, m.turn, m.seq, m.origin_ns, m.payload)
