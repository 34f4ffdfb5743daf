"""One session's turn state at the gateway: which pipeline records become which turn
events for the client, and when.

``SessionTurns`` is the turn logic of docs/pipeline.md seen from the gateway, with no I/O:
records go in (``on_record``), protocol-neutral turn events and answer audio come out on
a bounded ``SendQueue``; the connection's wire protocol renders them.

- Answer material (``response.*`` events and audio) of a turn that is not confirmed yet
  (a speculation started at SPEECH_PAUSE) is held; END_OF_TURN, or the turn's
  TRANSCRIPT_FINAL (typed turns have no end-of-turn wait), releases it at once.
- CANCEL and BARGE_IN make every older turn stale: held material is dropped, queued
  audio is taken back from the send queue, and a response already playing ends with
  ``response.cancelled``; nothing of a stale turn is queued after that.
- ``response.done`` carries the latency breakdown; it is rendered when the sender reaches
  it, because the last of its timestamps is when the first answer audio left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from voicegate.core.codec import AudioFormat
from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import (
    AudioMark,
    TurnError,
    TurnErrorCode,
    TurnTiming,
    VadEvent,
    VadEventType,
    decode_text,
)
from voicegate.server.gateway.arrivals import ArrivalLog
from voicegate.server.gateway.send_queue import (
    AudioItem,
    DoneItem,
    EventItem,
    Item,
    SendQueue,
    item_turn,
)
from voicegate.server.protocols.base import TurnEvent
from voicegate.server.protocols.native_events import (
    ErrorEvent,
    ResponseAudioStarted,
    ResponseCancelled,
    ResponseDone,
    ResponseStarted,
    ResponseTextDelta,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
    TurnLatency,
    TurnTimeline,
)
from voicegate.server.protocols.native_wire import ErrorCode
from voicegate.workers.runtime.gateway_link import Received

log = logging.getLogger("voicegate.gateway")

VAD_RATE: Final[int] = 16000  # VadEvent.at_sample counts samples at this rate


@dataclass
class TurnMarks:
    """When each step of one turn happened (CLOCK_MONOTONIC ns; 0: not yet): what its
    latency breakdown is made of, at this gateway or at a bench's peer server."""

    turn: int
    speech_end_ns: int = 0
    silence_complete_ns: int = 0
    turn_end_ns: int = 0
    transcript_ns: int = 0
    first_token_ns: int = 0
    first_audio_ns: int = 0
    audio_sent_ns: int = 0  # set by the sender


@dataclass
class Answer(TurnMarks):
    """What the gateway knows of one turn's answer."""

    speculative: bool = False  # material arrived before the turn was confirmed
    started: bool = False  # response.started queued
    audio_started: bool = False
    done: bool = False  # the LAST audio record arrived
    text: list[str] = field(default_factory=list)
    audio_ms: float = 0.0
    provisional: str | None = None  # the transcript made at SPEECH_PAUSE
    final_sent: str | None = None  # the transcript.final sent for this turn


@dataclass
class Counters:
    """What one session adds to its gateway's counters."""

    dropped_stale: int = 0
    slow_client_drops: int = 0
    turns_committed: int = 0  # end of turn confirmed: the answer goes to the client
    turns_cancelled: int = 0  # speculation voided: the user spoke on after a pause
    turns_failed: int = 0  # a stage failed on the turn (an ERROR record)


