"""The STT stage: the utterance's audio in, transcripts out.

The utterance starts at SPEECH_START (whose ``at_sample`` is the first sample VAD
forwards) and its audio is kept across a CANCEL with ``Flag.CONTINUE`` (the same
utterance goes on under a new turn). While the caller talks, a TRANSCRIPT_PARTIAL comes
out every ``partial_interval_ms`` of new audio (decoded together for every session due,
on ``tick``). At SPEECH_PAUSE the utterance up to the pause's ``at_sample`` (the speech
end plus padding; not the silence after it) is decoded at once and goes out as a
TRANSCRIPT_PARTIAL with ``Flag.PROVISIONAL``: the LLM starts on it. At END_OF_TURN the
same cut gives the same text, so the provisional text is sent as TRANSCRIPT_FINAL without
decoding again; only a cut that changed is decoded. TEXT_INPUT becomes the turn's
TRANSCRIPT_FINAL as is (with its ``Flag.ITEM_ONLY``). Utterances longer than Whisper's
30 s window are decoded from their last 30 s.

Under load the partials give way (``partial_shedding``): their spacing doubles while
the stage is busy more than half the time, up to ``partial_max_stretch`` times, and
comes back when it is idle; the transcripts at pauses and ends of turn are never shed.

Options ([workers.stt.options]):
    partial_interval_ms   new audio between streaming partials (the bundle's; 0: none)
    partial_max_stretch   how far that spacing may grow under load (8; 1: never)
    max_batch             utterances decoded in one call (16)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from voicegate.core.audio import pcm16_to_float32
from voicegate.core.clock import monotonic_ns
from voicegate.core.codec import Encoding
from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import VadEvent, VadEventType, decode_audio, encode_text
from voicegate.models import melspec
from voicegate.models.stt import SAMPLE_RATE, WhisperModel, load_model, read_params
from voicegate.workers.partial_shedding import PartialGovernor
from voicegate.workers.stage import Batch, Output, Record, Stage, StageContext
from voicegate.workers.stage_support import StageOptions, bundle_table, execution_config

log = logging.getLogger("voicegate.stt")
_OPTIONS = ("partial_interval_ms", "partial_max_stretch", "max_batch")
FloatAudio = npt.NDArray[np.float32]


@dataclass
class SttSession:
    turn: int
    chunks: list[FloatAudio] = field(default_factory=list)
    samples: int = 0
    start: int = 0  # stream position of the utterance's first sample
    speaking: bool = False  # streaming partials are due while the caller talks
    decoded_at: int = 0  # samples covered by the last partial
    last_partial: str = ""
    provisional: tuple[int, str] | None = None  # (cut in samples, text) for this turn
    origin_ns: int = 0  # arrival of the frame in which the speech ended

    def audio(self, cut: int | None = None) -> FloatAudio:
        if len(self.chunks) != 1:
            joined = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
            self.chunks = [joined]
        audio = self.chunks[0][: self.samples if cut is None else max(0, cut)]
        return audio[-melspec.N_SAMPLES :]

    def restart(self, start: int) -> None:
        self.chunks, self.samples, self.start = [], 0, start
        self.decoded_at, self.last_partial, self.provisional = 0, "", None


@dataclass(frozen=True)
class _Request:
    sid: int
    turn: int
    cut: int
    final: bool
    origin_ns: int


class SttStage(Stage[SttSession]):
    tick_interval_s = 0.02

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        self.options = StageOptions(context, _OPTIONS)
        self.max_batch = self.options.integer("max_batch", 16, minimum=1)
        self.model: WhisperModel | None = None
        self.partials = PartialGovernor(
            0, max_stretch=self.options.integer("partial_max_stretch", 8, minimum=1)
        )

    def load(self) -> None:
        table, base = bundle_table(self.context, "stt")
        self.model = load_model(table, base, execution_config(self.context))
        default = read_params(table, base).partial_interval_ms
        interval_ms = self.options.integer("partial_interval_ms", default)
        self.partials.base_interval = interval_ms * SAMPLE_RATE // 1000

    def _model(self) -> WhisperModel:
        if self.model is None:
            raise RuntimeError("SttStage used before load()")
        return self.model

    def open_session(self, session: int, turn: int, params: memoryview) -> SttSession:
        return SttSession(turn)

    def new_turn(self, session: int, turn: int, state: SttSession) -> None:
        # The audio stays: after a CANCEL with CONTINUE the utterance goes on; a new
        # utterance starts with its own SPEECH_START.
        state.turn = turn
        state.provisional = None

    def on_records(
        self, batch: Batch, states: Mapping[int, SttSession], out: Output
    ) -> None:
        start = monotonic_ns()
        try:
            self._on_records(batch, states, out)
        finally:
            self._busy(start)

    def _busy(self, start_ns: int) -> None:
        if self.partials.busy(start_ns, monotonic_ns()):
            spacing_ms = self.partials.interval * 1000 // SAMPLE_RATE
            log.info("streaming partials every %d ms of new audio (x%d: STT load)",
                     spacing_ms, self.partials.stretch)  # fmt: skip

    def _on_records(
        self, batch: Batch, states: Mapping[int, SttSession], out: Output
    ) -> None:
        requests: list[_Request] = []
        for m in batch:
            state = states[m.session]
            if m.kind == Kind.AUDIO_IN:
                audio = pcm16_to_float32(decode_audio(Kind.AUDIO_IN, m.payload, Encoding.PCM16))
                state.chunks.append(audio)
                state.samples += audio.size
                continue
            out.emit(m)
            if m.kind == Kind.TEXT_INPUT:
                state.restart(0)
                state.speaking = False
                item_only = m.flags & Flag.ITEM_ONLY  # a conversation item: no answer
                out.emit(m.replace(kind=Kind.TRANSCRIPT_FINAL, seq=0, flags=item_only))
            elif m.kind == Kind.VAD_EVENT:
                request = self._on_event(m, state, out)
                if request is not None:
                    requests.append(request)
        self._decode(requests, states, out)

    def _on_event(self, m: Record[memoryview], state: SttSession, out: Output) -> _Request | None:
        event = VadEvent.unpack(m.payload)
        if event.event is VadEventType.SPEECH_START:
            state.restart(event.at_sample)
            state.speaking = True
        elif event.event is VadEventType.SPEECH_RESUME:
            state.speaking = True
        elif event.event is VadEventType.SPEECH_PAUSE:
            state.speaking = False
            state.origin_ns = m.origin_ns
            return _Request(m.session, m.turn, event.at_sample - state.start, False, m.origin_ns)
        elif event.event is VadEventType.END_OF_TURN:
            state.speaking = False
            cut = event.at_sample - state.start
            if state.provisional is not None and state.provisional[0] == cut:
                text = encode_text(state.provisional[1])
                out.emit(
                    m.replace(kind=Kind.TRANSCRIPT_FINAL, seq=0, flags=0, payload=text),
                )
                return None
            return _Request(m.session, m.turn, cut, True, m.origin_ns)
        return None

    def _decode(
        self, requests: list[_Request], states: Mapping[int, SttSession], out: Output
    ) -> None:
        model = self._model()
        for first in range(0, len(requests), self.max_batch):
            chunk = requests[first : first + self.max_batch]
            texts = self._transcribe(model, [states[r.sid].audio(r.cut) for r in chunk])
            for request, text in zip(chunk, texts, strict=True):
                state = states[request.sid]
                if request.final:
                    kind, flags = Kind.TRANSCRIPT_FINAL, 0
                else:
                    kind, flags = Kind.TRANSCRIPT_PARTIAL, Flag.PROVISIONAL
                    state.provisional = (request.cut, text)
                out.emit(
                    Record(
                        kind=kind,
                        session=request.sid,
                        turn=request.turn,
                        origin_ns=request.origin_ns,
                        payload=encode_text(text),
                        flags=flags,
                    ),
                )

    def _transcribe(self, model: WhisperModel, audios: list[FloatAudio]) -> list[str]:
        texts = [""] * len(audios)
        voiced = [i for i, audio in enumerate(audios) if audio.size]
        if voiced:
            self.context.record_batch(len(voiced))  # one encoder call over them all
            tokens = model.transcribe([audios[i] for i in voiced])
            for i, ids in zip(voiced, tokens, strict=True):
                texts[i] = model.text(ids)
        return texts

    def tick(self, now_ns: int, states: Mapping[int, SttSession], out: Output) -> None:
        interval = self.partials.interval
        if not interval:
            return
        due = sorted(
            (s.decoded_at - s.samples, sid)
            for sid, s in states.items()
            if s.speaking and s.samples - s.decoded_at >= interval
        )[: self.max_batch]
        if not due:
            return
        try:
            self._partials(now_ns, [sid for _, sid in due], states, out)
        finally:
            self._busy(now_ns)

    def _partials(
        self, now_ns: int, sids: list[int], states: Mapping[int, SttSession], out: Output
    ) -> None:
        texts = self._transcribe(self._model(), [states[sid].audio() for sid in sids])
        for sid, text in zip(sids, texts, strict=True):
            state = states[sid]
            state.decoded_at = state.samples
            if text and text != state.last_partial:
                state.last_partial = text
                out.emit(
                    Record(
                        kind=Kind.TRANSCRIPT_PARTIAL,
                        session=sid,
                        turn=state.turn,
                        origin_ns=now_ns,
                        payload=encode_text(text),
                    ),
                )
