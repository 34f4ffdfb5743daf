"""The client events of the OpenAI Realtime protocol (GA), parsed into typed values.

``parse_client_event`` takes one WebSocket text message and returns one of the event
classes below, or raises ``RealtimeError`` (the documented ``error``, with the client's
``event_id`` once it could be read). It never raises anything else, whatever the input.
What it refuses on sight (the feature is not offered whatever the session's state):
tools and function calling, function call outputs, image input, audio items, system and
assistant messages, out-of-band responses, stored prompts and per-response input.
Whether an event fits the session's state (an empty buffer, no response to cancel) is the
protocol module's decision, not the parser's.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from voicegate.core.codec import AudioFormat
from voicegate.server.protocols.native_wire import json_type
from voicegate.server.protocols.realtime_config import (
    Modality,
    SessionPatch,
    audio_format,
    instructions,
    max_output_tokens,
    modalities,
    parse_session,
    refuse_tools,
)
from voicegate.server.protocols.realtime_fields import (
    UNSET,
    ErrorCode,
    Fields,
    RealtimeError,
    Unset,
    shown,
)

MAX_TEXT_CHARS: Final[int] = 4000
MAX_ID_CHARS: Final[int] = 64
MAX_METADATA_KEYS: Final[int] = 16
_METADATA_KEY_CHARS: Final[int] = 64
_METADATA_VALUE_CHARS: Final[int] = 512


@dataclass(frozen=True)
class SessionUpdate:
    event_id: str | None
    session: SessionPatch
    type: str = field(default="session.update", init=False)


@dataclass(frozen=True)
class InputAudioAppend:
    event_id: str | None
    audio: bytes
    type: str = field(default="input_audio_buffer.append", init=False)


@dataclass(frozen=True)
class InputAudioCommit:
    event_id: str | None
    type: str = field(default="input_audio_buffer.commit", init=False)


@dataclass(frozen=True)
class InputAudioClear:
    event_id: str | None
    type: str = field(default="input_audio_buffer.clear", init=False)


@dataclass(frozen=True)
class OutputAudioClear:
    event_id: str | None
    type: str = field(default="output_audio_buffer.clear", init=False)


@dataclass(frozen=True)
class ItemCreate:
    """A user message with text (the only item voicegate adds to a conversation)."""

    event_id: str | None
    text: str
    item_id: str | None = None  # None: the server names it
    previous_item_id: str | None = None
    type: str = field(default="conversation.item.create", init=False)


@dataclass(frozen=True)
class ItemRetrieve:
    event_id: str | None
    item_id: str
    type: str = field(default="conversation.item.retrieve", init=False)


@dataclass(frozen=True)
class ItemTruncate:
    event_id: str | None
    item_id: str
    content_index: int
    audio_end_ms: int
    type: str = field(default="conversation.item.truncate", init=False)


@dataclass(frozen=True)
class ItemDelete:
    event_id: str | None
    item_id: str
    type: str = field(default="conversation.item.delete", init=False)


@dataclass(frozen=True)
class ResponseOptions:
    """What a ``response.create`` changes for that one response (UNSET: the session's)."""

    instructions: str | Unset = UNSET
    modality: Modality | Unset = UNSET
    max_output_tokens: int | Unset | None = UNSET
    voice: str | Unset = UNSET
    output_format: AudioFormat | Unset = UNSET
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ResponseCreate:
    event_id: str | None
    options: ResponseOptions = field(default_factory=ResponseOptions)
    type: str = field(default="response.create", init=False)


@dataclass(frozen=True)
class ResponseCancel:
    event_id: str | None
    response_id: str | None = None
    type: str = field(default="response.cancel", init=False)


ClientEvent = (
    SessionUpdate
    | InputAudioAppend
    | InputAudioCommit
    | InputAudioClear
    | OutputAudioClear
    | ItemCreate
    | ItemRetrieve
    | ItemTruncate
    | ItemDelete
    | ResponseCreate
    | ResponseCancel
)

_Parser = Callable[[Fields, str | None], ClientEvent]


def parse_client_event(text: str | bytes) -> ClientEvent:
    """One client event, or ``RealtimeError``."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise RealtimeError(ErrorCode.INVALID_JSON, "the event is nested too deeply") from None
    except ValueError as exc:
        # UnicodeDecodeError is a ValueError too (bytes that are not UTF-8).
        raise RealtimeError(
            ErrorCode.INVALID_JSON, f"the event is not valid JSON ({shown(str(exc))})"
        ) from None
    if not isinstance(value, dict):
        raise RealtimeError(
            ErrorCode.INVALID_EVENT, f"an event must be a JSON object, got {json_type(value)}"
        )
    event_id = _event_id(value)
    fields = Fields(value, "", event_id)
    fields.ignore("event_id")
    kind = fields.required_string("type")
    parser = _PARSERS.get(kind)
    if parser is None:
        raise RealtimeError(
            ErrorCode.UNKNOWN_EVENT,
            f"unknown event type {shown(kind)!r} (the client events are "
            f"{', '.join(CLIENT_EVENT_TYPES)})",
            "type",
            event_id,
        )
    event = parser(fields, event_id)
    fields.done()
    return event


def _event_id(value: Mapping[str, object]) -> str | None:
    event_id = value.get("event_id")
    if event_id is None:
        return None
    if not isinstance(event_id, str):
        raise RealtimeError(
            ErrorCode.INVALID_TYPE,
            f"'event_id' must be a string, got {json_type(event_id)}",
            "event_id",
        )
    if len(event_id) > MAX_ID_CHARS:
        # Echoed in errors: keep it short, and drop it rather than echo a huge string.
        raise RealtimeError(
            ErrorCode.INVALID_VALUE,
            f"'event_id' is {len(event_id)} characters long, over the limit of {MAX_ID_CHARS}",
            "event_id",
        )
    return event_id


def _session_update(fields: Fields, event_id: str | None) -> ClientEvent:
    session = fields.obj("session", required=True)
    assert isinstance(session, Fields)
    return SessionUpdate(event_id, parse_session(session))


def _append(fields: Fields, event_id: str | None) -> ClientEvent:
    encoded = fields.required_string("audio")
    try:
        audio = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise fields.error(
            ErrorCode.INVALID_VALUE, "audio", "'audio' must be base64 (RFC 4648, with padding)"
        ) from None
    if not audio:
        raise fields.error(ErrorCode.INVALID_VALUE, "audio", "'audio' is empty")
    return InputAudioAppend(event_id, audio)


def _item_id(fields: Fields, key: str, *, required: bool = False) -> str | None:
    value = fields.string(key, required=required)
    if isinstance(value, Unset):
        return None
    if not value or len(value) > MAX_ID_CHARS:
        raise fields.error(
            ErrorCode.INVALID_VALUE,
            key,
            f"'{fields.param(key)}' must be 1 to {MAX_ID_CHARS} characters long",
        )
    return value


def _required_item_id(fields: Fields) -> str:
    value = _item_id(fields, "item_id", required=True)
    assert value is not None
    return value


def _item_create(fields: Fields, event_id: str | None) -> ClientEvent:
    previous = _item_id(fields, "previous_item_id")
    item = fields.obj("item", required=True)
    assert isinstance(item, Fields)
    item_id = _item_id(item, "id")
    kind = item.required_string("type")
    if kind != "message":
        what = "function calling" if kind.startswith("function_call") else f"{shown(kind)!r} items"
        raise item.error(
            ErrorCode.UNSUPPORTED, "type", f"{what} not supported: only user text messages"
        )
    role = item.required_choice("role", ("user", "assistant", "system"))
    if role != "user":
        raise item.error(
            ErrorCode.UNSUPPORTED,
            "role",
            f"{role} messages are not supported: the conversation holds what was said, and "
            "instructions go in session.instructions",
        )
    item.ignore("object", "status")
    parts = item.objects("content", required=True)
    assert isinstance(parts, list)
    texts = [_user_text(part) for part in parts]
    item.done()
    text = " ".join(t for t in texts if t)
    if not text.strip():
        raise item.error(ErrorCode.INVALID_VALUE, "content", "a user message needs some text")
    if len(text) > MAX_TEXT_CHARS:
        raise item.error(
            ErrorCode.INVALID_VALUE,
            "content",
            f"the message is {len(text)} characters long, over the limit of {MAX_TEXT_CHARS}",
        )
    return ItemCreate(event_id, text, item_id, previous)


def _user_text(part: Fields) -> str:
    kind = part.required_string("type")
    if kind == "input_image":
        raise part.error(ErrorCode.UNSUPPORTED, "type", "image input is not supported")
    if kind == "input_audio":
        raise part.error(
            ErrorCode.UNSUPPORTED,
            "type",
            "audio items are not supported: send audio with input_audio_buffer.append",
        )
    if kind != "input_text":
        raise part.error(
            ErrorCode.INVALID_VALUE,
            "type",
            f"'{part.param('type')}' of a user message must be input_text, got {shown(kind)!r}",
        )
    text = part.required_string("text")
    part.done()
    return text


def _item_retrieve(fields: Fields, event_id: str | None) -> ClientEvent:
    return ItemRetrieve(event_id, _required_item_id(fields))


def _item_delete(fields: Fields, event_id: str | None) -> ClientEvent:
    return ItemDelete(event_id, _required_item_id(fields))


def _item_truncate(fields: Fields, event_id: str | None) -> ClientEvent:
    item_id = _required_item_id(fields)
    content_index = fields.integer("content_index", minimum=0, maximum=0, required=True)
    audio_end_ms = fields.integer("audio_end_ms", minimum=0, required=True)
    assert isinstance(content_index, int) and isinstance(audio_end_ms, int)
    return ItemTruncate(event_id, item_id, content_index, audio_end_ms)


def _response_create(fields: Fields, event_id: str | None) -> ClientEvent:
    response = fields.obj("response")
    if isinstance(response, Unset):
        return ResponseCreate(event_id)
    return ResponseCreate(event_id, _response_options(response))


def _response_options(fields: Fields) -> ResponseOptions:
    conversation = fields.raw("conversation")
    if conversation is not None and conversation != "auto":
        raise fields.error(
            ErrorCode.UNSUPPORTED,
            "conversation",
            'responses outside the conversation are not supported: leave it out or "auto"',
        )
    fields.refuse("input", "a response answers the conversation as it is")
    fields.refuse("prompt", "stored prompts live on OpenAI's platform")
    refuse_tools(fields)
    fields.ignore("reasoning", "parallel_tool_calls")
    text = instructions(fields)
    modality = modalities(fields)
    tokens = max_output_tokens(fields, "max_output_tokens")
    voice: str | Unset = UNSET
    output_format: AudioFormat | Unset = UNSET
    audio = fields.obj("audio")
    if isinstance(audio, Fields):
        output = audio.obj("output")
        if isinstance(output, Fields):
            voice = output.string("voice")
            output_format = audio_format(output, "format")
            output.done()
        audio.done()
    metadata = _metadata(fields)
    fields.done()
    return ResponseOptions(text, modality, tokens, voice, output_format, metadata)


def _metadata(fields: Fields) -> dict[str, str]:
    spec = fields.obj("metadata")
    if isinstance(spec, Unset):
        return {}
    if len(spec.data) > MAX_METADATA_KEYS:
        raise fields.error(
            ErrorCode.INVALID_VALUE, "metadata", f"metadata holds at most {MAX_METADATA_KEYS} keys"
        )
    out: dict[str, str] = {}
    for key in list(spec.data):
        value = spec.string(key)
        if not isinstance(value, str):
            continue
        if len(key) > _METADATA_KEY_CHARS or len(value) > _METADATA_VALUE_CHARS:
            raise spec.error(
                ErrorCode.INVALID_VALUE,
                key,
                f"metadata keys are at most {_METADATA_KEY_CHARS} characters and values at "
                f"most {_METADATA_VALUE_CHARS}",
            )
        out[key] = value
    return out


def _response_cancel(fields: Fields, event_id: str | None) -> ClientEvent:
    return ResponseCancel(event_id, _item_id(fields, "response_id"))


def _bare(
    cls: type[InputAudioCommit | InputAudioClear | OutputAudioClear],
) -> _Parser:
    def parse(fields: Fields, event_id: str | None) -> ClientEvent:
        return cls(event_id)

    return parse


_PARSERS: Final[Mapping[str, _Parser]] = {
    "session.update": _session_update,
    "input_audio_buffer.append": _append,
    "input_audio_buffer.commit": _bare(InputAudioCommit),
    "input_audio_buffer.clear": _bare(InputAudioClear),
    "output_audio_buffer.clear": _bare(OutputAudioClear),
    "conversation.item.create": _item_create,
    "conversation.item.retrieve": _item_retrieve,
    "conversation.item.truncate": _item_truncate,
    "conversation.item.delete": _item_delete,
    "response.create": _response_create,
    "response.cancel": _response_cancel,
}
CLIENT_EVENT_TYPES: Final[tuple[str, ...]] = tuple(_PARSERS)
