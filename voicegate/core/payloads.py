"""Payload codecs: one encoder and one decoder for every record kind that carries a payload.

``kinds.py`` says what a record is; this module says what its payload bytes mean. Every
decoder takes the payload as the ring hands it (any buffer) and raises ``ValueError``
naming the kind and the field when the bytes cannot be that kind's payload, so a stage
fails one session's turn with a readable reason instead of a traceback.

Formats, by kind:

- ``AUDIO_IN``, ``AUDIO_OUT``: bare mono samples, no header. The encoding and the rate are
  the session's, said once out of band: ``AUDIO_IN`` from the gateway to VAD is the
  client's bytes as received, in the session's input format (PCM16 little-endian or
  G.711 mu-law, 8-48 kHz, from SESSION_OPEN); ``AUDIO_IN`` from VAD to STT is always
  16 kHz PCM16 little-endian; ``AUDIO_OUT`` is in the session's output format (SESSION_OPEN,
  then OUTPUT_FORMAT).
- ``TRANSCRIPT_PARTIAL``, ``TRANSCRIPT_FINAL``, ``LLM_TOKEN``, ``TEXT_INPUT``: UTF-8 text.
- ``VAD_EVENT``, ``ERROR``, ``WORKER_RESTARTED``, ``DRAIN``: fixed little-endian structs
  (cheap, and read on every turn or by the supervisor's hot path).
- ``SESSION_OPEN``, ``OUTPUT_FORMAT``, ``TURN_TIMING``, ``SESSION_UPDATE``, ``TRUNCATE``,
  ``AUDIO_MARK``: UTF-8 JSON objects, because they are structures that grow fields
  (session parameters and options, latency marks) and are sent once per session, request
  or turn.
- ``PLAYBACK``: one byte, 1 the gateway started sending an answer, 0 it finished.

``CODECS`` maps every kind with a payload to its codec; ``NO_PAYLOAD`` lists the others.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, Generic, TypeVar

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

from voicegate.core import codec
from voicegate.core.codec import AudioFormat, Encoding
from voicegate.core.kinds import Kind

_E = TypeVar("_E", bound=IntEnum)
_T = TypeVar("_T")
Pcm16 = npt.NDArray[np.int16]

# -- helpers --------------------------------------------------------------------------


def _bytes(payload: Buffer) -> memoryview:
    return memoryview(payload).cast("B")


def _unpack(fmt: struct.Struct, payload: Buffer, kind: Kind) -> tuple[int, ...]:
    view = _bytes(payload)
    if len(view) != fmt.size:
        raise ValueError(f"{kind.name} payload is {len(view)} bytes, expected {fmt.size}")
    return tuple(int(v) for v in fmt.unpack(view))


def _enum(cls: type[_E], value: int, kind: Kind, field: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        raise ValueError(f"{kind.name} payload: {field} {value} is not a {cls.__name__}") from None


def _utf8(payload: Buffer, kind: Kind, field: str) -> str:
    try:
        return bytes(_bytes(payload)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{kind.name} payload: {field} is not UTF-8 ({exc.reason} at byte "
                         f"{exc.start})") from None


def _json_object(payload: Buffer, kind: Kind) -> dict[str, Any]:
    try:
        doc = json.loads(_utf8(payload, kind, "JSON text"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{kind.name} payload is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{kind.name} payload: must be a JSON object")
    return doc


def _json(doc: Mapping[str, object]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


# -- text -----------------------------------------------------------------------------

TEXT_KINDS: Final[frozenset[Kind]] = frozenset(
    {Kind.TRANSCRIPT_PARTIAL, Kind.TRANSCRIPT_FINAL, Kind.LLM_TOKEN, Kind.TEXT_INPUT}
)


def encode_text(text: str) -> bytes:
    """The payload of a text kind (TRANSCRIPT_PARTIAL/FINAL, LLM_TOKEN, TEXT_INPUT)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate cannot be UTF-8
        raise ValueError(f"text payload: text is not encodable as UTF-8 ({exc.reason})") from None


