"""The OpenAI Realtime protocol's ``error`` and the reading of client JSON into typed values.

Every client event that voicegate refuses (malformed, of the wrong type, unknown, or a
feature it does not offer) becomes one ``RealtimeError``: the ``error`` server event's
``type``, ``code``, ``message``, ``param`` (the dotted path of the offending field) and
``event_id`` (the client's, so that it can match the error to what it sent). The codes
are listed in docs/realtime.md.

``Fields`` reads one JSON object: each getter names the field, checks its JSON type and
remembers it, and ``done`` refuses the fields nobody read, so a typo fails loudly
instead of falling back to a default.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from typing import Final, TypeVar

from voicegate.server.protocols.native_wire import json_type

# JSON keys and strings that are echoed in messages are cut to this many characters.
_SHOWN: Final[int] = 64

T = TypeVar("T")


class ErrorType(enum.StrEnum):
    INVALID_REQUEST = "invalid_request_error"
    SERVER = "server_error"


class ErrorCode(enum.StrEnum):
    # the event itself
    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    UNKNOWN_EVENT = "unknown_event_type"
    MISSING_PARAMETER = "missing_required_parameter"
    UNKNOWN_PARAMETER = "unknown_parameter"
    INVALID_TYPE = "invalid_type"
    INVALID_VALUE = "invalid_value"
    UNSUPPORTED = "unsupported_feature"
    EVENT_TOO_BIG = "event_too_big"
    # the event against the session's state
    COMMIT_EMPTY = "input_audio_buffer_commit_empty"
    RESPONSE_ACTIVE = "conversation_already_has_active_response"
    NO_ACTIVE_RESPONSE = "response_cancel_not_active"
    ITEM_NOT_FOUND = "item_not_found"
    VOICE_LOCKED = "voice_locked"
    SESSION_TYPE_LOCKED = "session_type_locked"
    # the node
    RATE_LIMITED = "rate_limited"
    AT_CAPACITY = "at_capacity"
    SLOW_CLIENT = "slow_client"
    TIMEOUT = "timeout"
    SERVER_SHUTDOWN = "server_shutdown"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    BAD_INPUT = "bad_input"  # the pipeline could not use this turn's input
    INTERNAL_ERROR = "internal_error"


class RealtimeError(Exception):
    """A client event refused, or a failure to report, as the ``error`` server event."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        param: str | None = None,
        event_id: str | None = None,
        error_type: ErrorType = ErrorType.INVALID_REQUEST,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id
        self.error_type = error_type

    def with_event_id(self, event_id: str | None) -> RealtimeError:
        return RealtimeError(self.code, self.message, self.param, event_id, self.error_type)

    def to_dict(self) -> dict[str, str | None]:
        return {
            "type": self.error_type.value,
            "code": self.code.value,
            "message": self.message,
            "param": self.param,
            "event_id": self.event_id,
        }

    def __repr__(self) -> str:
        return f"RealtimeError({self.code.value}, {self.message!r}, param={self.param!r})"


def shown(text: str) -> str:
    """A client-chosen string, cut for an error message."""
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."



class _Unset(enum.Enum):
    UNSET = "unset"

    def __repr__(self) -> str:
        return "UNSET"


# A field that the client did not send (as opposed to one it set to null).
UNSET: Final = _Unset.UNSET
Unset = _Unset


