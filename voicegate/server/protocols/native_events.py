"""The events the server sends on ``/v1/stream``, as JSON text messages.

One frozen dataclass per event; `to_json()` is the exact wire form documented in
docs/protocol.md and `parse_server_event()` reads it back (used by the `talk` client
and the tests). Clients ignore event types and fields they do not know, so the server
may add either without breaking them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Final, get_type_hints

from voicegate.core.codec import AudioFormat, Encoding
from voicegate.server.protocols.native_wire import ProtocolLimits


class EventFormatError(ValueError):
    """A server event that does not have the documented shape."""


@dataclass(frozen=True, slots=True)
class TurnTimeline:
    """CLOCK_MONOTONIC ns at which each step of one turn happened, as the gateway saw them.

    speech_end: arrival at the gateway of the audio that holds the end of speech.
    silence_complete: arrival of the audio that completes the end-of-turn silence.
    turn_end: the VAD's end-of-turn decision reaching the pipeline.
    transcript_final: the final transcript ready.
    first_token: the LLM's first answer token ready (earlier than turn_end if speculative).
    first_audio: the TTS's first answer audio ready.
    audio_sent: the first answer audio handed to the client's socket.
    """

    speech_end: int
    silence_complete: int
    turn_end: int
    transcript_final: int
    first_token: int
    first_audio: int
    audio_sent: int


_NS_PER_MS: Final[float] = 1e6


@dataclass(frozen=True, slots=True)
class TurnLatency:
    """Where the voice-to-voice time of one turn went, in milliseconds.

    The end-of-turn silence (waiting for enough silence to decide the turn is over) is
    kept apart from everything after the decision, so the two can be tuned separately.
    The stages after the decision are the time each one added to the critical path once
    the previous one was done; work that speculation finished early counts 0. So
    ``end_of_turn_silence + vad + stt + llm_first_token + tts_first_audio + gateway``
    equals ``voice_to_voice``, and everything but the silence is ``after_end_of_turn``.
    """

    end_of_turn_silence: float
    vad: float
    stt: float
    llm_first_token: float
    tts_first_audio: float
    gateway: float

    _STAGES: ClassVar[tuple[str, ...]] = (
        "end_of_turn_silence",
        "vad",
        "stt",
        "llm_first_token",
        "tts_first_audio",
        "gateway",
    )

    def __post_init__(self) -> None:
        for name in self._STAGES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"latency_ms.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"latency_ms.{name} must be finite and >= 0, got {value!r}")

    @property
    def after_end_of_turn(self) -> float:
        return self.vad + self.stt + self.llm_first_token + self.tts_first_audio + self.gateway

    @property
    def voice_to_voice(self) -> float:
        return self.end_of_turn_silence + self.after_end_of_turn

    @classmethod
    def from_timeline(cls, t: TurnTimeline) -> TurnLatency:
        if not t.speech_end <= t.silence_complete <= t.turn_end:
            raise ValueError(
                "turn timeline out of order: need speech_end <= silence_complete <= turn_end, "
                f"got {t.speech_end}, {t.silence_complete}, {t.turn_end}"
            )
        # Each boundary is the later of the stage's own finish and the previous boundary:
        # a stage that finished before its input was final adds nothing.
        stt_done = max(t.turn_end, t.transcript_final)
        token_done = max(stt_done, t.first_token)
        audio_done = max(token_done, t.first_audio)
        if t.audio_sent < audio_done:
            raise ValueError(
                f"turn timeline out of order: audio_sent {t.audio_sent} is before the "
                f"answer audio was ready ({audio_done})"
            )
        return cls(
            end_of_turn_silence=(t.silence_complete - t.speech_end) / _NS_PER_MS,
            vad=(t.turn_end - t.silence_complete) / _NS_PER_MS,
            stt=(stt_done - t.turn_end) / _NS_PER_MS,
            llm_first_token=(token_done - stt_done) / _NS_PER_MS,
            tts_first_audio=(audio_done - token_done) / _NS_PER_MS,
            gateway=(t.audio_sent - audio_done) / _NS_PER_MS,
        )

    def to_dict(self) -> dict[str, float]:
        # Microseconds are beyond what the clocks involved resolve. The totals are sums of
        # the rounded stages, so a parsed copy serialises to exactly the same JSON.
        stages = {name: round(getattr(self, name), 3) for name in self._STAGES}
        after = round(sum(v for k, v in stages.items() if k != "end_of_turn_silence"), 3)
        return {
            "end_of_turn_silence": stages["end_of_turn_silence"],
            "after_end_of_turn": after,
            "vad": stages["vad"],
            "stt": stages["stt"],
            "llm_first_token": stages["llm_first_token"],
            "tts_first_audio": stages["tts_first_audio"],
            "gateway": stages["gateway"],
            "voice_to_voice": round(stages["end_of_turn_silence"] + after, 3),
        }

    @classmethod
    def from_dict(cls, value: object) -> TurnLatency:
        if not isinstance(value, dict):
            raise EventFormatError("response.done.latency_ms must be an object")
        stages: dict[str, float] = {}
        for name in cls._STAGES:
            stage = value.get(name)
            if isinstance(stage, bool) or not isinstance(stage, int | float):
                raise EventFormatError(f"response.done.latency_ms.{name} must be a number")
            stages[name] = float(stage)
        try:
            return cls(**stages)
        except ValueError as exc:
            raise EventFormatError(f"response.done.{exc}") from None


class ServerEvent:
    """Base of the server events: `type` on the wire, fields as the dataclass declares."""

    __slots__ = ()
    type: ClassVar[str]

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.type}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _encode_value(getattr(self, f.name))
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)


def _encode_value(value: object) -> object:
    if isinstance(value, AudioFormat | TurnLatency | ProtocolLimits):
        return value.to_dict()
    return value


@dataclass(frozen=True, slots=True)
class SessionStarted(ServerEvent):
    session: str
    input: AudioFormat
    output: AudioFormat
    fallback: AudioFormat | None
    limits: ProtocolLimits

    type: ClassVar[str] = "session.started"

    def to_dict(self) -> dict[str, object]:
        # Mirrors session.start: the fallback is part of the output object.
        output: dict[str, object] = self.output.to_dict()
        output["fallback"] = None if self.fallback is None else self.fallback.to_dict()
        return {
            "type": self.type,
            "session": self.session,
            "input": self.input.to_dict(),
            "output": output,
            "limits": self.limits.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class SpeechStarted(ServerEvent):
    turn: int
    audio_start_ms: int  # position in the session's input audio

    type: ClassVar[str] = "speech.started"


@dataclass(frozen=True, slots=True)
class SpeechStopped(ServerEvent):
    turn: int
    audio_end_ms: int

    type: ClassVar[str] = "speech.stopped"


@dataclass(frozen=True, slots=True)
class TranscriptPartial(ServerEvent):
    turn: int
    text: str  # the whole provisional transcript of the turn so far, not a delta

    type: ClassVar[str] = "transcript.partial"


@dataclass(frozen=True, slots=True)
class TranscriptFinal(ServerEvent):
    turn: int
    text: str

    type: ClassVar[str] = "transcript.final"


@dataclass(frozen=True, slots=True)
class ResponseStarted(ServerEvent):
    turn: int

    type: ClassVar[str] = "response.started"


@dataclass(frozen=True, slots=True)
class ResponseTextDelta(ServerEvent):
    turn: int
    delta: str

    type: ClassVar[str] = "response.text.delta"


@dataclass(frozen=True, slots=True)
class ResponseAudioStarted(ServerEvent):
    turn: int
    encoding: Encoding
    sample_rate: int

    type: ClassVar[str] = "response.audio.started"

    def __post_init__(self) -> None:
        AudioFormat(self.encoding, self.sample_rate)

    @property
    def format(self) -> AudioFormat:
        return AudioFormat(self.encoding, self.sample_rate)


@dataclass(frozen=True, slots=True)
class ResponseDone(ServerEvent):
    turn: int
    text: str  # the whole answer text
    audio_ms: float  # playing time of the answer audio sent
    speculative: bool  # the answer was started before the end of the turn was decided
    latency_ms: TurnLatency

    type: ClassVar[str] = "response.done"


@dataclass(frozen=True, slots=True)
class ResponseCancelled(ServerEvent):
    turn: int
    reason: str  # one of CANCEL_REASONS

    type: ClassVar[str] = "response.cancelled"


CANCEL_REASONS: Final[tuple[str, ...]] = ("barge_in", "session_end", "shutdown", "error")


@dataclass(frozen=True, slots=True)
class OutputDegraded(ServerEvent):
    """From now on the answer audio comes in the client's fallback format."""

    encoding: Encoding
    sample_rate: int
    reason: str

    type: ClassVar[str] = "output.degraded"

    def __post_init__(self) -> None:
        AudioFormat(self.encoding, self.sample_rate)

    @property
    def format(self) -> AudioFormat:
        return AudioFormat(self.encoding, self.sample_rate)


