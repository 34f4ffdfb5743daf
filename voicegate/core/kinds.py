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

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Final, TypeVar

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

    # 0x0001 was STAMPED (a send stamp ending the payload); the send time is now the
    # header's ``sent_ns``, written by the ring. The bit stays unused.
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
