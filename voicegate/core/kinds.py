"""Message kinds, record flags and the small payload formats every stage shares.

The header layout itself lives in ``layout.py``; this module says what the ``kind``,
``flags`` and ``session`` fields of that header mean.

Kinds below ``CONTROL_BASE`` are data: they belong to a turn and are dropped when the
turn is no longer current. Kinds from ``CONTROL_BASE`` up are control. Control travels in
the same rings as data, in order, so a cancel that overtakes nothing still flushes every
record of the old turn behind it.

Session ids carry their gateway: the top ``GATEWAY_BITS`` bits name the gateway process
that owns the session, so the last stage routes answer audio back without a lookup and a
restarted worker needs no routing table.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any, Final, TypeVar

from typing_extensions import Buffer

from voicegate.core.layout import MAX_KIND

CONTROL_BASE: Final[int] = 0x1000
_E = TypeVar("_E", bound=IntEnum)


class Kind(IntEnum):
    """What a record carries."""

    # Data: belongs to the turn in the header.
    AUDIO_IN = 0x0001  # caller audio: PCM16 mono frame (gateway -> vad -> stt)
    VAD_EVENT = 0x0002  # speech start, pause, resume, end of turn (vad -> stt); VadEvent payload
    TRANSCRIPT_PARTIAL = 0x0003  # provisional transcript text, UTF-8 (stt -> llm)
    TRANSCRIPT_FINAL = 0x0004  # final transcript of the turn, UTF-8 (stt -> llm)
    LLM_TOKEN = 0x0005  # decoded answer text, UTF-8 (llm -> tts)
    AUDIO_OUT = 0x0006  # answer audio in the session's output format (tts -> gateway)
    TEXT_INPUT = 0x0007  # the caller typed a turn, UTF-8 (gateway -> vad, which gives it a turn)
    TURN_TIMING = 0x0008  # when each stage first produced output for the turn (tts -> gateway)
    # Control: session lifecycle and turn boundaries, in order with the data.
    SESSION_OPEN = 0x1001  # payload: session parameters, opaque to the runtime
    SESSION_CLOSE = 0x1002
    COMMIT = 0x1003  # the caller ended the turn explicitly
    CANCEL = 0x1004  # the turn in the header becomes current; older turns are stale
    BARGE_IN = 0x1005  # the caller spoke over the answer; the header's turn becomes current
    ERROR = 0x1006  # the turn in the header failed; ErrorEvent payload
    # Supervisor -> gateway only.
    WORKER_RESTARTED = 0x1010  # WorkerRestarted payload
    DRAIN = 0x1011  # stop admitting sessions; DrainEvent payload
    # Gateway -> pipeline, forwarded by every stage.
    PLAYBACK = 0x1020  # one byte: 1 the gateway started sending an answer, 0 it finished
    OUTPUT_FORMAT = 0x1021  # the session's output format changed (slow-client degrade); JSON
    # Session options (the Realtime front end); gateway -> pipeline, forwarded by every stage.
    SESSION_UPDATE = 0x1022  # SessionOptions JSON: applies from the next turn
    RESPONSE_CREATE = 0x1023  # answer now from the conversation as it stands (VAD numbers it)
    TRUNCATE = 0x1024  # Truncation JSON: keep only the heard part of an answer in history
    # TTS -> gateway: where a clause's audio ends in the answer text (for TRUNCATE);
    # AudioMark JSON. Control, so that it adds nothing to what stages drop as stale.
    AUDIO_MARK = 0x1025


assert max(Kind) <= MAX_KIND


def is_control(kind: int) -> bool:
    """True for control kinds, which are never dropped as stale."""
    return kind >= CONTROL_BASE


def kind_name(kind: int) -> str:
    """Readable name of a kind for logs; unknown values are shown in hex."""
    try:
        return Kind(kind).name
    except ValueError:
        return f"0x{kind:04x}"


class Flag(IntFlag):
    """Bits of the header's ``flags`` field."""

    # The last 8 payload bytes are the producer's send time (little-endian int64,
    # CLOCK_MONOTONIC ns), so the consumer measures how long the record waited in the
    # ring. The worker runtime adds and strips the stamp; stages never see it.
    STAMPED = 0x0001
    # The last record of its kind in this turn (final token, last chunk of answer audio).
    LAST = 0x0002
    # Speculative content that a later record of the same turn may replace.
    PROVISIONAL = 0x0004
    # A SESSION_OPEN sent again for a live session after a worker restart: stages that
    # know the session only move to the header's turn, keeping their session state.
    REOPEN = 0x0008
    # On CANCEL: the caller's utterance goes on under the new turn (a void speculation),
    # so STT keeps the audio it has; without it a new utterance starts.
    CONTINUE = 0x0010
    # On TEXT_INPUT (and the TRANSCRIPT_FINAL STT makes of it): add the text to the
    # conversation without answering it (Realtime's conversation.item.create).
    ITEM_ONLY = 0x0020


