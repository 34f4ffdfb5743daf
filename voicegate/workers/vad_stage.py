"""The VAD stage: caller audio in, turn decisions out.

Each session's frames (PCM16 or mu-law, 8-48 kHz, as SESSION_OPEN says) are converted to
16 kHz with per-session resampler state; Silero runs once per batch for every session
with a 512-sample chunk ready; ``TurnTaker`` turns the probabilities into decisions. The
stage numbers the turns (docs/pipeline.md): a new utterance or typed turn takes the next
number, never below the turn the gateway stamps; a pause that ends in more speech voids
the speculation with CANCEL (Flag.CONTINUE) under a new turn; speech during playback
lasting ``barge_in_min_speech_ms`` is a BARGE_IN under a new turn.

Decisions go to the gateway on the event path (``emit_event``) and downstream; the
audio of the current utterance goes downstream as 16 kHz PCM16, from a short pre-roll
before the detected start until the end of the turn. SPEECH_START's ``at_sample`` is
the first sample forwarded, so STT can cut the utterance at the sample a later event
names. COMMIT ends an utterance in progress at once (at the audio received so far).

Session options (SESSION_UPDATE, ``SessionOptions``; docs/pipeline.md) act here at once:
the session's speech threshold, pre-roll and end-of-turn silence, and ``manual`` turn
detection (silence never ends the turn, COMMIT does). A bad SESSION_UPDATE is the
session's BAD_INPUT error and goes no further. RESPONSE_CREATE, like a typed turn, takes
the next turn number and goes down under it.

Options ([workers.vad.options]):
    end_of_turn_silence_ms   silence that ends a turn (300)
    pause_ms                 silence that starts speculation (64: two chunks)
    barge_in_min_speech_ms   speech during playback that interrupts it (300)
    min_speech_ms            speech that starts an utterance (the bundle's, else 250)
    pre_roll_ms              audio forwarded before the padded start (200)
    forward_ms               utterance audio gathered per record sent downstream (100)

Why ``forward_ms``: STT needs the utterance's audio by the time of its next partial or
of the pause, not frame by frame; one record per 100 ms instead of per 20 ms frame is a
fifth of the records for both stages to handle. Nothing waits on it: a pause or an end
of turn sends what is gathered first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from voicegate.core.audio import Pcm16, StreamResampler, float32_to_pcm16
from voicegate.core.codec import AudioFormat, Encoding
from voicegate.core.config import ConfigError, end_of_turn_silence_ms
from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import (
    SessionOptions,
    SessionParams,
    StageId,
    TurnError,
    TurnErrorCode,
    VadEvent,
    VadEventType,
    decode_audio,
    decode_playback,
    encode_audio,
)
from voicegate.models.vad import CHUNK, SAMPLE_RATE, ChunkProbability, SileroVad
from voicegate.workers.audio_history import PcmHistory
from voicegate.workers.stage import Batch, Output, Record, Stage, StageContext
from voicegate.workers.stage_support import (
    StageOptions,
    bundle_table,
    execution_config,
)
from voicegate.workers.turn_taking import Decision, TurnDecision, TurnParams, TurnTaker

_OPTIONS = (
    "end_of_turn_silence_ms",
    "pause_ms",
    "barge_in_min_speech_ms",
    "min_speech_ms",
    "pre_roll_ms",
    "forward_ms",
)
_HISTORY = 2 * SAMPLE_RATE  # audio kept behind the model's position, for the pre-roll
_PER_MS = SAMPLE_RATE // 1000
_PCM16_SCALE = np.float32(32768.0)

FloatAudio = npt.NDArray[np.float32]



@dataclass
class VadSession:
    input: AudioFormat
    resampler: StreamResampler
    taker: TurnTaker
    turn: int  # the last turn this stage numbered
    gateway_turn: int  # the highest turn the gateway stamped
    history: PcmHistory = field(default_factory=PcmHistory)
    frames: deque[tuple[int, int]] = field(default_factory=deque)  # (end sample, origin_ns)
    forwarding: bool = False  # an utterance is in progress: its audio goes downstream
    forwarded: int = 0  # stream position up to which audio went downstream
    decided: int = 0  # stream position up to which the model has run
    seq: int = 0
    problem: str | None = None  # bad input not yet reported to the gateway
    pre_roll: int = 0  # samples forwarded before the padded start

    @property
    def fed(self) -> int:
        return self.history.fed

    @property
    def base(self) -> int:
        return self.history.base

    def next_turn(self) -> int:
        self.turn = max(self.turn + 1, self.gateway_turn)
        return self.turn

    def origin_at(self, sample: int) -> int:
        """Arrival time of the frame that holds ``sample`` (the latest frame if none)."""
        for end, origin in self.frames:
            if end > sample:
                return origin
        return self.frames[-1][1] if self.frames else 0

    def append(self, pcm: Pcm16, origin_ns: int) -> None:
        # Behind the model's position, not behind what was fed: a batch of records can
        # bring more than the history's length at once (a backlog, a client sending
        # faster than real time), and a start decided in it still needs its pre-roll.
        keep_from = min(self.fed + len(pcm), self.decided) - _HISTORY
        if self.forwarding:
            keep_from = min(keep_from, self.forwarded)
        self.history.append(pcm, keep_from)
        self.frames.append((self.fed, origin_ns))
        while self.frames and self.frames[0][0] < self.base:
            self.frames.popleft()


class VadStage(Stage[VadSession]):
    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        options = StageOptions(context, _OPTIONS)
        self.end_of_turn_ms = end_of_turn_silence_ms(context.options)
        self.pause_ms = options.number("pause_ms", 64.0)
        if self.pause_ms > self.end_of_turn_ms:
            raise ConfigError(
                f"{options.prefix}.pause_ms",
                self.pause_ms,
                "must not exceed end_of_turn_silence_ms",
            )
        self.barge_in_ms = options.number("barge_in_min_speech_ms", 300.0)
        self.min_speech_ms: float | None = (
            options.number("min_speech_ms", 0.0) if "min_speech_ms" in context.options else None
        )
        self.pre_roll = int(options.number("pre_roll_ms", 200.0) * _PER_MS)
        self.forward_samples = int(options.number("forward_ms", 100.0) * _PER_MS)
        self.engine: SileroVad | None = None

    def load(self) -> None:
        table, base = bundle_table(self.context, "vad")
        self.engine = SileroVad.from_table(table, base, execution_config(self.context))
        vad = self.engine.params
        self.turn_params = TurnParams(
            threshold=vad.threshold,
            low_threshold=vad.low_threshold,
            min_speech=int(
                (self.min_speech_ms if self.min_speech_ms is not None else vad.min_speech_ms)
                * _PER_MS
            ),
            pause=int(self.pause_ms * _PER_MS),
            end_of_turn=int(self.end_of_turn_ms * _PER_MS),
            barge_in_speech=int(self.barge_in_ms * _PER_MS),
            pad=int(vad.speech_pad_ms * _PER_MS),
            forget=int(vad.min_silence_ms * _PER_MS),
        )

    def _engine(self) -> SileroVad:
        if self.engine is None:
            raise RuntimeError("VadStage used before load()")
        return self.engine

    # -- sessions -------------------------------------------------------------------

    def open_session(self, session: int, turn: int, params: memoryview) -> VadSession:
        parsed, problem = SessionParams.unpack_or_default(params)
        fmt = parsed.input
        self._engine().open_session(session)
        return VadSession(
            problem=problem,
            input=fmt,
            resampler=StreamResampler(fmt.sample_rate, SAMPLE_RATE),
            taker=TurnTaker(self.turn_params),
            turn=turn - 1,  # the first utterance takes the turn the session opened with
            gateway_turn=turn,
            pre_roll=self.pre_roll,
        )

    def close_session(self, session: int, state: VadSession, out: Output) -> None:
        self._engine().close_session(session)

    def new_turn(self, session: int, turn: int, state: VadSession) -> None:
        state.gateway_turn = max(state.gateway_turn, turn)

    # -- records --------------------------------------------------------------------

    def on_records(
        self, batch: Batch, states: Mapping[int, VadSession], out: Output
    ) -> None:
        engine = self._engine()
        fed: set[int] = set()
        for m in batch:
            state = states[m.session]
            if state.problem is not None:
                self._report(m.session, state, out)
            if m.kind == Kind.AUDIO_IN:
                try:
                    pcm = decode_audio(Kind.AUDIO_IN, m.payload, state.input.encoding)
                except ValueError as exc:
                    state.problem = f"AUDIO_IN frame {m.seq}: {exc}"
                    self._report(m.session, state, out)
                    continue
                model_in: npt.NDArray[np.int16] | FloatAudio
                if state.resampler.in_rate == SAMPLE_RATE:
                    kept = model_in = pcm  # what the model and the next stages take
                else:
                    model_in = state.resampler.process(pcm.astype(np.float32) / _PCM16_SCALE)
                    kept = float32_to_pcm16(model_in)
                if kept.size:
                    state.append(kept, m.origin_ns)
                    engine.feed(m.session, model_in)
                    fed.add(m.session)
                continue
            if fed:
                # Decide on the audio before this record, so that it acts in order.
                self._run_model(fed, states, out)
                fed = set()
            if m.kind == Kind.PLAYBACK:
                state.taker.playing = decode_playback(m.payload)
                out.emit(m.replace(turn=state.turn))
            elif m.kind == Kind.COMMIT:
                for committed in state.taker.commit(state.fed):
                    self._decide(m.session, state, committed, out)
                out.emit(m.replace(turn=state.turn))
            elif m.kind in (Kind.TEXT_INPUT, Kind.RESPONSE_CREATE):
                state.taker.reset()
                state.forwarding = False
                turn = state.next_turn()
                out.emit(m.replace(turn=turn))
            elif m.kind != Kind.SESSION_UPDATE or self._update(m.session, state, m.payload, out):
                # Before the first utterance (or after a reopen) the stage's own turn is
                # behind the gateway's, and the next stages would drop it as stale.
                out.emit(m.replace(turn=max(state.turn, m.turn)))
        if fed:
            self._run_model(fed, states, out)

    def _run_model(self, fed: set[int], states: Mapping[int, VadSession], out: Output) -> None:
        """One batched model pass over every chunk ready, then the sessions' decisions."""
        decisions: dict[int, list[TurnDecision]] = {}
        probabilities = self._engine().step().probabilities
        for rows in _model_calls(probabilities):
            self.context.record_batch(rows)
        for chunk in probabilities:
            state = states[chunk.sid]
            end = chunk.end_sample
            state.decided = end
            decided = state.taker.push(end - CHUNK, end, chunk.probability)
            if decided is not None:
                decisions.setdefault(chunk.sid, []).append(decided)
        for sid in fed:
            state = states[sid]
            for decided in decisions.get(sid, ()):
                self._decide(sid, state, decided, out)
            if state.forwarding and state.fed - state.forwarded >= self.forward_samples:
                self._flush(sid, state, out)

    def _decide(self, sid: int, state: VadSession, decided: TurnDecision, out: Output) -> None:
        latest = state.frames[-1][1] if state.frames else 0
        if decided.decision in (Decision.START, Decision.BARGE_IN):
            turn = state.next_turn()
            if decided.decision is Decision.BARGE_IN:
                barge_in = Record(kind=Kind.BARGE_IN, session=sid, turn=turn, origin_ns=latest)
                self._both(out, barge_in)
            first = max(decided.sample - state.pre_roll, state.base)
            self._event(out, VadEventType.SPEECH_START, first, _head(sid, turn, latest))
            state.forwarding = True
            state.forwarded = first
            return
        if decided.decision is Decision.RESUME:
            turn = state.next_turn()
            cancel = Record(
                kind=Kind.CANCEL, session=sid, turn=turn, origin_ns=latest, flags=Flag.CONTINUE
            )
            self._both(out, cancel)
            self._event(out, VadEventType.SPEECH_RESUME, decided.sample, _head(sid, turn, latest))
            return
        # PAUSE or END_OF_TURN: the audio up to now goes first, so STT has all of it.
        self._flush(sid, state, out)
        head = _head(sid, state.turn, state.origin_at(decided.speech_end))
        if decided.decision is Decision.PAUSE:
            self._event(out, VadEventType.SPEECH_PAUSE, decided.sample, head)
        else:
            self._event(out, VadEventType.END_OF_TURN, decided.sample, head)
            state.forwarding = False

    def _update(self, sid: int, state: VadSession, payload: memoryview, out: Output) -> bool:
        """Apply a SESSION_UPDATE's turn detection; False (and the session's BAD_INPUT
        error) when the payload is bad."""
        try:
            options = SessionOptions.from_payload(payload)
        except ValueError as exc:
            state.problem = str(exc)
            self._report(sid, state, out)
            return False
        state.taker.params = self.session_turn_params(options)
        state.taker.manual = options.turn_detection == "manual"
        padding = options.prefix_padding_ms
        state.pre_roll = self.pre_roll if padding is None else padding * _PER_MS
        return True

    def session_turn_params(self, options: SessionOptions) -> TurnParams:
        """The node's turn parameters with a session's overrides. The speech/silence
        hysteresis keeps the bundle's width; an end-of-turn silence shorter than the pause
        that starts speculation is raised to it."""
        params = self.turn_params
        if options.vad_threshold is not None:
            gap = params.threshold - params.low_threshold
            params = replace(
                params,
                threshold=options.vad_threshold,
                low_threshold=max(0.0, options.vad_threshold - gap),
            )
        if options.silence_duration_ms is not None:
            params = replace(
                params, end_of_turn=max(options.silence_duration_ms * _PER_MS, params.pause)
            )
        return params

    def _report(self, sid: int, state: VadSession, out: Output) -> None:
        """The session's input could not be used: an ERROR to the gateway, once."""
        detail = TurnError(TurnErrorCode.BAD_INPUT, StageId.VAD, state.problem or "").pack()
        state.problem = None
        out.emit_event(Record(kind=Kind.ERROR, session=sid, turn=state.turn, payload=detail))

    def _flush(self, sid: int, state: VadSession, out: Output) -> None:
        """Send the utterance's audio that has not gone downstream yet."""
        if not state.forwarding or state.forwarded >= state.fed:
            return
        audio = state.history.since(state.forwarded)
        state.seq += 1
        origin = state.frames[-1][1] if state.frames else 0
        out.emit(
            Record(
                kind=Kind.AUDIO_IN,
                session=sid,
                turn=state.turn,
                seq=state.seq,
                origin_ns=origin,
                payload=encode_audio(audio, Encoding.PCM16),
            ),
        )
        state.forwarded = state.fed

    def _event(
        self, out: Output, event: VadEventType, at_sample: int, head: Record[bytes]
    ) -> None:
        """A VAD_EVENT with the header fields of ``head`` (session, turn, origin), both ways."""
        self._both(out, head.replace(payload=VadEvent(event, at_sample).pack()))

    def _both(self, out: Output, record: Record[bytes]) -> None:
        """To the gateway at once, and down the pipeline in order with the audio."""
        out.emit_event(record)
        out.emit(record)
def _model_calls(probabilities: Sequence[ChunkProbability]) -> list[int]:
    """Rows of each batched model call behind one ``step``: a call holds one chunk of
    each session ready, so a session seen again starts the next call."""
    calls: list[int] = []
    seen: set[int] = set()
    for chunk in probabilities:
        if chunk.sid in seen or not calls:
            calls.append(0)
            seen.clear()
        seen.add(chunk.sid)
        calls[-1] += 1
    return calls


def _head(session: int, turn: int, origin_ns: int) -> Record[bytes]:
    """The header fields an event record takes from its session and the audio it is about."""
    return Record(kind=Kind.VAD_EVENT, session=session, turn=turn, origin_ns=origin_ns)
