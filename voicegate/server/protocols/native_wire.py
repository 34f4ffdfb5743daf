"""The client side of the native WebSocket protocol at ``/v1/stream``: parsing and limits.

Every message a client may send is parsed here into a frozen dataclass, or refused with
a `ProtocolError` that carries the error code for the ``error`` event and the WebSocket
close code (docs/protocol.md has the full table). Unknown fields are rejected rather
than ignored: a misspelt ``"sample_rte"`` silently falling back to a default would give
the caller garbled audio instead of an error message.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import ClassVar, Final

from voicegate.core.codec import (
    FRAME_UNIT_MS,
    PCM16_16K,
    SUPPORTED_SAMPLE_RATES,
    AudioFormat,
    Encoding,
)
from voicegate.core.config import DEFAULT_LIMITS, ProtocolLimits

STREAM_PATH: Final[str] = "/v1/stream"


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # at capacity


class ErrorCode(enum.StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_FIELD = "invalid_field"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    UNSUPPORTED_SAMPLE_RATE = "unsupported_sample_rate"
    SESSION_NOT_STARTED = "session_not_started"
    SESSION_ALREADY_STARTED = "session_already_started"
    TEXT_TOO_LONG = "text_too_long"
    BAD_AUDIO_FRAME = "bad_audio_frame"
    MESSAGE_TOO_BIG = "message_too_big"
    SLOW_CLIENT = "slow_client"
    AT_CAPACITY = "at_capacity"
    SERVER_SHUTDOWN = "server_shutdown"
    INTERNAL_ERROR = "internal_error"
    BAD_INPUT = "bad_input"  # the pipeline could not use the session's input (non-fatal)
    RATE_LIMITED = "rate_limited"  # audio ahead of real time, or text.input too often
    TIMEOUT = "timeout"  # no session.start, or no message at all, within the limit
    TOO_MANY_CONNECTIONS = "too_many_connections"  # from this client address


class ProtocolError(Exception):
    """A client message the server refuses.

    `close_code` None means the message is dropped and the session goes on; otherwise
    the server sends the ``error`` event and closes the connection with that code.
    """

    def __init__(self, code: ErrorCode, close_code: CloseCode | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code
        self.message = message

    @property
    def fatal(self) -> bool:
        return self.close_code is not None

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.value!r}, {self.close_code!r}, {self.message!r})"




@dataclass(frozen=True, slots=True)
class SessionStart:
    input: AudioFormat = PCM16_16K
    output: AudioFormat = PCM16_16K
    # The cheaper output format the client accepts when it cannot keep up with `output`.
    fallback: AudioFormat | None = None
    instructions: str | None = None

    type: ClassVar[str] = "session.start"

    def to_dict(self) -> dict[str, object]:
        output: dict[str, object] = self.output.to_dict()
        if self.fallback is not None:
            output["fallback"] = self.fallback.to_dict()
        message: dict[str, object] = {
            "type": self.type,
            "input": self.input.to_dict(),
            "output": output,
        }
        if self.instructions is not None:
            message["instructions"] = self.instructions
        return message

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class TextInput:
    text: str

    type: ClassVar[str] = "text.input"

    def to_dict(self) -> dict[str, object]:
        return {"type": self.type, "text": self.text}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class SessionEnd:
    type: ClassVar[str] = "session.end"

    def to_dict(self) -> dict[str, object]:
        return {"type": self.type}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


ClientMessage = SessionStart | TextInput | SessionEnd


@dataclass(frozen=True, slots=True)
class AudioInput:
    """A binary client message: raw audio in the session's input format."""

    data: bytes = field(repr=False)
    duration_ms: int