def decode_text(kind: Kind, payload: Buffer) -> str:
    """The text of a text kind's payload; invalid UTF-8 is a ValueError naming the kind."""
    return _utf8(payload, kind, "text")


# -- audio ----------------------------------------------------------------------------

AUDIO_KINDS: Final[frozenset[Kind]] = frozenset({Kind.AUDIO_IN, Kind.AUDIO_OUT})


def encode_audio(samples: Pcm16, encoding: Encoding) -> Buffer:
    """The payload of AUDIO_IN/AUDIO_OUT: ``samples`` in ``encoding``. PCM16 of native
    little-endian contiguous samples is a view, not a copy (VAD forwards every utterance)."""
    if samples.dtype != np.int16:
        raise ValueError(f"audio payload: samples must be int16, got {samples.dtype}")
    if (
        encoding is Encoding.PCM16
        and samples.dtype.byteorder in ("=", "<")
        and np.little_endian
        and samples.flags.c_contiguous
    ):
        return samples.reshape(-1).data.cast("B")
    return codec.encode(samples, encoding)


def decode_audio(kind: Kind, payload: Buffer, encoding: Encoding) -> Pcm16:
    """The samples of an AUDIO_IN/AUDIO_OUT payload in ``encoding`` (a copy: the payload
    lives in the ring only during the call)."""
    view = _bytes(payload)
    if len(view) % encoding.bytes_per_sample:
        raise ValueError(
            f"{kind.name} payload: {len(view)} bytes is not a whole number of "
            f"{encoding.value} samples"
        )
    return codec.decode(view, encoding)


# -- VAD_EVENT ------------------------------------------------------------------------


class VadEventType(IntEnum):
    SPEECH_START = 1
    SPEECH_PAUSE = 2  # silence began: the turn may be over; speculation may start
    SPEECH_RESUME = 3  # the pause ended in more speech: speculation is void
    END_OF_TURN = 4  # the silence lasted long enough: the turn is over


@dataclass(frozen=True, slots=True)
class VadEvent:
    """Payload of a VAD_EVENT record."""

    event: VadEventType
    at_sample: int  # position in the session's input stream, in samples at 16 kHz

    _FORMAT = struct.Struct("<H6xq")

    def pack(self) -> bytes:
        try:
            return self._FORMAT.pack(self.event, self.at_sample)
        except struct.error as exc:
            raise ValueError(
                f"VAD_EVENT payload: event or at_sample out of range ({exc})"
            ) from None

    @classmethod
    def unpack(cls, payload: Buffer) -> VadEvent:
        event, at_sample = _unpack(cls._FORMAT, payload, Kind.VAD_EVENT)
        return cls(_enum(VadEventType, event, Kind.VAD_EVENT, "event"), at_sample)


# -- ERROR, WORKER_RESTARTED, DRAIN ---------------------------------------------------


class StageId(IntEnum):
    """Process roles named in control payloads."""

    GATEWAY = 0
    VAD = 1
    STT = 2
    LLM = 3
    TTS = 4

    @classmethod
    def from_name(cls, name: str) -> StageId:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown stage name {name!r}") from None


class TurnErrorCode(IntEnum):
    """Why a turn failed inside the pipeline (the ring's ERROR record; the WebSocket
    protocol's own codes are ``server.protocol.ErrorCode``)."""

    INTERNAL = 1  # a stage failed on this turn
    WORKER_RESTARTED = 2  # a worker serving the turn died and was replaced
    OVERLOADED = 3  # the node shed the turn to protect the others
    BAD_INPUT = 4  # the caller's input could not be used
    TIMEOUT = 5  # the turn took longer than allowed


@dataclass(frozen=True, slots=True)
class TurnError:
    """Payload of an ERROR record. ``detail`` is for operators: never audio or text of
    the conversation."""

    code: TurnErrorCode
    stage: StageId
    detail: str = ""

    _FORMAT = struct.Struct("<HH")

    def pack(self) -> bytes:
        try:
            detail = self.detail.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"ERROR payload: detail is not encodable as UTF-8 ({exc.reason})"
            ) from None
        return self._FORMAT.pack(self.code, self.stage) + detail

    @classmethod
    def unpack(cls, payload: Buffer) -> TurnError:
        view = _bytes(payload)
        size = cls._FORMAT.size
        code, stage = _unpack(cls._FORMAT, view[:size], Kind.ERROR)
        return cls(
            _enum(TurnErrorCode, code, Kind.ERROR, "code"),
            _enum(StageId, stage, Kind.ERROR, "stage"),
            _utf8(view[size:], Kind.ERROR, "detail"),
        )


