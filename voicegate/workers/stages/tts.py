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

Session options (SESSION_UPDATE; docs/pipeline.md), from the session's next answer (at
once when its current turn has no answer yet): ``respond`` "text" or "none" synthesizes
nothing (the LLM_TOKEN text still goes to the gateway, and a text answer's TURN_TIMING
goes out as it arrives, ``first_audio_ns`` 0); ``voice`` picks the bundle's voice by name
(an unknown name is the turn's BAD_INPUT error and leaves the voice as it was);
``audio_marks`` adds an AUDIO_MARK after the frames of each spoken clause: the audio up
to there (ms from the answer's start) speaks the answer's text up to there (characters
of the LLM_TOKEN text; where the clause's text ends, unless one delta completed two
clauses: the first then gets the second's end).

Options ([workers.tts.options]):
    frame_ms     duration of one AUDIO_OUT record (20; a multiple of 10)
    max_batch    clauses synthesized in one call (8)
    step_budget_ms  synthesis time per tick (30)
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from voicegate.core import codec
from voicegate.core.audio import StreamResampler, float32_to_pcm16
from voicegate.core.clock import monotonic_ns
from voicegate.core.codec import AudioFormat
from voicegate.core.config import ConfigError
from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import (
    AudioMark,
    SessionOptions,
    SessionParams,
    StageId,
    TurnError,
    TurnErrorCode,
    TurnTiming,
    decode_output_format,
    decode_text,
    encode_audio,
)
from voicegate.models.tts import TtsEngine
from voicegate.workers.stages.stage import Batch, Output, Record, Stage, StageContext
from voicegate.workers.stages.support import (
    StageOptions,
    bundle_table,
    emit_timing,
    execution_config,
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
    timing: TurnTiming = field(default_factory=TurnTiming)
    timing_sent: bool = False
    options: SessionOptions = field(default_factory=SessionOptions)  # of the current answer
    pending: SessionOptions | None = None  # for the next answer
    answering: bool = False  # the current turn's answer began here
    text_chars: int = 0  # answer text received in this turn
    clause_ends: deque[int] = field(default_factory=deque)  # text end of each queued clause
    answer_samples: int = 0  # answer audio produced in this turn, at the output rate

    @property
    def speaks(self) -> bool:
        return self.options.respond == "audio"


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
        output = SessionParams.unpack_or_default(params)[0].output
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
        state.timing = TurnTiming()
        state.timing_sent = False
        state.answering = False
        state.text_chars = state.answer_samples = 0
        state.clause_ends.clear()
        if state.pending is not None:
            self._apply(session, state, state.pending)

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
                state.answering = True
                state.timing = TurnTiming.unpack(m.payload)
                if not state.speaks:
                    self._timing(m.session, state, 0, out)
                continue
            out.emit(m)
            if m.kind == Kind.LLM_TOKEN:
                state.answering = True
                if state.speaks:
                    state.origin_ns = m.origin_ns
                    text = decode_text(Kind.LLM_TOKEN, m.payload)
                    self._push(m.session, state, text, m.flags & Flag.LAST)
            elif m.kind == Kind.SESSION_UPDATE:
                self._update(m, state, out)
            elif m.kind == Kind.OUTPUT_FORMAT:
                fmt = decode_output_format(m.payload)
                if fmt.sample_rate != state.output.sample_rate:
                    state.resampler = StreamResampler(engine.sample_rate, fmt.sample_rate)
                    state.held = np.zeros(0, dtype=np.float32)
                state.output = fmt
        if engine.pending():
            self._synthesize(states, out)

    def _push(self, sid: int, state: TtsSession, text: str, last: int) -> None:
        engine = self._engine()
        state.text_chars += len(text)
        clauses = engine.push_text(sid, text)
        end = state.text_chars - engine.unclaused_chars(sid)
        state.clause_ends.extend([end] * clauses)
        if last:
            state.clause_ends.extend([state.text_chars] * engine.end_reply(sid))

    def _update(self, m: Record[memoryview], state: TtsSession, out: Output) -> None:
        options = SessionOptions.from_payload(m.payload)
        voices = self._engine().voice.voice_names
        if options.voice is not None and options.voice not in voices:
            detail = f"unknown voice {options.voice!r}; voices: {', '.join(voices)}"
            payload = TurnError(TurnErrorCode.BAD_INPUT, StageId.TTS, detail).pack()
            out.emit(
                Record(
                    kind=Kind.ERROR,
                    session=m.session,
                    turn=m.turn,
                    origin_ns=m.origin_ns,
                    payload=payload,
                )
            )
            options = replace(options, voice=(state.pending or state.options).voice)
        if state.answering:
            state.pending = options  # this turn's answer keeps the voice it began with
        else:
            self._apply(m.session, state, options)

    def _apply(self, sid: int, state: TtsSession, options: SessionOptions) -> None:
        state.pending = None
        self._engine().set_speaker(sid, options.voice)
        state.options = options

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
            state.answer_samples += audio.size
            if chunk.clause >= 0 and state.clause_ends:
                self._mark(chunk.session, state, state.clause_ends.popleft(), out)
            if chunk.last:
                self._frame(chunk.session, state, state.held, True, out)
                state.held = np.zeros(0, dtype=np.float32)

    def _mark(self, sid: int, state: TtsSession, text_chars: int, out: Output) -> None:
        if not state.options.audio_marks:
            return
        audio_ms = state.answer_samples * 1000 // state.output.sample_rate
        mark = AudioMark(audio_ms, text_chars).to_payload()
        out.emit(
            Record(
                kind=Kind.AUDIO_MARK,
                session=sid,
                turn=state.turn,
                origin_ns=state.origin_ns,
                payload=mark,
            )
        )

    def _frame(
        self, sid: int, state: TtsSession, audio: FloatAudio, last: bool, out: Output
    ) -> None:
        payload = encode_audio(float32_to_pcm16(audio), state.output.encoding)
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
            self._timing(sid, state, monotonic_ns(), out)

    def _timing(self, sid: int, state: TtsSession, first_audio_ns: int, out: Output) -> None:
        timing = dataclasses.replace(state.timing, first_audio_ns=first_audio_ns)
        emit_timing(out, sid, state.turn, state.origin_ns, timing)
        state.timing_sent = True
