"""voicegate's client protocol (docs/protocol.md) spoken by a Pipecat pipeline.

Pipecat transports carry frames; a ``FrameSerializer`` turns the wire messages into
frames and back. ``StreamSerializer`` is that serializer for ``/v1/stream``: binary
audio in becomes ``InputAudioRawFrame``, answer audio out becomes binary messages, and
``OutputTransportMessage(Urgent)Frame`` messages become the JSON events. The events are
made by two small processors that watch the pipeline's frames: ``TurnEvents`` before
TTS (speech, transcript and answer text) and ``AnswerEvents`` after it (answer audio and
``response.done``).

``response.done`` carries the same ``latency_ms`` as voicegate's gateway, built from one
``TurnTimeline`` per turn. ``TurnLog`` collects its timestamps where Pipecat's pieces
see them: the serializer notes when each piece of input audio arrived and when the first
answer audio went to the socket; ``PositionedSileroVAD`` (Pipecat's Silero analyzer,
counting the samples it scored) says where in the input the speech ended and where the
silence that ended the turn was complete; the processors note the VAD decision, the
transcript, the first token and the first audio.
"""

from __future__ import annotations

import bisect
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADState
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.base_serializer import FrameSerializer

from voicegate.core.clock import monotonic_ns
from voicegate.core.codec import PCM16_16K, AudioFormat
from voicegate.server.protocols.native_events import (
    ResponseAudioStarted,
    ResponseDone,
    ResponseStarted,
    ResponseTextDelta,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TurnLatency,
    TurnTimeline,
)
from voicegate.server.protocols.native_wire import (
    ProtocolError,
    SessionEnd,
    TextInput,
    parse_client_audio,
    parse_client_text,
)

SAMPLE_RATE = PCM16_16K.sample_rate
_ARRIVALS_KEPT = 3000  # input messages (60 s of 20 ms frames): well past any turn's silence
_DONE_MARK = "response.done"  # completed by the serializer when it goes out


@dataclass
class _Answer:
    turn: int
    text: str = ""
    speech_end_ns: int = 0
    silence_complete_ns: int = 0
    turn_end_ns: int = 0
    transcript_ns: int = 0
    first_token_ns: int = 0
    first_audio_ns: int = 0
    audio_sent_ns: int = 0
    audio_bytes: int = 0


@dataclass
class TurnLog:
    """One connection's turn timestamps (CLOCK_MONOTONIC ns), shared by its serializer,
    VAD analyzer and event processors. Everything runs on the server's event loop except
    the analyzer's scoring, whose results are read back on the loop."""

    output: AudioFormat = PCM16_16K
    turn: int = 0
    received_samples: int = 0
    # (input sample position at the end of a message, arrival time of that message)
    arrivals: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=_ARRIVALS_KEPT))
    answers: dict[int, _Answer] = field(default_factory=dict)
    stopped: deque[int] = field(default_factory=deque)  # turns awaiting their transcript
    answering: deque[int] = field(default_factory=deque)  # answers between LLM and socket
    playing: int = 0  # the turn whose answer audio goes out now
    speech_start_sample: int = 0
    speech_end_sample: int = 0
    silence_complete_sample: int = 0
    ended: bool = False

    def audio_arrived(self, samples: int, now_ns: int) -> None:
        self.received_samples += samples
        self.arrivals.append((self.received_samples, now_ns))

    def arrival_of(self, sample: int) -> int:
        """When the message holding input sample ``sample`` arrived."""
        if not self.arrivals:
            return monotonic_ns()
        ends = [end for end, _ in self.arrivals]
        i = min(bisect.bisect_right(ends, sample), len(ends) - 1)
        return self.arrivals[i][1]

    def answer(self, turn: int) -> _Answer:
        return self.answers.setdefault(turn, _Answer(turn))