class RestartReason(IntEnum):
    EXITED = 1  # the process ended (crash, kill -9, exit)
    UNRESPONSIVE = 2  # its heartbeat stopped; the supervisor killed it
    NOT_READY = 3  # it did not report ready in time; the supervisor killed it


@dataclass(frozen=True, slots=True)
class WorkerRestarted:
    """Payload of WORKER_RESTARTED, sent by the supervisor to every gateway as soon as a
    worker is found dead. Every session with a turn in flight fails that turn (an ERROR
    with ``TurnErrorCode.WORKER_RESTARTED``) and re-sends SESSION_OPEN with
    ``Flag.REOPEN`` and its next turn, which also re-introduces the session to the
    replacement worker."""

    stage: StageId
    generation: int  # starts of this worker so far; the replacement will be generation + 1
    pid: int  # the process that died
    reason: RestartReason
    exit_code: int  # the exit status, negative for a signal (as multiprocessing reports it)

    _FORMAT = struct.Struct("<HHIIi")

    def pack(self) -> bytes:
        try:
            return self._FORMAT.pack(
                self.stage, self.reason, self.generation, self.pid, self.exit_code
            )
        except struct.error as exc:
            raise ValueError(f"WORKER_RESTARTED payload: a field is out of range ({exc})") from None

    @classmethod
    def unpack(cls, payload: Buffer) -> WorkerRestarted:
        kind = Kind.WORKER_RESTARTED
        stage, reason, generation, pid, exit_code = _unpack(cls._FORMAT, payload, kind)
        return cls(
            _enum(StageId, stage, kind, "stage"),
            generation,
            pid,
            _enum(RestartReason, reason, kind, "reason"),
            exit_code,
        )


@dataclass(frozen=True, slots=True)
class DrainEvent:
    """Payload of DRAIN: admit no new sessions, let turns in flight finish until
    ``deadline_ns`` (CLOCK_MONOTONIC), then close the remaining sessions with 1001."""

    deadline_ns: int

    _FORMAT = struct.Struct("<q")

    def pack(self) -> bytes:
        try:
            return self._FORMAT.pack(self.deadline_ns)
        except struct.error as exc:
            raise ValueError(f"DRAIN payload: deadline_ns out of range ({exc})") from None

    @classmethod
    def unpack(cls, payload: Buffer) -> DrainEvent:
        (deadline_ns,) = _unpack(cls._FORMAT, payload, Kind.DRAIN)
        return cls(deadline_ns)


# -- PLAYBACK -------------------------------------------------------------------------

_PLAYING: Final[bytes] = b"\x01"
_STOPPED: Final[bytes] = b"\x00"


def encode_playback(playing: bool) -> bytes:
    """The PLAYBACK payload: the gateway started (True) or finished (False) an answer."""
    return _PLAYING if playing else _STOPPED


def decode_playback(payload: Buffer) -> bool:
    view = _bytes(payload)
    if len(view) != 1:
        raise ValueError(f"PLAYBACK payload is {len(view)} bytes, expected 1")
    if view[0] > 1:
        raise ValueError(f"PLAYBACK payload: playing {view[0]} is not 0 or 1")
    return view[0] == 1


# -- TURN_TIMING ----------------------------------------------------------------------

_TIMING_FIELDS: Final[tuple[str, ...]] = ("transcript_ns", "first_token_ns", "first_audio_ns")


