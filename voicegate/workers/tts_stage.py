"""The TTS stage: answer text in, answer audio out to the session's gateway.

LLM_TOKEN deltas go to the engine's clause chunker, so the first clause is spoken
while the rest is still being generated; ``step`` synthesizes the next clause of every
session with one ready in one batched call (at the end of each batch of records and on
``tick``). The voice's audio is resampled to the session's output rate with per-session
state, encoded (PCM16, or mu-law through ``voicegate.core.codec``) and cut into
``frame_ms`` AUDIO_OUT records; the last record of the turn carries ``Flag.LAST``
(possibly empty). OUTPUT_FORMAT switches the format from the next frame on.

Records for the gateway: AUDIO_OUT, the LLM_TOKEN text (for ``response.text.delta``),
transcripts, control, and one TURN_TIMING per turn, right after the turn's first
AUDIO_OUT: JSON ``{"transcript_ns", "first_token_ns", "first_audio_ns"}`` (CLOCK_MONOTONIC
ns; 0 when unknown), ``origin_ns`` = when the frame in which the speech ended reached
the gateway. VAD_EVENTs end here: the gateway has them from VAD's event path.

Options ([workers.tts.options]):
    frame_ms     duration of one AUDIO_OUT record (20; a multiple of 10)
    max_batch    clauses synthesized in one call (8)
    step_budget_ms  synthesis time per tick (30)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from voicegate.core import codec
from voicegate.core.audio import StreamResampler, float32_to_pcm16
from voicegate.core.clock import monotonic_ns
from voicegate.core.codec import AudioFormat
from voicegate.core.config import ConfigError
from voicegate.core.kinds import Flag, Kind
from voicegate.models.tts import TtsEngine
from voicegate.workers.stage import Batch, Output, Record, Stage, StageContext
from voicegate.workers.stage_support import (
    SessionParams,
    StageOptions,
    bundle_table,
    execution_config,
    parse_output_format,
)

_OPTIONS = ("frame_ms", "max_batch", "step_budget_ms")
FloatAudio = npt.NDArray[np.float32]


@dataclass
class TtsSession:
    output: AudioFormat
    resampler: StreamResampler
    turn: int
    held: FloatAudio = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    seq: int = 0
    origin_ns: int = 0
    timing: dict[str, int] = field(default_factory=dict)
    timing_sent: bool = False


class TtsStage(Stage[TtsSession]):
    tick_interval_s = 0.01

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        options = StageOptions(context, _OPTIONS)
        self.frame_ms = options.integer("frame_ms", 20, minimum=10)
        if self.frame_ms % codec.FRAME_UNIT_MS:
            raise ConfigError(
                f"{options.prefix}.frame_ms", self.frame_ms,
                f"must be a multiple of {codec.FRAME_UNIT_MS}",
            )
        self.max_batch = options.integer("max_batch", 8, minimum=1)
        self.step_budget_ns = int(options.number("step_budget_ms", 30.0) * 1e6)
        self.engine: TtsEngine | None = None

    def load(self) -> None:
        table, base = bundle_table(self.context, "tts")
        self.engine = TtsEngine.from_table(table, base, execution_config(self.context))
        # One clause before the node reports ready: onnxruntime's first run of a voice
        # costs several times a later one, and would land on the first caller's answer.
        voice = self.engine.voice
        voice.synthesize([voice.text_ids("Hello, how can I help?")])

    def _engine(self) -> TtsEngine:
        if self.engine is None:
            raise RuntimeError("TtsStage used before load()")
        return self.engine

    # -- sessions -------------------------------------------------------------------

    def open_session(self, session: int, turn: int, params: memoryview) -> TtsSession:
        output = SessionParams.parse_or_default(params)[0].output
        engine = self._engine()
        engine.open_session(session, engine.sample_rate)
        return TtsSession(output, StreamResampler(engine.sample_rate, output.sample_rate), turn)

    def close_session(self, session: int, state: TtsSession, out: Output) -> None:
        self._engine().close_session(session)

    def new_turn(self, session: int, turn: int, state: TtsSession) -> None:
        self._engine().cancel(session)
        state.resampler.reset()
        state.held = np.zeros(0, dtype=np.float32)
        state.turn = turn
        state.timing = {}
        state.timing_sent = False

    # -- records --------------------------------------------------------------------

    def on_records(
        self, batch: Batch, states: Mapping[int, TtsSession], out: Output
    ) -> None:
        engine = self._engine()
        for m in batch:
            state = states[m.session]
            if m.kind == Kind.VAD_EVENT:
                continue
            if m.kind == Kind.TURN_TIMING:
                state.timing = {k: int(v) for k, v in json.loads(bytes(m.payload)).items()}
                continue
            out.emit(m)
            if m.kind == Kind.LLM_TOKEN:
                state.origin_ns = m.origin_ns
                engine.push_text(m.session, bytes(m.payload).decode())
                if m.flags & Flag.LAST:
                    engine.end_reply(m.session)
            elif m.kind == Kind.OUTPUT_FORMAT:
                fmt = parse_output_format(m.payload)
                if fmt.sample_rate != state.output.sample_rate:
                    state.resampler = StreamResampler(engine.sample_rate, fmt.sample_rate)
                    state.held = np.zeros(0, dtype=np.float32)
                state.output = fmt
        if engine.pending():
            self._synthesize(states, out)

    def tick(self, now_ns: int, states: Mapping[int, TtsSession], out: Output) -> None:
        engine = self._engine()
        deadline = now_ns + self.step_budget_ns
        while engine.pending() and monotonic_ns() < deadline:
            self._synthesize(states, out)

    def _synthesize(self, states: Mapping[int, TtsSession], out: Output) -> None:
        chunks = self._engine().step(self.max_batch)
        clauses = sum(1 for chunk in chunks if chunk.clause >= 0)  # flushes run no model
        if clauses:
            self.context.record_batch(clauses)
        for chunk in chunks:
            state = states.get(chunk.session)
            if state is None:
                continue
            audio = state.resampler.process(chunk.audio, last=chunk.last)
            state.held = np.concatenate([state.held, audio]) if state.held.size else audio
            size = state.output.samples_per_frame(self.frame_ms)
            whole = state.held.size // size * size
            for start in range(0, whole, size):
                self._frame(chunk.session, state, state.held[start : start + size], False, out)
            state.held = state.held[whole:]
            if chunk.last:
                self._frame(chunk.session, state, state.held, True, out)
                state.held = np.zeros(0, dtype=np.float32)

    def _frame(
        self, sid: int, state: TtsSession, audio: FloatAudio, last: bool, out: Output
    ) -> None:
        payload = codec.encode(float32_to_pcm16(audio), state.output.encoding)
        state.seq += 1
        out.emit(
            Record(
                kind=Kind.AUDIO_OUT,
                session=sid,
                turn=state.turn,
                seq=state.seq,
                origin_ns=state.origin_ns,
                payload=payload,
                flags=Flag.LAST if last else 0,
            ),
        )
        if not state.timing_sent:
            timing = {
                "transcript_ns": state.timing.get("transcript_ns", 0),
                "first_token_ns": state.timing.get("first_token_ns", 0),
                "first_audio_ns": monotonic_ns(),
            }
            out.emit(
                Record(
                    kind=Kind.TURN_TIMING,
                    session=sid,
                    turn=state.turn,
                    origin_ns=state.origin_ns,
                    payload=json.dumps(timing).encode(),
                ),
            )
            state.timing_sent = True