def _policy(code: ErrorCode, message: str) -> ProtocolError:
    return ProtocolError(code, CloseCode.POLICY_VIOLATION, message)


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _Fields:
    """Typed access to one JSON object's fields; `done()` rejects what was not read."""

    def __init__(self, obj: dict[str, object], where: str) -> None:
        self._obj = obj
        self._where = where
        self._seen: set[str] = set()

    def path(self, name: str) -> str:
        return f"{self._where}.{name}"

    def _get(self, name: str, required: bool) -> object | None:
        self._seen.add(name)
        if name not in self._obj:
            if required:
                raise _policy(ErrorCode.MISSING_FIELD, f"missing field '{self.path(name)}'")
            return None
        return self._obj[name]

    def _wrong(self, name: str, want: str, value: object) -> ProtocolError:
        return _policy(
            ErrorCode.INVALID_FIELD,
            f"field '{self.path(name)}' must be {want}, got {json_type(value)}",
        )

    def string(self, name: str, *, required: bool) -> str | None:
        value = self._get(name, required)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise self._wrong(name, "a string", value)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _policy(
                ErrorCode.INVALID_FIELD, f"field '{self.path(name)}' is not valid Unicode"
            ) from None
        return value

    def integer(self, name: str) -> int | None:
        value = self._get(name, required=False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(name, "an integer", value)
        return value

    def obj(self, name: str) -> _Fields | None:
        value = self._get(name, required=False)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._wrong(name, "an object", value)
        return _Fields(value, self.path(name))

    def done(self) -> None:
        extra = sorted(set(self._obj) - self._seen)
        if extra:
            names = ", ".join(f"'{self.path(name)}'" for name in extra)
            raise _policy(ErrorCode.UNKNOWN_FIELD, f"unknown field {names}")


def _audio_format(fields: _Fields | None, default: AudioFormat) -> AudioFormat:
    if fields is None:
        return default
    encoding_name = fields.string("encoding", required=False)
    rate = fields.integer("sample_rate")
    if encoding_name is None:
        encoding = default.encoding
    else:
        try:
            encoding = Encoding(encoding_name)
        except ValueError:
            allowed = ", ".join(e.value for e in Encoding)
            raise _policy(
                ErrorCode.UNSUPPORTED_ENCODING,
                f"field '{fields.path('encoding')}': encoding {encoding_name!r} is not "
                f"supported (one of {allowed})",
            ) from None
    if rate is None:
        rate = default.sample_rate
    elif rate not in SUPPORTED_SAMPLE_RATES:
        allowed = ", ".join(map(str, SUPPORTED_SAMPLE_RATES))
        raise _policy(
            ErrorCode.UNSUPPORTED_SAMPLE_RATE,
            f"field '{fields.path('sample_rate')}': sample rate {rate} is not supported "
            f"(one of {allowed})",
        )
    return AudioFormat(encoding, rate)


def _parse_session_start(fields: _Fields, limits: ProtocolLimits) -> SessionStart:
    input_fields = fields.obj("input")
    input_format = _audio_format(input_fields, PCM16_16K)
    if input_fields is not None:
        input_fields.done()
    output_fields = fields.obj("output")
    output_format = _audio_format(output_fields, input_format)
    fallback: AudioFormat | None = None
    if output_fields is not None:
        fallback_fields = output_fields.obj("fallback")
        if fallback_fields is not None:
            fallback = _audio_format(fallback_fields, output_format)
            fallback_fields.done()
            if fallback.bytes_per_second >= output_format.bytes_per_second:
                raise _policy(
                    ErrorCode.INVALID_FIELD,
                    "field 'session.start.output.fallback' must need fewer bytes per second "
                    f"than output ({fallback.bytes_per_second} >= "
                    f"{output_format.bytes_per_second})",
                )
        output_fields.done()
    instructions = fields.string("instructions", required=False)
    if instructions is not None and len(instructions) > limits.max_instructions_chars:
        raise _policy(
            ErrorCode.TEXT_TOO_LONG,
            f"field 'session.start.instructions' has {len(instructions)} characters, "
            f"more than the limit of {limits.max_instructions_chars}",
        )
    return SessionStart(input_format, output_format, fallback, instructions)


def _parse_text_input(fields: _Fields, limits: ProtocolLimits) -> TextInput:
    text = fields.string("text", required=True)
    assert text is not None  # required=True never returns None
    # Problems with the text itself are not fatal: the message is dropped and the
    # caller can send a corrected one.
    if not text.strip():
        raise ProtocolError(ErrorCode.INVALID_FIELD, None, "field 'text.input.text' is empty")
    if len(text) > limits.max_text_chars:
        raise ProtocolError(
            ErrorCode.TEXT_TOO_LONG,
            None,
            f"field 'text.input.text' has {len(text)} characters, "
            f"more than the limit of {limits.max_text_chars}",
        )
    return TextInput(text)


def _check_size(nbytes: int, kind: str, limits: ProtocolLimits) -> None:
    if nbytes > limits.max_message_bytes:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_BIG,
            CloseCode.MESSAGE_TOO_BIG,
            f"{kind} message of {nbytes} bytes is larger than the limit of "
            f"{limits.max_message_bytes} bytes",
        )