@dataclass(frozen=True, slots=True)
class TurnTiming:
    """Payload of TURN_TIMING: when each stage first produced output for the turn
    (CLOCK_MONOTONIC ns, 0 when not reached yet). LLM sends the first two, TTS adds
    ``first_audio_ns`` and sends the whole to the gateway.

    JSON ``{"transcript_ns", "first_token_ns", "first_audio_ns"}``: missing marks are 0
    and unknown ones are ignored, so a stage that adds a mark needs no lockstep upgrade."""

    transcript_ns: int = 0
    first_token_ns: int = 0
    first_audio_ns: int = 0

    def pack(self) -> bytes:
        doc: dict[str, int] = {}
        for name in _TIMING_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TURN_TIMING payload: {name} {value!r} is not an integer >= 0")
            doc[name] = value
        return _json(doc)

    @classmethod
    def unpack(cls, payload: Buffer) -> TurnTiming:
        doc = _json_object(payload, Kind.TURN_TIMING)
        marks: list[int] = []
        for name in _TIMING_FIELDS:
            value = doc.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TURN_TIMING payload: {name} {value!r} is not an integer >= 0")
            marks.append(value)
        return cls(*marks)


# -- SESSION_OPEN, OUTPUT_FORMAT ------------------------------------------------------


def _format_doc(doc: object, where: str) -> AudioFormat:
    """An ``{"encoding", "sample_rate"}`` object as an AudioFormat."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: must be an object with encoding and sample_rate")
    try:
        encoding = Encoding(str(doc.get("encoding")))
    except ValueError:
        raise ValueError(
            f"{where}.encoding: {doc.get('encoding')!r} is not one of "
            f"{', '.join(e.value for e in Encoding)}"
        ) from None
    rate = doc.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ValueError(f"{where}.sample_rate: {rate!r} is not an integer")
    try:
        return AudioFormat(encoding, rate)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


@dataclass(frozen=True, slots=True)
class SessionParams:
    """The SESSION_OPEN payload: ``{"input": {"encoding", "sample_rate"}, "output":
    {"encoding", "sample_rate"}, "instructions": str | null}``. Opaque to the runtime;
    the stages read it."""

    input: AudioFormat
    output: AudioFormat
    instructions: str | None

    def pack(self) -> bytes:
        return _json(
            {
                "input": self.input.to_dict(),
                "output": self.output.to_dict(),
                "instructions": self.instructions,
            }
        )

    @classmethod
    def unpack(cls, payload: Buffer) -> SessionParams:
        doc = _json_object(payload, Kind.SESSION_OPEN)
        instructions = doc.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise ValueError("SESSION_OPEN payload: instructions must be a string or null")
        return cls(
            _format_doc(doc.get("input"), "SESSION_OPEN payload: input"),
            _format_doc(doc.get("output"), "SESSION_OPEN payload: output"),
            instructions or None,
        )

    @classmethod
    def unpack_or_default(cls, payload: Buffer) -> tuple[SessionParams, str | None]:
        """The parameters, or PCM16 16 kHz both ways and the reason when the payload is
        bad: a stage must not die of one session's input (the gateway checks it first;
        VAD reports the problem as that session's ERROR)."""
        try:
            return cls.unpack(payload), None
        except ValueError as exc:
            fallback = AudioFormat(Encoding.PCM16, 16000)
            return cls(fallback, fallback, None), str(exc)


def encode_output_format(fmt: AudioFormat) -> bytes:
    """The OUTPUT_FORMAT payload: JSON ``{"encoding", "sample_rate"}``."""
    return _json(fmt.to_dict())


def decode_output_format(payload: Buffer) -> AudioFormat:
    return _format_doc(_json_object(payload, Kind.OUTPUT_FORMAT), "OUTPUT_FORMAT payload")


# -- session options ------------------------------------------------------------------
# Records of the Realtime front end (docs/pipeline.md, "Session options"). JSON payloads:
# they are rare (one per client request), and JSON keeps them readable in a capture.