@dataclass(slots=True)
class Message:
    """A typed view of one record, as a stage sees it.

    ``payload`` points into the ring's shared memory and is only valid during the call
    that received it: copy what you keep."""

    kind: int
    flags: int
    session: int
    turn: int
    seq: int
    origin_ns: int  # when the originating audio entered the gateway (CLOCK_MONOTONIC)
    payload: memoryview  # without the send stamp
    sent_ns: int  # when the upstream process wrote it; 0 when it carried no stamp

    def __repr__(self) -> str:
        # Never the payload: it may be audio or conversation text.
        return (
            f"Message({kind_name(self.kind)}, session={self.session}, turn={self.turn}, "
            f"seq={self.seq}, flags={self.flags:#x}, {len(self.payload)} bytes)"
        )


# -- session ids ----------------------------------------------------------------------

GATEWAY_BITS: Final[int] = 8
LOCAL_BITS: Final[int] = 32 - GATEWAY_BITS
MAX_GATEWAYS: Final[int] = 1 << GATEWAY_BITS
MAX_LOCAL_SESSION: Final[int] = (1 << LOCAL_BITS) - 1


def session_id(gateway: int, local: int) -> int:
    """The 32-bit session id of the ``local``-th session of gateway ``gateway``."""
    if not 0 <= gateway < MAX_GATEWAYS:
        raise ValueError(f"gateway index {gateway} is outside 0..{MAX_GATEWAYS - 1}")
    if not 0 <= local <= MAX_LOCAL_SESSION:
        raise ValueError(f"local session number {local} is outside 0..{MAX_LOCAL_SESSION}")
    return (gateway << LOCAL_BITS) | local


def gateway_of(session: int) -> int:
    """Index of the gateway that owns ``session``."""
    return session >> LOCAL_BITS


def local_of(session: int) -> int:
    """The gateway-local part of ``session``."""
    return session & MAX_LOCAL_SESSION


# -- send stamps ----------------------------------------------------------------------

STAMP: Final[struct.Struct] = struct.Struct("<q")
STAMP_SIZE: Final[int] = STAMP.size


def stamp_buffer(payload: Buffer) -> bytearray:
    """A copy of ``payload`` with room for the send stamp at the end; fill it with
    ``set_stamp`` just before the record is written."""
    view = memoryview(payload).cast("B")
    buf = bytearray(len(view) + STAMP_SIZE)
    buf[: len(view)] = view
    return buf


def set_stamp(buf: bytearray, sent_ns: int) -> None:
    """Write the send time into a buffer made by ``stamp_buffer``."""
    STAMP.pack_into(buf, len(buf) - STAMP_SIZE, sent_ns)


def split_stamp(payload: memoryview, flags: int) -> tuple[memoryview, int]:
    """The stage-visible payload and the send time (0 when the record is not stamped)."""
    if not flags & Flag.STAMPED:
        return payload, 0
    if len(payload) < STAMP_SIZE:
        raise ValueError(
            f"record flagged STAMPED has a {len(payload)}-byte payload, "
            f"shorter than the {STAMP_SIZE}-byte stamp"
        )
    body_len = len(payload) - STAMP_SIZE
    (sent_ns,) = STAMP.unpack_from(payload, body_len)
    return payload[:body_len], int(sent_ns)


# -- payloads of control and event records ------------------------------------------


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
        return self._FORMAT.pack(self.event, self.at_sample)

    @classmethod
    def unpack(cls, payload: Buffer) -> VadEvent:
        event, at_sample = _unpack(cls._FORMAT, payload, "VAD_EVENT")
        return cls(_enum(VadEventType, event, "VAD_EVENT", "event"), at_sample)


