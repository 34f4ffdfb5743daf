"""The server events of the OpenAI Realtime protocol (GA), built for one session.

``ServerEvents`` builds every event voicegate sends, each as the dict the ``openai``
SDK's ``RealtimeServerEvent`` parses (tests/server/test_realtime_server_events.py checks
each one against the SDK's types), with an ``event_id`` unique in the session; it also
names the session's items and responses. ``encode`` turns an event into the text of a
WebSocket message; ``audio_delta_text`` builds the one event sent for every audio frame
straight as text, since it is the hot path (base64 and JSON are the cost of this
protocol over /v1/stream).

An answer is one response with one output item (an assistant message) with one content
part: ``output_audio`` with its transcript, or ``output_text``. Its events go in this
order: ``response.created``, ``response.output_item.added``, ``conversation.item.added``,
``response.content_part.added``, the deltas, their ``.done``, ``response.content_part.done``,
``response.output_item.done``, ``conversation.item.done``, ``response.done``.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from voicegate.core.codec import AudioFormat
from voicegate.server.protocols.native_events import TurnLatency
from voicegate.server.protocols.realtime_config import Modality, format_json
from voicegate.server.protocols.realtime_fields import RealtimeError

Event = dict[str, object]
_TAG_CHARS: Final[frozenset[str]] = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
# Response statuses of response.done.
COMPLETED: Final[str] = "completed"
CANCELLED: Final[str] = "cancelled"
FAILED: Final[str] = "failed"
INCOMPLETE: Final[str] = "incomplete"
# Where voicegate's own per-turn figures go in a response's metadata (string values, as
# the protocol's metadata requires): "voicegate.latency_ms.<stage>" and the rest below.
LATENCY_PREFIX: Final[str] = "voicegate.latency_ms."
SPECULATIVE_KEY: Final[str] = "voicegate.speculative"
AUDIO_MS_KEY: Final[str] = "voicegate.audio_ms"
TURN_KEY: Final[str] = "voicegate.turn"


def encode(event: Mapping[str, object]) -> str:
    """The WebSocket text of a server event."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


class IdSource:
    """Ids unique within one session: a random session tag and a counter per kind."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag if tag is not None else secrets.token_hex(6)
        # audio_delta_text writes ids into JSON unescaped.
        if not self.tag or not all(c in _TAG_CHARS for c in self.tag):
            raise ValueError(f"an id tag is lowercase letters and digits, got {self.tag!r}")
        self._counters = {kind: itertools.count(1) for kind in ("event", "item", "resp")}

    @property
    def session_id(self) -> str:
        return f"sess_{self.tag}"

    def _next(self, kind: str) -> str:
        return f"{kind}_{self.tag}{next(self._counters[kind]):06d}"

    def event(self) -> str:
        return self._next("event")

    def item(self) -> str:
        return self._next("item")

    def response(self) -> str:
        return self._next("resp")


@dataclass(frozen=True)
class Usage:
    """Token counts of one response; what the node does not count stays 0."""

    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0

    def to_json(self) -> dict[str, object]:
        input_tokens = self.input_text_tokens + self.input_audio_tokens
        output_tokens = self.output_text_tokens + self.output_audio_tokens
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "text_tokens": self.input_text_tokens,
                "audio_tokens": self.input_audio_tokens,
                "cached_tokens": 0,
            },
            "output_token_details": {
                "text_tokens": self.output_text_tokens,
                "audio_tokens": self.output_audio_tokens,
            },
        }


def turn_metadata(
    latency: TurnLatency | None,
    *,
    turn: int,
    audio_ms: float | None = None,
    speculative: bool | None = None,
) -> dict[str, str]:
    """voicegate's per-turn figures as response metadata (string values)."""
    out = {TURN_KEY: str(turn)}
    if latency is not None:
        out.update({LATENCY_PREFIX + k: f"{v:g}" for k, v in latency.to_dict().items()})
    if audio_ms is not None:
        out[AUDIO_MS_KEY] = f"{audio_ms:g}"
    if speculative is not None:
        out[SPECULATIVE_KEY] = "true" if speculative else "false"
    return out