class Fields:
    """The fields of one JSON object at ``path`` (e.g. ``session.audio.input``).

    A getter returns ``UNSET`` for a missing field and, where null has no meaning of its
    own, for null too (clients that serialise their whole model send nulls for what they
    did not set). ``nullable`` getters return None for null.
    """

    def __init__(self, data: Mapping[str, object], path: str, event_id: str | None) -> None:
        self.data = data
        self.path = path
        self.event_id = event_id
        self.read: set[str] = set()

    def param(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, code: ErrorCode, key: str, message: str) -> RealtimeError:
        return RealtimeError(code, message, self.param(key), self.event_id)

    def _get(self, key: str) -> object:
        self.read.add(key)
        return self.data.get(key)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> object:
        return self._get(key)

    def _typed(
        self, key: str, check: Callable[[object], bool], kind: str, required: bool
    ) -> object:
        value = self._get(key)
        if value is None:
            if required:
                raise self.error(
                    ErrorCode.MISSING_PARAMETER,
                    key,
                    f"missing required parameter '{self.param(key)}'",
                )
            return UNSET
        if not check(value):
            raise self.error(
                ErrorCode.INVALID_TYPE,
                key,
                f"'{self.param(key)}' must be {kind}, got {json_type(value)}",
            )
        return value

    def string(self, key: str, *, required: bool = False) -> str | Unset:
        value = self._typed(key, lambda v: isinstance(v, str), "a string", required)
        return value if isinstance(value, str) else UNSET

    def required_string(self, key: str) -> str:
        value = self.string(key, required=True)
        assert isinstance(value, str)
        return value

    def boolean(self, key: str) -> bool | Unset:
        value = self._typed(key, lambda v: isinstance(v, bool), "a boolean", False)
        return value if isinstance(value, bool) else UNSET

    def integer(
        self,
        key: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        required: bool = False,
    ) -> int | Unset:
        value = self._typed(
            key, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer", required
        )
        if not isinstance(value, int):
            return UNSET
        self._check_range(key, value, minimum, maximum)
        return value

    def number(
        self, key: str, *, minimum: float | None = None, maximum: float | None = None
    ) -> float | Unset:
        value = self._typed(
            key,
            lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "a number",
            False,
        )
        if not isinstance(value, int | float):
            return UNSET
        number = float(value)
        if not math.isfinite(number):
            raise self.error(ErrorCode.INVALID_VALUE, key, f"'{self.param(key)}' must be finite")
        self._check_range(key, number, minimum, maximum)
        return number

    def _check_range(
        self, key: str, value: float, minimum: float | None, maximum: float | None
    ) -> None:
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            low = "-inf" if minimum is None else f"{minimum:g}"
            high = "inf" if maximum is None else f"{maximum:g}"
            raise self.error(
                ErrorCode.INVALID_VALUE,
                key,
                f"'{self.param(key)}' must be between {low} and {high}, got {value:g}",
            )

    def choice(self, key: str, choices: tuple[str, ...], *, required: bool = False) -> str | Unset:
        value = self.string(key, required=required)
        if isinstance(value, str) and value not in choices:
            raise self.error(
                ErrorCode.INVALID_VALUE,
                key,
                f"'{self.param(key)}' must be one of {', '.join(choices)}, got {shown(value)!r}",
            )
        return value

    def required_choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.choice(key, choices, required=True)
        assert isinstance(value, str)
        return value

    def obj(self, key: str, *, required: bool = False) -> Fields | Unset:
        value = self._typed(key, lambda v: isinstance(v, dict), "an object", required)
        if not isinstance(value, dict):
            return UNSET
        return Fields(value, self.param(key), self.event_id)

    def nullable_obj(self, key: str) -> Fields | Unset | None:
        """An object, None for an explicit null, UNSET when missing."""
        if key in self.data and self.data[key] is None:
            self.read.add(key)
            return None
        return self.obj(key)

    def array(self, key: str, *, required: bool = False) -> list[object] | Unset:
        value = self._typed(key, lambda v: isinstance(v, list), "an array", required)
        return value if isinstance(value, list) else UNSET

    def objects(self, key: str, *, required: bool = False) -> list[Fields] | Unset:
        """An array of objects, each as ``Fields`` at ``path.key[i]``."""
        values = self.array(key, required=required)
        if isinstance(values, Unset):
            return UNSET
        out = []
        for i, value in enumerate(values):
            where = f"{key}[{i}]"
            if not isinstance(value, dict):
                raise self.error(
                    ErrorCode.INVALID_TYPE,
                    where,
                    f"'{self.param(where)}' must be an object, got {json_type(value)}",
                )
            out.append(Fields(value, self.param(where), self.event_id))
        return out

    def ignore(self, *keys: str) -> None:
        """Fields that are accepted and have no effect (docs/realtime.md says which)."""
        self.read.update(keys)

    def refuse(self, key: str, why: str) -> None:
        """A field that names a feature voicegate does not offer: refused when set."""
        if self.data.get(key) is not None:
            raise self.error(
                ErrorCode.UNSUPPORTED, key, f"'{self.param(key)}' is not supported: {why}"
            )
        self.read.add(key)

    def done(self) -> None:
        unknown = sorted(k for k in self.data if k not in self.read)
        if unknown:
            key = unknown[0]
            raise self.error(
                ErrorCode.UNKNOWN_PARAMETER, key, f"unknown parameter '{shown(self.param(key))}'"
            )