class PositionedSileroVAD(SileroVADAnalyzer):
    """Pipecat's Silero analyzer, unchanged, that also reports where in the input its
    decisions fall: the scoring is the parent's; this only counts the samples scored."""

    def __init__(self, log: TurnLog, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._log = log
        self._scored = 0
        self._previous = VADState.QUIET

    def voice_confidence(self, buffer: bytes) -> float:
        self._scored += len(buffer) // 2
        return super().voice_confidence(buffer)

    async def analyze_audio(self, buffer: bytes) -> VADState:
        state = await super().analyze_audio(buffer)
        if state != self._previous:
            window = self.num_frames_required()
            if state == VADState.SPEAKING and self._previous == VADState.STARTING:
                start_windows = round(self.params.start_secs * self.sample_rate / window)
                self._log.speech_start_sample = max(0, self._scored - start_windows * window)
            elif state == VADState.QUIET and self._previous in (
                VADState.SPEAKING, VADState.STOPPING,
            ):  # fmt: skip
                stop_windows = round(self.params.stop_secs * self.sample_rate / window)
                self._log.silence_complete_sample = self._scored
                self._log.speech_end_sample = max(0, self._scored - stop_windows * window)
            self._previous = state
        return state


class StreamSerializer(FrameSerializer):
    """``/v1/stream`` messages <-> Pipecat frames for one connection, after the gateway
    endpoint has handled ``session.start`` (pcm16 at 16 kHz both ways)."""

    def __init__(self, log: TurnLog) -> None:
        super().__init__()
        self.log = log
        # Set by the endpoint: sends the error event (and closes on a fatal one).
        self.on_error: Callable[[ProtocolError], None] = lambda exc: None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if isinstance(data, str):
            try:
                message = parse_client_text(data)
            except ProtocolError as exc:
                self.on_error(exc)
                return None
            if isinstance(message, SessionEnd):
                self.log.ended = True
            elif isinstance(message, TextInput):
                # A typed turn skips VAD and STT: it is the turn's transcript, and its
                # timeline starts when it arrived.
                log = self.log
                log.turn += 1
                log.stopped.append(log.turn)
                answer = log.answer(log.turn)
                now = monotonic_ns()
                answer.speech_end_ns = answer.silence_complete_ns = answer.turn_end_ns = now
                return TranscriptionFrame(message.text, "", "", finalized=True)
            return None
        try:
            audio = parse_client_audio(data, PCM16_16K)
        except ProtocolError as exc:
            self.on_error(exc)
            return None
        self.log.audio_arrived(len(audio.data) // 2, monotonic_ns())
        return InputAudioRawFrame(audio=audio.data, sample_rate=SAMPLE_RATE, num_channels=1)

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, OutputAudioRawFrame):
            answer = self.log.answers.get(self.log.playing)
            if answer is not None:
                if not answer.audio_sent_ns:
                    answer.audio_sent_ns = monotonic_ns()
                answer.audio_bytes += len(frame.audio)
            return bytes(frame.audio)
        if isinstance(frame, OutputTransportMessageFrame | OutputTransportMessageUrgentFrame):
            message = frame.message
            if isinstance(message, dict) and message.get("type") == _DONE_MARK:
                return self._response_done(int(message["turn"]))
            if isinstance(message, dict) and message.get("type") == ResponseAudioStarted.type:
                self.log.playing = int(message["turn"])
            return json.dumps(message, ensure_ascii=False)
        return None

    def _response_done(self, turn: int) -> str | None:
        answer = self.log.answers.pop(turn, None)
        if answer is None:
            return None
        now = monotonic_ns()
        first_audio = answer.first_audio_ns or now
        silence = max(answer.speech_end_ns, answer.silence_complete_ns)
        turn_end = max(silence, answer.turn_end_ns)
        timeline = TurnTimeline(
            speech_end=answer.speech_end_ns,
            silence_complete=silence,
            turn_end=turn_end,
            transcript_final=answer.transcript_ns or turn_end,
            first_token=answer.first_token_ns or turn_end,
            first_audio=first_audio,
            audio_sent=max(answer.audio_sent_ns or now, first_audio, turn_end),
        )
        done = ResponseDone(
            turn=turn,
            text=answer.text,
            audio_ms=self.log.output.duration_ms(answer.audio_bytes),
            speculative=False,  # Pipecat starts the answer once the turn has ended
            latency_ms=TurnLatency.from_timeline(timeline),
        )
        return done.to_json()


def _event(message: dict[str, object], urgent: bool = True) -> Frame:
    if urgent:
        return OutputTransportMessageUrgentFrame(message=message)
    return OutputTransportMessageFrame(message=message)


class TurnEvents(FrameProcessor):
    """Between the LLM and TTS: speech, transcript and answer-text events."""

    def __init__(self, log: TurnLog, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log = log
        self.turn = 0  # the turn the LLM answers now

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if direction is not FrameDirection.DOWNSTREAM:
            return
        log = self.log
        now = monotonic_ns()
        if isinstance(frame, VADUserStartedSpeakingFrame):
            log.turn += 1
            start_ms = log.speech_start_sample * 1000 // SAMPLE_RATE
            await self.push_frame(_event(SpeechStarted(log.turn, start_ms).to_dict()))
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            log.stopped.append(log.turn)
            answer = log.answer(log.turn)
            answer.speech_end_ns = log.arrival_of(log.speech_end_sample)
            answer.silence_complete_ns = log.arrival_of(log.silence_complete_sample)
            answer.turn_end_ns = now
            end_ms = log.speech_end_sample * 1000 // SAMPLE_RATE
            await self.push_frame(_event(SpeechStopped(log.turn, end_ms).to_dict()))
        elif isinstance(frame, TranscriptionFrame):
            # Segments are transcribed in the order the VAD closed them.
            self.turn = log.stopped.popleft() if log.stopped else log.turn
            log.answer(self.turn).transcript_ns = now
            await self.push_frame(_event(TranscriptFinal(self.turn, frame.text).to_dict()))
        elif isinstance(frame, LLMFullResponseStartFrame):
            log.answering.append(self.turn)
            await self.push_frame(_event(ResponseStarted(self.turn).to_dict()))
        elif isinstance(frame, LLMTextFrame) and frame.text:
            answer = log.answer(self.turn)
            if not answer.first_token_ns:
                answer.first_token_ns = now
            answer.text += frame.text
            await self.push_frame(_event(ResponseTextDelta(self.turn, frame.text).to_dict()))


class AnswerEvents(FrameProcessor):
    """Between TTS and the output transport: ``response.audio.started`` in order before
    the first answer audio, ``response.done`` in order after the last."""

    def __init__(self, log: TurnLog, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log = log

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        log = self.log
        downstream = direction is FrameDirection.DOWNSTREAM
        if downstream and isinstance(frame, TTSAudioRawFrame) and log.answering:
            turn = log.answering[0]
            answer = log.answer(turn)
            if not answer.first_audio_ns:
                answer.first_audio_ns = monotonic_ns()
                started = ResponseAudioStarted(turn, log.output.encoding, log.output.sample_rate)
                await self.push_frame(_event(started.to_dict(), urgent=False))
        await self.push_frame(frame, direction)
        if downstream and isinstance(frame, LLMFullResponseEndFrame) and log.answering:
            turn = log.answering.popleft()
            await self.push_frame(_event({"type": _DONE_MARK, "turn": turn}, urgent=False))