@dataclass(frozen=True, slots=True)
class ErrorEvent(ServerEvent):
    code: str  # an ErrorCode value; clients must accept codes they do not know
    message: str
    fatal: bool  # the server closes the connection right after this event

    type: ClassVar[str] = "error"


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event type this version does not know; clients skip it."""

    type: str
    payload: dict[str, Any]


EVENT_TYPES: Final[dict[str, type[ServerEvent]]] = {
    cls.type: cls
    for cls in (
        SessionStarted,
        SpeechStarted,
        SpeechStopped,
        TranscriptPartial,
        TranscriptFinal,
        ResponseStarted,
        ResponseTextDelta,
        ResponseAudioStarted,
        ResponseDone,
        ResponseCancelled,
        OutputDegraded,
        ErrorEvent,
    )
}


def _decode_format(value: object, where: str) -> AudioFormat:
    if not isinstance(value, dict):
        raise EventFormatError(f"{where} must be an object")
    try:
        return AudioFormat(Encoding(value.get("encoding")), value.get("sample_rate"))  # type: ignore[arg-type]
    except ValueError as exc:
        raise EventFormatError(f"{where}: {exc}") from None


def _decode_field(kind: str, name: str, hint: object, value: object) -> object:
    where = f"{kind}.{name}"
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EventFormatError(f"{where} must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EventFormatError(f"{where} must be a number")
        return float(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise EventFormatError(f"{where} must be a boolean")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise EventFormatError(f"{where} must be a string")
        return value
    if hint is Encoding:
        try:
            return Encoding(str(value))
        except ValueError:
            raise EventFormatError(f"{where}: unknown encoding {value!r}") from None
    if hint is TurnLatency:
        return TurnLatency.from_dict(value)
    if hint is AudioFormat:
        return _decode_format(value, where)
    raise AssertionError(f"no decoder for {where}: {hint!r}")


def _decode_session_started(payload: dict[str, Any]) -> SessionStarted:
    session = payload.get("session")
    if not isinstance(session, str):
        raise EventFormatError("session.started.session must be a string")
    output = payload.get("output")
    fallback = output.get("fallback") if isinstance(output, dict) else None
    limits = payload.get("limits")
    if not isinstance(limits, dict):
        raise EventFormatError("session.started.limits must be an object")
    try:
        parsed_limits = ProtocolLimits(
            max_message_bytes=limits.get("max_message_bytes"),  # type: ignore[arg-type]
            max_text_chars=limits.get("max_text_chars"),  # type: ignore[arg-type]
        )
    except ValueError as exc:
        raise EventFormatError(f"session.started.limits: {exc}") from None
    return SessionStarted(
        session=session,
        input=_decode_format(payload.get("input"), "session.started.input"),
        output=_decode_format(output, "session.started.output"),
        fallback=None
        if fallback is None
        else _decode_format(fallback, "session.started.output.fallback"),
        limits=parsed_limits,
    )


def parse_server_event(text: str) -> ServerEvent | UnknownEvent:
    """The event in a server text message; `EventFormatError` if it is malformed."""
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise EventFormatError(f"server text message is not valid JSON ({exc})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise EventFormatError("server text message must be a JSON object with a string 'type'")
    kind: str = payload["type"]
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        return UnknownEvent(kind, payload)
    if cls is SessionStarted:
        return _decode_session_started(payload)
    hints = get_type_hints(cls)
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in payload:
            raise EventFormatError(f"{kind}: missing field '{f.name}'")
        values[f.name] = _decode_field(kind, f.name, hints[f.name], payload[f.name])
    try:
        return cls(**values)
    except ValueError as exc:
        raise EventFormatError(f"{kind}: {exc}") from None
