"""A scripted first stage for the gateway tests: exactly the records docs/pipeline.md
describes, from a trivially checkable rule, so the gateway is tested without models.

Imported by spawned worker processes, which find it on PYTHONPATH (tests/server).

Rule: a frame whose peak magnitude exceeds ``LOUD`` is speech, anything else silence.
The first silent frame after speech is SPEECH_PAUSE: the answer of the turn is produced
at once (speculation), as LLM_TOKEN "answer <turn>." and ``answer_ms`` of a tone in the
session's output format, 20 ms per AUDIO_OUT (LAST on the last), then TURN_TIMING.
``end_of_turn_ms`` of silence is END_OF_TURN (+ TRANSCRIPT_FINAL); speech before that is
CANCEL with Flag.CONTINUE under the next turn. Speech lasting ``barge_in_ms`` while the
gateway plays an answer is BARGE_IN under the next turn. TEXT_INPUT is answered at once.
The later stages are pass-through with an empty tag, so these records reach the gateway
as emitted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from voicegate.core import codec
from voicegate.core.clock import monotonic_ns
from voicegate.core.codec import AudioFormat, Encoding
from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import VadEvent, VadEventType
from voicegate.workers.stage import Batch, Output, Record, Stage, StageContext

LOUD = 1000


@dataclass
class FakeSession:
    input: AudioFormat
    output: AudioFormat
    turn: int  # the turn of the current (or next) utterance
    used: bool = False  # an utterance has taken ``turn``
    position: int = 0  # samples at 16 kHz received so far
    in_speech: bool = False
    paused: bool = False  # speculating: waiting for the end-of-turn silence
    silence: int = 0
    speech_end_ns: int = 0
    playing: bool = False
    overlap: int = 0  # speech samples during playback


def _format(d: Mapping[str, object]) -> AudioFormat:
    return AudioFormat(Encoding(str(d["encoding"])), int(str(d["sample_rate"])))


class ScriptedTurnStage(Stage[FakeSession]):
    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        opts = context.options
        self.end_of_turn = int(opts.get("end_of_turn_ms", 300)) * 16
        self.answer_ms = int(opts.get("answer_ms", 400))
        self.barge_in = int(opts.get("barge_in_ms", 100)) * 16

    def open_session(self, session: int, turn: int, params: memoryview) -> FakeSession:
        p = json.loads(bytes(params))
        return FakeSession(_format(p["input"]), _format(p["output"]), turn)

    def on_records(
        self, batch: Batch, states: Mapping[int, FakeSession], out: Output
    ) -> None:
        for m in batch:
            s = states[m.session]
            if m.kind == Kind.AUDIO_IN:
                self._audio(m, s, out)
            elif m.kind == Kind.PLAYBACK:
                s.playing = bytes(m.payload[:1]) == b"\x01"
                s.overlap = 0
            elif m.kind == Kind.TEXT_INPUT:
                turn = self._new_turn(s)
                out.emit(
                    Record(
                        kind=Kind.TRANSCRIPT_FINAL,
                        session=m.session,
                        turn=turn,
                        origin_ns=m.origin_ns,
                        payload=m.payload,
                    ),
                )
                self._answer(m.session, s, turn, m.origin_ns, out)
            elif m.kind == Kind.OUTPUT_FORMAT:
                s.output = _format(json.loads(bytes(m.payload)))
                out.emit(m.replace(turn=s.turn))
            else:
                out.emit(m.replace(turn=s.turn))

    def _new_turn(self, s: FakeSession) -> int:
        if s.used:
            s.turn += 1
        s.used = True
        return s.turn

    def _both(self, out: Output, record: Record[bytes]) -> None:
        out.emit_event(record)
        out.emit(record)
    def _audio(self, m: Record[memoryview], s: FakeSession, out: Output) -> None:
        pcm = codec.decode(m.payload, s.input.encoding)
        n = len(pcm) * 16000 // s.input.sample_rate
        loud = bool(pcm.size) and int(np.abs(pcm.astype(np.int32)).max()) > LOUD
        sid = m.session
        if loud:
            s.silence = 0
            if s.playing and not s.in_speech:
                s.overlap += n
                if s.overlap >= self.barge_in:
                    turn = self._new_turn(s)
                    self._both(out, _record(Kind.BARGE_IN, sid, turn, m.origin_ns))
                    s.in_speech, s.playing, s.overlap = True, False, 0
            elif not s.in_speech:
                if s.paused:
                    s.turn += 1
                    cancel = _record(Kind.CANCEL, sid, s.turn, m.origin_ns, flags=Flag.CONTINUE)
                    self._both(out, cancel)
                    s.paused = False
                else:
                    turn = self._new_turn(s)
                    event = VadEvent(VadEventType.SPEECH_START, s.position).pack()
                    self._both(out, _record(Kind.VAD_EVENT, sid, turn, m.origin_ns, event))
                s.in_speech = True
        elif s.in_speech:
            s.in_speech, s.paused, s.silence = False, True, n
            s.speech_end_ns = m.origin_ns
            event = VadEvent(VadEventType.SPEECH_PAUSE, s.position).pack()
            self._both(out, _record(Kind.VAD_EVENT, sid, s.turn, m.origin_ns, event))
            out.emit(
                Record(
                    kind=Kind.TRANSCRIPT_PARTIAL,
                    session=sid,
                    turn=s.turn,
                    origin_ns=m.origin_ns,
                    payload=b"heard",
                    flags=Flag.PROVISIONAL,
                ),
            )
            self._answer(sid, s, s.turn, m.origin_ns, out)
        elif s.paused:
            s.silence += n
            if s.silence >= self.end_of_turn:
                s.paused = False
                event = VadEvent(VadEventType.END_OF_TURN, s.position + n).pack()
                self._both(out, _record(Kind.VAD_EVENT, sid, s.turn, s.speech_end_ns, event))
                out.emit(
                    Record(
                        kind=Kind.TRANSCRIPT_FINAL,
                        session=sid,
                        turn=s.turn,
                        origin_ns=s.speech_end_ns,
                        payload=f"utterance {s.turn}".encode(),
                    ),
                )
        s.position += n

    def _answer(self, sid: int, s: FakeSession, turn: int, origin: int, out: Output) -> None:
        out.emit(
            Record(
                kind=Kind.LLM_TOKEN,
                session=sid,
                turn=turn,
                origin_ns=origin,
                payload=f"answer {turn}.".encode(),
                flags=Flag.LAST,
            ),
        )
        rate = s.output.sample_rate
        frames = max(1, self.answer_ms // 20)
        t = np.arange(rate // 50) / rate
        tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        chunk = codec.encode(tone, s.output.encoding)
        for i in range(frames):
            last = i == frames - 1
            out.emit(
                Record(
                    kind=Kind.AUDIO_OUT,
                    session=sid,
                    turn=turn,
                    seq=i + 1,
                    origin_ns=origin,
                    payload=chunk,
                    flags=Flag.LAST if last else 0,
                ),
            )
            if i == 0:
                now = monotonic_ns()
                timing = {"transcript_ns": now, "first_token_ns": now, "first_audio_ns": now}
                out.emit(
                    Record(
                        kind=Kind.TURN_TIMING,
                        session=sid,
                        turn=turn,
                        origin_ns=origin,
                        payload=json.dumps(timing).encode(),
                    ),
                )


class RaisingPassStage(Stage[None]):
    """A pass-through later stage (no tag) that raises on a transcript starting with
    "boom", as a model raises on an input it cannot take (a prompt longer than its
    context): one session's record that makes a stage raise."""

    def open_session(self, session: int, turn: int, params: memoryview) -> None:
        return None

    def on_records(self, batch: Batch, states: Mapping[int, None], out: Output) -> None:
        for m in batch:
            if m.kind == Kind.TRANSCRIPT_FINAL and bytes(m.payload).startswith(b"boom"):
                raise ValueError(f"prompt {bytes(m.payload)!r} does not fit max_context")
            out.emit(m)


def _record(
    kind: int, session: int, turn: int, origin_ns: int, payload: bytes = b"", *, flags: int = 0
) -> Record[bytes]:
    return Record(
        kind=kind, session=session, turn=turn, origin_ns=origin_ns, payload=payload, flags=flags
    )