RESPOND_MODES: Final[tuple[str, ...]] = ("audio", "text", "none")
TURN_DETECTION_MODES: Final[tuple[str, ...]] = ("server", "manual")


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """Payload of SESSION_UPDATE: the session's full effective options (a field missing
    from the payload takes its default, so ``{}`` is today's behaviour).

    ``instructions`` None keeps the instructions SESSION_OPEN gave (or the bundle's
    system prompt); a string replaces them, "" meaning the bundle's system prompt.
    ``vad_threshold``, ``prefix_padding_ms`` and ``silence_duration_ms`` None keep the
    node's VAD settings. ``audio_marks`` asks TTS for AUDIO_MARK records (truncation)."""

    respond: str = "audio"
    max_output_tokens: int | None = None
    voice: str | None = None
    instructions: str | None = None
    turn_detection: str = "server"
    vad_threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    auto_respond: bool = True
    audio_marks: bool = False

    def __post_init__(self) -> None:
        _choice(self.respond, RESPOND_MODES, "respond")
        _choice(self.turn_detection, TURN_DETECTION_MODES, "turn_detection")
        _optional_int(self.max_output_tokens, "max_output_tokens", 1)
        _optional_int(self.prefix_padding_ms, "prefix_padding_ms", 0)
        _optional_int(self.silence_duration_ms, "silence_duration_ms", 0)
        for name in ("voice", "instructions"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"SESSION_UPDATE payload: {name} must be a string or null")
        threshold = self.vad_threshold
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not 0.0 < threshold < 1.0
        ):
            raise ValueError(
                f"SESSION_UPDATE payload: vad_threshold {threshold!r} is not a number in (0, 1)"
            )
        for name in ("auto_respond", "audio_marks"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"SESSION_UPDATE payload: {name} must be true or false")

    def to_payload(self) -> bytes:
        doc = {name: getattr(self, name) for name in _SESSION_OPTION_FIELDS}
        return _json(doc)

    @classmethod
    def from_payload(cls, payload: Buffer) -> SessionOptions:
        doc = _json_object(payload, Kind.SESSION_UPDATE)
        unknown = sorted(set(doc) - set(_SESSION_OPTION_FIELDS))
        if unknown:
            raise ValueError(f"SESSION_UPDATE payload: unknown field {unknown[0]!r}")
        return cls(**doc)


_SESSION_OPTION_FIELDS: Final[tuple[str, ...]] = (
    "respond",
    "max_output_tokens",
    "voice",
    "instructions",
    "turn_detection",
    "vad_threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "auto_respond",
    "audio_marks",
)


@dataclass(frozen=True, slots=True)
class Truncation:
    """Payload of TRUNCATE: the caller heard only the first ``text_chars`` characters of
    the answer of turn ``turn`` (the header's turn is the gateway's current one, so the
    record is never stale). The gateway finds ``text_chars`` from the AUDIO_MARKs of that
    answer with ``heard_chars``."""

    turn: int
    text_chars: int

    def __post_init__(self) -> None:
        _optional_int(self.turn, "turn", 0, Kind.TRUNCATE)
        _optional_int(self.text_chars, "text_chars", 0, Kind.TRUNCATE)

    def to_payload(self) -> bytes:
        return _json({"turn": self.turn, "text_chars": self.text_chars})

    @classmethod
    def from_payload(cls, payload: Buffer) -> Truncation:
        turn, text_chars = _fields(payload, Kind.TRUNCATE, ("turn", "text_chars"))
        return cls(turn, text_chars)


@dataclass(frozen=True, slots=True)
class AudioMark:
    """Payload of AUDIO_MARK (tts -> gateway, after the frames of each spoken clause when
    the session asked for ``audio_marks``): the answer's audio up to ``audio_ms`` (from
    its first frame, in the session's output) speaks its text up to ``text_chars``
    characters of the LLM_TOKEN text."""

    audio_ms: int
    text_chars: int

    def __post_init__(self) -> None:
        _optional_int(self.audio_ms, "audio_ms", 0, Kind.AUDIO_MARK)
        _optional_int(self.text_chars, "text_chars", 0, Kind.AUDIO_MARK)

    def to_payload(self) -> bytes:
        return _json({"audio_ms": self.audio_ms, "text_chars": self.text_chars})

    @classmethod
    def from_payload(cls, payload: Buffer) -> AudioMark:
        audio_ms, text_chars = _fields(payload, Kind.AUDIO_MARK, ("audio_ms", "text_chars"))
        return cls(audio_ms, text_chars)