def parse_client_text(text: str, limits: ProtocolLimits = DEFAULT_LIMITS) -> ClientMessage:
    """The client message in a WebSocket text message, or `ProtocolError`."""
    # A character takes at most 4 UTF-8 bytes: only encode when the cheap bound is unsure.
    if 4 * len(text) > limits.max_message_bytes:
        _check_size(len(text.encode("utf-8", "surrogatepass")), "text", limits)
    try:
        value = json.loads(text)
    except RecursionError:
        raise _policy(ErrorCode.INVALID_JSON, "text message is nested too deeply") from None
    except ValueError as exc:
        raise _policy(ErrorCode.INVALID_JSON, f"text message is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _policy(
            ErrorCode.INVALID_MESSAGE,
            f"text message must be a JSON object, got {json_type(value)}",
        )
    kind = value.get("type")
    if kind is None:
        raise _policy(ErrorCode.MISSING_FIELD, "missing field 'type'")
    if not isinstance(kind, str):
        raise _policy(
            ErrorCode.INVALID_FIELD, f"field 'type' must be a string, got {json_type(kind)}"
        )
    fields = _Fields(value, kind)
    fields.string("type", required=True)
    message: ClientMessage
    if kind == SessionStart.type:
        message = _parse_session_start(fields, limits)
    elif kind == TextInput.type:
        message = _parse_text_input(fields, limits)
    elif kind == SessionEnd.type:
        message = SessionEnd()
    else:
        known = ", ".join((SessionStart.type, TextInput.type, SessionEnd.type))
        shown = kind if len(kind) <= 64 else kind[:64] + "..."
        raise _policy(ErrorCode.UNKNOWN_TYPE, f"unknown message type {shown!r} (one of {known})")
    fields.done()
    return message


def parse_client_audio(
    data: bytes, fmt: AudioFormat, limits: ProtocolLimits = DEFAULT_LIMITS
) -> AudioInput:
    """A binary client message checked against the session's input format."""
    _check_size(len(data), "binary", limits)
    if not data:
        raise _policy(ErrorCode.BAD_AUDIO_FRAME, "empty binary message")
    if fmt.encoding is Encoding.PCM16 and len(data) % 2:
        raise _policy(
            ErrorCode.BAD_AUDIO_FRAME,
            f"binary message of {len(data)} bytes: pcm16 audio needs an even byte count",
        )
    unit = fmt.frame_bytes(FRAME_UNIT_MS)
    if len(data) % unit:
        raise _policy(
            ErrorCode.BAD_AUDIO_FRAME,
            f"binary message of {len(data)} bytes is not a whole number of "
            f"{FRAME_UNIT_MS} ms frames ({unit} bytes each for {fmt.encoding.value} at "
            f"{fmt.sample_rate} Hz)",
        )
    return AudioInput(data=bytes(data), duration_ms=FRAME_UNIT_MS * (len(data) // unit))