class ErrorCode(IntEnum):
    INTERNAL = 1  # a stage failed on this turn
    WORKER_RESTARTED = 2  # a worker serving the turn died and was replaced
    OVERLOADED = 3  # the node shed the turn to protect the others
    BAD_INPUT = 4  # the caller's input could not be used
    TIMEOUT = 5  # the turn took longer than allowed


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Payload of an ERROR record. ``detail`` is for operators: never audio or text of
    the conversation."""

    code: ErrorCode
    stage: StageId
    detail: str = ""

    _FORMAT = struct.Struct("<HH")

    def pack(self) -> bytes:
        return self._FORMAT.pack(self.code, self.stage) + self.detail.encode()

    @classmethod
    def unpack(cls, payload: Buffer) -> ErrorEvent:
        view = memoryview(payload).cast("B")
        code, stage = _unpack(cls._FORMAT, view[: cls._FORMAT.size], "ERROR")
        try:
            detail = bytes(view[cls._FORMAT.size :]).decode()
        except UnicodeDecodeError as exc:
            raise ValueError(f"ERROR payload: detail is not UTF-8 ({exc})") from None
        return cls(
            _enum(ErrorCode, code, "ERROR", "code"), _enum(StageId, stage, "ERROR", "stage"), detail
        )


class RestartReason(IntEnum):
    EXITED = 1  # the process ended (crash, kill -9, exit)
    UNRESPONSIVE = 2  # its heartbeat stopped; the supervisor killed it
    NOT_READY = 3  # it did not report ready in time; the supervisor killed it


@dataclass(frozen=True, slots=True)
class WorkerRestarted:
    """Payload of WORKER_RESTARTED, sent by the supervisor to every gateway as soon as a
    worker is found dead. Every session with a turn in flight fails that turn (an ERROR
    with ``ErrorCode.WORKER_RESTARTED``) and re-sends SESSION_OPEN with ``Flag.REOPEN`` and
    its next turn, which also re-introduces the session to the replacement worker."""

    stage: StageId
    generation: int  # starts of this worker so far; the replacement will be generation + 1
    pid: int  # the process that died
    reason: RestartReason
    exit_code: int  # the exit status, negative for a signal (as multiprocessing reports it)

    _FORMAT = struct.Struct("<HHIIi")

    def pack(self) -> bytes:
        return self._FORMAT.pack(self.stage, self.reason, self.generation, self.pid, self.exit_code)

    @classmethod
    def unpack(cls, payload: Buffer) -> WorkerRestarted:
        stage, reason, generation, pid, exit_code = _unpack(
            cls._FORMAT, payload, "WORKER_RESTARTED"
        )
        return cls(
            _enum(StageId, stage, "WORKER_RESTARTED", "stage"),
            generation,
            pid,
            _enum(RestartReason, reason, "WORKER_RESTARTED", "reason"),
            exit_code,
        )


@dataclass(frozen=True, slots=True)
class DrainEvent:
    """Payload of DRAIN: admit no new sessions, let turns in flight finish until
    ``deadline_ns`` (CLOCK_MONOTONIC), then close the remaining sessions with 1001."""

    deadline_ns: int

    _FORMAT = struct.Struct("<q")

    def pack(self) -> bytes:
        return self._FORMAT.pack(self.deadline_ns)

    @classmethod
    def unpack(cls, payload: Buffer) -> DrainEvent:
        (deadline_ns,) = _unpack(cls._FORMAT, payload, "DRAIN")
        return cls(deadline_ns)


def _unpack(fmt: struct.Struct, payload: Buffer, kind: str) -> tuple[int, ...]:
    view = memoryview(payload).cast("B")
    if len(view) != fmt.size:
        raise ValueError(f"{kind} payload is {len(view)} bytes, expected {fmt.size}")
    return tuple(int(v) for v in fmt.unpack(view))


def _enum(cls: type[_E], value: int, kind: str, field: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        raise ValueError(f"{kind} payload: {field} {value} is not a {cls.__name__}") from None


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
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_payload(cls, payload: Buffer) -> SessionOptions:
        doc = _json_object(payload, "SESSION_UPDATE")
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
        _optional_int(self.turn, "turn", 0, "TRUNCATE")
        _optional_int(self.text_chars, "text_chars", 0, "TRUNCATE")

    def to_payload(self) -> bytes:
        return json.dumps({"turn": self.turn, "text_chars": self.text_chars}).encode()

    @classmethod
    def from_payload(cls, payload: Buffer) -> Truncation:
        turn, text_chars = _fields(payload, "TRUNCATE", ("turn", "text_chars"))
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
        _optional_int(self.audio_ms, "audio_ms", 0, "AUDIO_MARK")
        _optional_int(self.text_chars, "text_chars", 0, "AUDIO_MARK")

    def to_payload(self) -> bytes:
        return json.dumps({"audio_ms": self.audio_ms, "text_chars": self.text_chars}).encode()

    @classmethod
    def from_payload(cls, payload: Buffer) -> AudioMark:
        audio_ms, text_chars = _fields(payload, "AUDIO_MARK", ("audio_ms", "text_chars"))
        return cls(audio_ms, text_chars)


def heard_chars(marks: Iterable[AudioMark], audio_end_ms: int) -> int:
    """How much of an answer's text the caller heard when its audio stopped at
    ``audio_end_ms``: the text of the clauses whose audio was played to the end."""
    heard = 0
    for mark in marks:
        if mark.audio_ms <= audio_end_ms:
            heard = max(heard, mark.text_chars)
    return heard


def _json_object(payload: Buffer, kind: str) -> dict[str, Any]:
    # Any: the dataclasses check every field's type themselves.
    try:
        doc = json.loads(bytes(memoryview(payload).cast("B")).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{kind} payload is not UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{kind} payload: must be a JSON object")
    return doc


def _fields(payload: Buffer, kind: str, names: tuple[str, ...]) -> list[Any]:
    doc = _json_object(payload, kind)
    if set(doc) != set(names):
        raise ValueError(f"{kind} payload: needs exactly the fields {' and '.join(names)}")
    return [doc[name] for name in names]


def _choice(value: object, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(
            f"SESSION_UPDATE payload: {name} {value!r} is not one of {', '.join(choices)}"
        )


def _optional_int(value: object, name: str, minimum: int, kind: str = "SESSION_UPDATE") -> None:
    if value is None and kind == "SESSION_UPDATE":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{kind} payload: {name} {value!r} is not an integer >= {minimum}")