class SessionTurns:
    """Turn state of one session at the gateway."""

    def __init__(
        self, output: AudioFormat, queue: SendQueue, end_of_turn_ms: float = 300.0
    ) -> None:
        self.queue = queue
        self.end_of_turn_samples = int(end_of_turn_ms * VAD_RATE / 1000)
        self.output = output
        self.turn = 1  # the highest turn seen: stamped on what the gateway sends
        self.stale_below = 0  # turns below this are void (CANCEL, BARGE_IN, restart)
        self.confirmed: set[int] = set()
        self.held: dict[int, list[Item]] = {}
        self.answers: dict[int, Answer] = {}
        self.playing: int | None = None  # the turn whose audio is going out
        self.awaiting_format: bool = False  # degraded: old-format audio still in flight
        self.counters = Counters()
        # (end sample at 16 kHz, arrival ns) of recent input frames, to date VAD events.
        self.arrivals = ArrivalLog(4096)
        self.overflowed = False  # push_audio refused: the connection must react
        # Per-session options (SESSION_UPDATE): how answers end, and the audio marks of
        # the latest answer (what TRUNCATE needs).
        self.respond = "audio"
        self.marks: dict[int, list[AudioMark]] = {}
        # How the responses asked for (RESPONSE_CREATE) answer, in order, and the turns
        # of those that write (a written answer ends with its last token).
        self.response_modes: list[str] = []
        self.written: set[int] = set()

    @property
    def output(self) -> AudioFormat:
        """The format answer audio is sent in now."""
        return self._output

    @output.setter
    def output(self, fmt: AudioFormat) -> None:
        self._output = fmt
        self._output_bytes_per_s = fmt.bytes_per_second

    def output_ms_bytes(self) -> float:
        """Bytes of one millisecond of audio in the current output format."""
        return self._output_bytes_per_s / 1000.0

    def output_ms(self, nbytes: int) -> float:
        """``output.duration_ms``, with the byte rate looked up once per format rather
        than twice per answer frame."""
        return 1000.0 * nbytes / self._output_bytes_per_s

    def switch_output(self, fmt: AudioFormat) -> None:
        """Later answer audio comes in ``fmt``; what TTS made before it heard so is
        dropped until its OUTPUT_FORMAT record comes back."""
        self.output = fmt
        self.awaiting_format = True

    # -- playback (the sender's side) -----------------------------------------------

    def start_playing(self, turn: int, now_ns: int) -> None:
        """The first audio of ``turn`` goes out now."""
        self.playing = turn
        answer = self.answers.get(turn)
        if answer is not None and not answer.audio_sent_ns:
            answer.audio_sent_ns = now_ns

    def stop_playing(self, turn: int) -> bool:
        """The client finished playing ``turn``; False if another turn plays by now."""
        if self.playing != turn:
            return False
        self.playing = None
        return True

    # -- input bookkeeping ----------------------------------------------------------

    def input_arrived(self, end_ms: int, arrival_ns: int) -> None:
        self.arrivals.append(end_ms * VAD_RATE // 1000, arrival_ns)

    def arrival_of(self, sample: int) -> int:
        """Arrival time of the input frame holding ``sample`` (0 if no longer known)."""
        return self.arrivals.arrival_of(sample)

    # -- records --------------------------------------------------------------------

    def on_record(self, r: Received, read_ns: int) -> None:
        self.turn = max(self.turn, r.turn)
        kind = r.kind
        if kind == Kind.VAD_EVENT:
            self._on_vad_event(r, read_ns)
        elif kind in (Kind.CANCEL, Kind.BARGE_IN):
            if kind == Kind.CANCEL and r.turn > self.stale_below:
                self.counters.turns_cancelled += 1
            self.void_before(r.turn, "barge_in" if kind == Kind.BARGE_IN else "")
        elif r.turn < self.stale_below and kind != Kind.OUTPUT_FORMAT:
            self.counters.dropped_stale += 1
        elif kind == Kind.TRANSCRIPT_PARTIAL:
            text = decode_text(Kind.TRANSCRIPT_PARTIAL, r.payload)
            if r.flags & Flag.PROVISIONAL:
                self._answer(r.turn).provisional = text
            self._emit(r.turn, TranscriptPartial(r.turn, text), hold=False)
        elif kind == Kind.TRANSCRIPT_FINAL:
            answer = self._answer(r.turn)
            answer.turn_end_ns = answer.turn_end_ns or read_ns
            text = decode_text(Kind.TRANSCRIPT_FINAL, r.payload)
            if answer.final_sent != text:
                answer.final_sent = text
                self._emit(r.turn, TranscriptFinal(r.turn, text), hold=False)
            self.confirm(r.turn)
            if self.respond == "none":
                answer.done = True  # a transcription session's turn ends here
        elif kind == Kind.LLM_TOKEN:
            self._on_token(r)
        elif kind == Kind.AUDIO_OUT:
            self._on_audio(r)
        elif kind == Kind.TURN_TIMING:
            self._on_timing(r)
        elif kind == Kind.ERROR:
            self._on_error(r)
        elif kind == Kind.OUTPUT_FORMAT:
            # The degrade request came back through every stage: later audio is new-format.
            self.awaiting_format = False
        elif kind == Kind.RESPONSE_CREATE:
            # The client asked for this answer: no end of turn will confirm it.
            mode = self.response_modes.pop(0) if self.response_modes else self.respond
            if mode == "text":
                self.written.add(r.turn)
            self._answer(r.turn)
            self.confirm(r.turn)
        elif kind == Kind.AUDIO_MARK:
            if r.turn not in self.marks:
                self.marks = {r.turn: []}  # only the latest answer can be truncated
            self.marks[r.turn].append(AudioMark.from_payload(r.payload))

    def _on_vad_event(self, r: Received, read_ns: int) -> None:
        event = VadEvent.unpack(r.payload)
        if r.turn < self.stale_below:
            return
        answer = self._answer(r.turn)  # from here the turn is in flight
        if event.event is VadEventType.SPEECH_START:
            self._emit(r.turn, SpeechStarted(r.turn, event.at_sample * 1000 // VAD_RATE), False)
        elif event.event is VadEventType.SPEECH_PAUSE:
            answer.speech_end_ns = r.origin_ns
        elif event.event is VadEventType.END_OF_TURN:
            answer.speech_end_ns = answer.speech_end_ns or r.origin_ns
            decided = r.sent_ns or read_ns
            # at_sample is where the speech ended; the silence was complete one
            # end-of-turn silence later, in the frame that arrived then.
            complete = self.arrival_of(event.at_sample + self.end_of_turn_samples) or decided
            answer.silence_complete_ns = min(max(complete, answer.speech_end_ns), decided)
            answer.turn_end_ns = max(decided, answer.silence_complete_ns)
            self._emit(r.turn, SpeechStopped(r.turn, event.at_sample * 1000 // VAD_RATE), False)
            if answer.provisional is not None and answer.final_sent is None:
                # No speech resumed, so the provisional transcript is the final one
                # (docs/pipeline.md): say so now, ahead of the answer it released, rather
                # than after the TRANSCRIPT_FINAL record crossed the later stages.
                answer.final_sent = answer.provisional
                self._emit(r.turn, TranscriptFinal(r.turn, answer.provisional), False)
            self.confirm(r.turn)

    def _on_token(self, r: Received) -> None:
        answer = self._answer(r.turn)
        self._start_response(answer)
        delta = decode_text(Kind.LLM_TOKEN, r.payload)
        if delta:
            answer.text.append(delta)
            self._emit(r.turn, ResponseTextDelta(r.turn, delta), hold=True)
        written = self.respond == "text" or r.turn in self.written
        if r.flags & Flag.LAST and written and not answer.done:
            # A written answer ends with its last token: no audio follows.
            answer.done = True
            self.written.discard(r.turn)
            self._push(DoneItem(r.turn), hold=r.turn not in self.confirmed)

    def _on_audio(self, r: Received) -> None:
        answer = self._answer(r.turn)
        if answer.done:
            return
        self._start_response(answer)
        last = bool(r.flags & Flag.LAST)
        data = r.payload
        if self.awaiting_format:
            data = b""  # old-format audio produced before TTS switched: not playable now
        if not answer.audio_started and (data or last):
            answer.audio_started = True
            fmt = self.output
            self._emit(r.turn, ResponseAudioStarted(r.turn, fmt.encoding, fmt.sample_rate), True)
        answer.audio_ms += self.output_ms(len(data))
        if data or last:
            self._push(AudioItem(r.turn, data, last), hold=r.turn not in self.confirmed)
        if last:
            answer.done = True
            self._push(DoneItem(r.turn), hold=r.turn not in self.confirmed)

    def _on_timing(self, r: Received) -> None:
        answer = self._answer(r.turn)
        try:
            timing = TurnTiming.unpack(r.payload)
        except ValueError as exc:
            log.warning("TURN_TIMING of turn %d is malformed (%s): ignored", r.turn, exc)
            return
        answer.transcript_ns = timing.transcript_ns
        answer.first_token_ns = timing.first_token_ns
        answer.first_audio_ns = timing.first_audio_ns
        if r.origin_ns and not answer.speech_end_ns:
            answer.speech_end_ns = r.origin_ns

    def _on_error(self, r: Received) -> None:
        code = ErrorCode.INTERNAL_ERROR
        try:
            detail = TurnError.unpack(r.payload)
            what = f"{detail.stage.name.lower()} failed ({detail.code.name.lower()})"
            if detail.code is TurnErrorCode.BAD_INPUT:
                code = ErrorCode.BAD_INPUT
        except ValueError:
            what = "a pipeline stage failed"
        self.counters.turns_failed += 1
        self.fail_turn(r.turn, what)
        # The client hears of it; the session goes on with its next turn.
        message = f"turn {r.turn} failed: {what}; the session goes on"
        self.queue.push(EventItem(0, ErrorEvent(code.value, message, fatal=False)))

    # -- turn transitions -----------------------------------------------------------

    def confirm(self, turn: int) -> None:
        if turn in self.confirmed or turn < self.stale_below:
            return
        self.confirmed.add(turn)
        self.counters.turns_committed += 1
        for item in self.held.pop(turn, []):
            self.queue.push(item)

    def void_before(self, turn: int, cancel_reason: str) -> None:
        """Every turn before ``turn`` is void; answers already sent say so with
        ``response.cancelled`` (``cancel_reason``)."""
        if turn <= self.stale_below:
            return
        self.stale_below = turn
        for old in [t for t in self.held if t < turn]:
            self.counters.dropped_stale += len(self.held.pop(old))
        self.counters.dropped_stale += self.queue.drop_turns_below(turn)
        for old, answer in sorted(self.answers.items()):
            if old < turn and answer.started and old in self.confirmed:
                self.queue.push(EventItem(old, ResponseCancelled(old, cancel_reason or "error")))
        for old in [t for t in self.answers if t < turn]:
            del self.answers[old]
        if self.playing is not None and self.playing < turn:
            self.playing = None

    def fail_turn(self, turn: int, what: str) -> None:
        """A turn failed in the pipeline: it ends here (cancelled if its answer started)."""
        log.warning("turn %d failed: %s", turn, what)
        self.void_before(max(turn + 1, self.stale_below), "error")
        self.turn = max(self.turn, turn + 1)

    def turns_in_flight(self) -> list[int]:
        """Turns with an answer started but not finished, or speech not yet answered."""
        return sorted(t for t, a in self.answers.items() if t >= self.stale_below and not a.done)

    # -- helpers --------------------------------------------------------------------

    def _answer(self, turn: int) -> Answer:
        answer = self.answers.get(turn)
        if answer is None:
            answer = self.answers[turn] = Answer(turn)
        return answer

    def _start_response(self, answer: Answer) -> None:
        if answer.started:
            return
        answer.started = True
        answer.speculative = answer.turn not in self.confirmed
        self._emit(answer.turn, ResponseStarted(answer.turn), hold=True)

    def _emit(self, turn: int, event: TurnEvent, hold: bool) -> None:
        self._push(EventItem(turn, event), hold=hold and turn not in self.confirmed)

    def _push(self, item: Item, hold: bool) -> None:
        turn = item_turn(item)
        if hold:
            self.held.setdefault(turn, []).append(item)
        elif isinstance(item, AudioItem):
            if not self.queue.push_audio(item):
                self.counters.slow_client_drops += 1
                self.overflowed = True
        else:
            self.queue.push(item)

    def render_done(self, turn: int, now_ns: int) -> ResponseDone | None:
        """The response.done of ``turn`` (None if the turn was voided meanwhile)."""
        answer = self.answers.get(turn)
        if answer is None:
            return None
        sent = answer.audio_sent_ns or now_ns
        end = answer.turn_end_ns or sent
        speech_end = answer.speech_end_ns or end
        silence = answer.silence_complete_ns or end
        speech_end = min(speech_end, silence)
        timeline = TurnTimeline(
            speech_end=speech_end,
            silence_complete=silence,
            turn_end=max(end, silence),
            transcript_final=answer.transcript_ns or end,
            first_token=answer.first_token_ns or end,
            first_audio=min(answer.first_audio_ns or end, sent),
            audio_sent=sent,
        )
        try:
            latency = TurnLatency.from_timeline(timeline)
        except ValueError:
            # Clocks of different stages only disagree by scheduling noise; never fail the
            # answer over it.
            latency = TurnLatency(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        del self.answers[turn]
        return ResponseDone(
            turn, "".join(answer.text), answer.audio_ms, answer.speculative, latency
        )