def heard_chars(marks: Iterable[AudioMark], audio_end_ms: int) -> int:
    """How much of an answer's text the caller heard when its audio stopped at
    ``audio_end_ms``: the text of the clauses whose audio was played to the end."""
    heard = 0
    for mark in marks:
        if mark.audio_ms <= audio_end_ms:
            heard = max(heard, mark.text_chars)
    return heard


def _fields(payload: Buffer, kind: Kind, names: tuple[str, ...]) -> list[Any]:
    doc = _json_object(payload, kind)
    if set(doc) != set(names):
        raise ValueError(f"{kind.name} payload: needs exactly the fields {' and '.join(names)}")
    return [doc[name] for name in names]


def _choice(value: object, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(
            f"SESSION_UPDATE payload: {name} {value!r} is not one of {', '.join(choices)}"
        )


def _optional_int(
    value: object, name: str, minimum: int, kind: Kind = Kind.SESSION_UPDATE
) -> None:
    if value is None and kind is Kind.SESSION_UPDATE:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{kind.name} payload: {name} {value!r} is not an integer >= {minimum}")


# -- the registry ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec(Generic[_T]):
    """The encoder and the decoder of one kind's payload."""

    kind: Kind
    encode: Callable[[_T], Buffer]
    decode: Callable[[Buffer], _T]


@dataclass(frozen=True, slots=True)
class AudioCodec:
    """Audio payloads need the session's encoding, which travels out of band."""

    kind: Kind

    def encode(self, samples: Pcm16, encoding: Encoding) -> Buffer:
        return encode_audio(samples, encoding)

    def decode(self, payload: Buffer, encoding: Encoding) -> Pcm16:
        return decode_audio(self.kind, payload, encoding)


def _text_codec(kind: Kind) -> Codec[str]:
    return Codec(kind, encode_text, lambda payload: decode_text(kind, payload))


# Control kinds whose meaning is all in the header.
NO_PAYLOAD: Final[frozenset[Kind]] = frozenset(
    {Kind.SESSION_CLOSE, Kind.COMMIT, Kind.CANCEL, Kind.BARGE_IN, Kind.RESPONSE_CREATE}
)

CODECS: Final[Mapping[Kind, Codec[Any] | AudioCodec]] = {
    Kind.AUDIO_IN: AudioCodec(Kind.AUDIO_IN),
    Kind.AUDIO_OUT: AudioCodec(Kind.AUDIO_OUT),
    Kind.VAD_EVENT: Codec(Kind.VAD_EVENT, VadEvent.pack, VadEvent.unpack),
    **{kind: _text_codec(kind) for kind in TEXT_KINDS},
    Kind.TURN_TIMING: Codec(Kind.TURN_TIMING, TurnTiming.pack, TurnTiming.unpack),
    Kind.SESSION_OPEN: Codec(Kind.SESSION_OPEN, SessionParams.pack, SessionParams.unpack),
    Kind.ERROR: Codec(Kind.ERROR, TurnError.pack, TurnError.unpack),
    Kind.WORKER_RESTARTED: Codec(
        Kind.WORKER_RESTARTED, WorkerRestarted.pack, WorkerRestarted.unpack
    ),
    Kind.DRAIN: Codec(Kind.DRAIN, DrainEvent.pack, DrainEvent.unpack),
    Kind.PLAYBACK: Codec(Kind.PLAYBACK, encode_playback, decode_playback),
    Kind.OUTPUT_FORMAT: Codec(Kind.OUTPUT_FORMAT, encode_output_format, decode_output_format),
    Kind.SESSION_UPDATE: Codec(
        Kind.SESSION_UPDATE, SessionOptions.to_payload, SessionOptions.from_payload
    ),
    Kind.TRUNCATE: Codec(Kind.TRUNCATE, Truncation.to_payload, Truncation.from_payload),
    Kind.AUDIO_MARK: Codec(Kind.AUDIO_MARK, AudioMark.to_payload, AudioMark.from_payload),
}