def user_audio_item(item_id: str, transcript: str | None, status: str) -> Event:
    """The user message that committed input audio becomes (the audio is not kept)."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": status,
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


def user_text_item(item_id: str, text: str) -> Event:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
    }


def assistant_item(item_id: str, modality: Modality, text: str | None, status: str) -> Event:
    """The answer's message: ``text`` is the transcript (audio) or the text so far."""
    part: Event = (
        {"type": "output_audio", "transcript": text}
        if modality is Modality.AUDIO
        else {"type": "output_text", "text": text}
    )
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [part] if text is not None else [],
    }


class ServerEvents:
    """The server events of one session."""

    def __init__(self, ids: IdSource | None = None) -> None:
        self.ids = ids if ids is not None else IdSource()

    def _event(self, kind: str, **fields: object) -> Event:
        return {"type": kind, "event_id": self.ids.event(), **fields}

    # -- session and errors -----------------------------------------------------------

    def session_created(self, session: Mapping[str, object]) -> Event:
        return self._event("session.created", session=dict(session))

    def session_updated(self, session: Mapping[str, object]) -> Event:
        return self._event("session.updated", session=dict(session))

    def error(self, error: RealtimeError) -> Event:
        return self._event("error", error=error.to_dict())

    def rate_limits_updated(self, limits: list[Mapping[str, object]]) -> Event:
        return self._event("rate_limits.updated", rate_limits=[dict(x) for x in limits])

    # -- input ------------------------------------------------------------------------

    def speech_started(self, item_id: str, audio_start_ms: int) -> Event:
        return self._event(
            "input_audio_buffer.speech_started", audio_start_ms=audio_start_ms, item_id=item_id
        )

    def speech_stopped(self, item_id: str, audio_end_ms: int) -> Event:
        return self._event(
            "input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id
        )

    def committed(self, item_id: str, previous_item_id: str | None) -> Event:
        return self._event(
            "input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id
        )

    def cleared(self) -> Event:
        return self._event("input_audio_buffer.cleared")

    def output_cleared(self, response_id: str) -> Event:
        return self._event("output_audio_buffer.cleared", response_id=response_id)

    # -- conversation -----------------------------------------------------------------

    def item_added(self, item: Mapping[str, object], previous_item_id: str | None) -> Event:
        return self._event(
            "conversation.item.added", item=dict(item), previous_item_id=previous_item_id
        )

    def item_done(self, item: Mapping[str, object], previous_item_id: str | None) -> Event:
        return self._event(
            "conversation.item.done", item=dict(item), previous_item_id=previous_item_id
        )

    def item_retrieved(self, item: Mapping[str, object]) -> Event:
        return self._event("conversation.item.retrieved", item=dict(item))

    def item_truncated(self, item_id: str, audio_end_ms: int) -> Event:
        return self._event(
            "conversation.item.truncated",
            item_id=item_id,
            content_index=0,
            audio_end_ms=audio_end_ms,
        )

    def transcription_delta(self, item_id: str, delta: str) -> Event:
        return self._event(
            "conversation.item.input_audio_transcription.delta",
            item_id=item_id,
            content_index=0,
            delta=delta,
        )

    def transcription_completed(self, item_id: str, transcript: str, audio_s: float) -> Event:
        return self._event(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": round(audio_s, 3)},
        )

    def transcription_failed(self, item_id: str, error: RealtimeError) -> Event:
        return self._event(
            "conversation.item.input_audio_transcription.failed",
            item_id=item_id,
            content_index=0,
            error={
                "type": error.error_type.value,
                "code": error.code.value,
                "message": error.message,
                "param": error.param,
            },
        )

    # -- responses --------------------------------------------------------------------

    def response_object(
        self,
        response_id: str,
        status: str,
        *,
        modality: Modality,
        output_format: AudioFormat,
        voice: str,
        max_output_tokens: int | None,
        output: list[Event] | None = None,
        usage: Usage | None = None,
        metadata: Mapping[str, str] | None = None,
        reason: str | None = None,
    ) -> Event:
        """The ``response`` of response.created and response.done."""
        details: Event | None = None
        if status in (CANCELLED, INCOMPLETE):
            details = {"type": status, "reason": reason}
        elif status == FAILED:
            details = {"type": status, "error": {"type": "server_error", "code": reason}}
        return {
            "id": response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "conversation_id": f"conv_{self.ids.tag}",
            "output_modalities": [modality.value],
            "max_output_tokens": "inf" if max_output_tokens is None else max_output_tokens,
            "audio": {"output": {"format": format_json(output_format), "voice": voice}},
            "output": output if output is not None else [],
            "usage": usage.to_json() if usage is not None else None,
            "metadata": dict(metadata) if metadata else None,
        }

    def response_created(self, response: Mapping[str, object]) -> Event:
        return self._event("response.created", response=dict(response))

    def response_done(self, response: Mapping[str, object]) -> Event:
        return self._event("response.done", response=dict(response))

    def output_item_added(self, response_id: str, item: Mapping[str, object]) -> Event:
        return self._event(
            "response.output_item.added", response_id=response_id, output_index=0, item=dict(item)
        )

    def output_item_done(self, response_id: str, item: Mapping[str, object]) -> Event:
        return self._event(
            "response.output_item.done", response_id=response_id, output_index=0, item=dict(item)
        )

    def _part(self, modality: Modality, text: str) -> Event:
        if modality is Modality.AUDIO:
            return {"type": "audio", "transcript": text}
        return {"type": "text", "text": text}

    def content_part_added(self, response_id: str, item_id: str, modality: Modality) -> Event:
        return self._event(
            "response.content_part.added",
            response_id=response_id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            part=self._part(modality, ""),
        )

    def content_part_done(
        self, response_id: str, item_id: str, modality: Modality, text: str
    ) -> Event:
        return self._event(
            "response.content_part.done",
            response_id=response_id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            part=self._part(modality, text),
        )

    def _content(self, kind: str, response_id: str, item_id: str, **fields: object) -> Event:
        return self._event(
            kind,
            response_id=response_id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            **fields,
        )

    def audio_delta(self, response_id: str, item_id: str, audio: bytes) -> Event:
        return self._content(
            "response.output_audio.delta",
            response_id,
            item_id,
            delta=base64.b64encode(audio).decode("ascii"),
        )

    def audio_delta_text(self, response_id: str, item_id: str, audio: bytes) -> str:
        """``encode(audio_delta(...))`` without the dict and the JSON encoder: every id is
        ours ([a-z0-9_]) and base64 needs no escaping. ``bench e2e`` knows these frames
        by their first field, ``{"type":"response.output_audio.delta"``: keep it first."""
        return (
            '{"type":"response.output_audio.delta","event_id":"'
            + self.ids.event()
            + '","response_id":"'
            + response_id
            + '","item_id":"'
            + item_id
            + '","output_index":0,"content_index":0,"delta":"'
            + base64.b64encode(audio).decode("ascii")
            + '"}'
        )

    def audio_done(self, response_id: str, item_id: str) -> Event:
        return self._content("response.output_audio.done", response_id, item_id)

    def transcript_delta(self, response_id: str, item_id: str, delta: str) -> Event:
        return self._content(
            "response.output_audio_transcript.delta", response_id, item_id, delta=delta
        )

    def transcript_done(self, response_id: str, item_id: str, transcript: str) -> Event:
        return self._content(
            "response.output_audio_transcript.done", response_id, item_id, transcript=transcript
        )

    def text_delta(self, response_id: str, item_id: str, delta: str) -> Event:
        return self._content("response.output_text.delta", response_id, item_id, delta=delta)

    def text_done(self, response_id: str, item_id: str, text: str) -> Event:
        return self._content("response.output_text.done", response_id, item_id, text=text)
