"""One Realtime conversation as a pure state machine: client events in, pipeline events in,
server events and pipeline actions out.

The connection feeds it the client's events (``client_event``), what the pipeline reports
of each turn in the gateway's own event types (``pipeline_event``: speech started and
stopped, transcripts, the answer's start, text, end or cancellation, errors) and the
answer audio (``answer_audio``), and carries out what comes back, in order: ``Send``
(one WebSocket text message) and the pipeline actions below. No I/O happens here.

The pipeline numbers turns; the Realtime protocol names items and responses. A user item
is bound to a turn when the pipeline first reports that turn (speech started, or the
transcript of a typed or committed turn); items created before their turn is known (a
typed message, a manual commit of audio the VAD has not reported) take the next new turn
in the order they were made. An answer is one response with one assistant item.

A response cancelled by the client is finished here at once (``response.done``
``cancelled``) and everything the pipeline still reports of its turn is dropped, so no
audio of it follows; one cancelled by the caller speaking over it is finished when the
pipeline reports the cancellation, which it does before any audio of the new turn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from voicegate.core.codec import AudioFormat
from voicegate.server.protocols.native_events import (
    ErrorEvent,
    ResponseCancelled,
    ResponseDone,
    ResponseStarted,
    ResponseTextDelta,
    ServerEvent,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
)
from voicegate.server.protocols.realtime_audio import InputFramer
from voicegate.server.protocols.realtime_config import (
    Modality,
    PipelineOptions,
    SessionType,
    TurnDefaults,
    VoiceCatalog,
    apply_patch,
    default_config,
    pipeline_options,
)
from voicegate.server.protocols.realtime_events import (
    ClientEvent,
    InputAudioAppend,
    InputAudioClear,
    InputAudioCommit,
    ItemCreate,
    ItemDelete,
    ItemRetrieve,
    ItemTruncate,
    OutputAudioClear,
    ResponseCancel,
    ResponseCreate,
    ResponseOptions,
    SessionUpdate,
    parse_client_event,
)
from voicegate.server.protocols.realtime_fields import (
    UNSET,
    ErrorCode,
    ErrorType,
    RealtimeError,
    Unset,
)
from voicegate.server.protocols.realtime_server_events import (
    CANCELLED,
    COMPLETED,
    FAILED,
    Event,
    ServerEvents,
    Usage,
    assistant_item,
    encode,
    turn_metadata,
    user_audio_item,
    user_text_item,
)

# OpenAI refuses to commit less audio than this.
MIN_COMMIT_MS: Final[float] = 100.0
# The pipeline's cancel reasons -> (status, reason) of response.done.
_CANCEL_STATUS: Final[Mapping[str, tuple[str, str]]] = {
    "barge_in": (CANCELLED, "turn_detected"),
    "client": (CANCELLED, "client_cancelled"),
    "session_end": (CANCELLED, "client_cancelled"),
    "shutdown": (FAILED, "server_shutdown"),
    "error": (FAILED, "internal_error"),
}


# -- actions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """One WebSocket text message to the client."""

    text: str


@dataclass(frozen=True, slots=True)
class OpenPipeline:
    """Open the session in the pipeline (before the first audio, text or response)."""

    input_format: AudioFormat
    output_format: AudioFormat
    options: PipelineOptions


@dataclass(frozen=True, slots=True)
class UpdatePipeline:
    options: PipelineOptions


@dataclass(frozen=True, slots=True)
class ForwardAudio:
    """Whole 10 ms units of input audio, in the input format."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CommitInput:
    """End the caller's utterance now (the audio forwarded so far is the turn)."""


@dataclass(frozen=True, slots=True)
class ClearInput:
    """Drop the utterance in progress."""


@dataclass(frozen=True, slots=True)
class AddText:
    """A typed user turn; it is answered only after ``CreateResponse``."""

    text: str


@dataclass(frozen=True, slots=True)
class CreateResponse:
    """Answer the conversation now; UNSET fields are the session's."""

    instructions: str | Unset = UNSET
    modality: Modality | Unset = UNSET
    max_output_tokens: int | Unset | None = UNSET


@dataclass(frozen=True, slots=True)
class CancelResponse:
    """Cancel the answer to ``turn``."""

    turn: int


@dataclass(frozen=True, slots=True)
class TruncateAnswer:
    """The caller heard ``audio_ms`` of the answer to ``turn``, which speaks its first
    ``text_chars`` characters: the history keeps that much."""

    turn: int
    audio_ms: int
    text_chars: int


Action = (
    Send
    | OpenPipeline
    | UpdatePipeline
    | ForwardAudio
    | CommitInput
    | ClearInput
    | AddText
    | CreateResponse
    | CancelResponse
    | TruncateAnswer
)


# -- state --------------------------------------------------------------------------


@dataclass
class _Item:
    id: str
    role: str  # "user" or "assistant"
    kind: str  # "audio" or "text" (user); the modality (assistant)
    turn: int | None = None
    text: str | None = None  # transcript, typed text or answer text
    status: str = "in_progress"
    audio_start_ms: int | None = None
    audio_end_ms: int | None = None
    audio_out_ms: float = 0.0  # assistant: answer audio sent
    committed: bool = False
    announced: bool = False  # user: speech_started already sent (at a barge-in)
    # assistant: (audio ms, text chars) at the end of each spoken clause, in order
    marks: list[tuple[int, int]] = field(default_factory=list)

    def heard_chars(self, audio_end_ms: int) -> int:
        """The text of the clauses played to their end by ``audio_end_ms``."""
        return max((chars for ms, chars in self.marks if ms <= audio_end_ms), default=0)

    def to_json(self) -> Event:
        if self.role == "assistant":
            return assistant_item(self.id, Modality(self.kind), self.text or "", self.status)
        if self.kind == "text":
            return user_text_item(self.id, self.text or "")
        return user_audio_item(self.id, self.text, self.status)


@dataclass
class _Response:
    id: str
    turn: int
    item: _Item
    modality: Modality
    max_output_tokens: int | None
    metadata: dict[str, str]
    parts: list[str] = field(default_factory=list)


class RealtimeConversation:
    """The protocol state of one ``/v1/realtime`` session."""

    def __init__(
        self,
        *,
        model: str,
        turns: TurnDefaults,
        catalog: VoiceCatalog,
        session_type: SessionType = SessionType.REALTIME,
        events: ServerEvents | None = None,
        max_frame_bytes: int = 65536,
    ) -> None:
        self.turns = turns
        self.catalog = catalog
        self.events = events if events is not None else ServerEvents()
        self.config = default_config(session_type, model, turns, catalog)
        self.max_frame_bytes = max_frame_bytes
        self.framer = InputFramer(self.config.input_format, max_frame_bytes)
        self.opened = False
        self.voice_locked = False
        self.uncommitted_bytes = 0
        self.items: dict[str, _Item] = {}
        self.order: list[str] = []  # item ids in conversation order
        self.by_turn: dict[int, _Item] = {}  # user items
        self.unbound: list[_Item] = []  # user items waiting for their turn number
        self.seen_turns: set[int] = set()
        self.response: _Response | None = None
        self.requested: ResponseOptions | None = None  # asked for, not started yet
        self.dropped_turns: set[int] = set()  # answers cancelled by the client
        self.cancel_next = False  # a response asked for was cancelled before it started
        self.partials: dict[int, str] = {}  # transcription text sent as deltas, per turn

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> list[Action]:
        """``session.created``: the first event of the session."""
        return [self._send(self.events.session_created(self._session_json()))]

    @property
    def options(self) -> PipelineOptions:
        return pipeline_options(self.config, self.turns, self.catalog)

    def response_options(self, create: CreateResponse) -> PipelineOptions | None:
        """The pipeline's options for the one response ``create`` asks for, None when
        they are the session's. (The pipeline takes options per session: a response's
        own are sent before its RESPONSE_CREATE and the session's again after it.)"""
        base = self.options
        changes: dict[str, object] = {}
        if not isinstance(create.instructions, Unset):
            changes["instructions"] = create.instructions
        if not isinstance(create.modality, Unset):
            changes["respond"] = create.modality.value
            changes["audio_marks"] = create.modality is Modality.AUDIO
        if not isinstance(create.max_output_tokens, Unset):
            changes["max_output_tokens"] = create.max_output_tokens
        options = dataclasses.replace(base, **changes)  # type: ignore[arg-type]
        return None if options == base else options

    # -- client events ------------------------------------------------------------------

    def client_text(self, text: str | bytes) -> list[Action]:
        """One WebSocket text message of the client."""
        try:
            return self.client_event(parse_client_event(text))
        except RealtimeError as error:
            return [self.error(error)]

    def client_binary(self) -> list[Action]:
        return [
            self.error(
                RealtimeError(
                    ErrorCode.INVALID_EVENT,
                    "binary messages are not part of the Realtime protocol: send audio with "
                    "input_audio_buffer.append",
                )
            )
        ]

    def client_event(self, event: ClientEvent) -> list[Action]:
        try:
            return self._dispatch(event)
        except RealtimeError as error:
            if error.event_id is None:
                error = error.with_event_id(event.event_id)
            return [self.error(error)]

    def _dispatch(self, event: ClientEvent) -> list[Action]:
        if isinstance(event, InputAudioAppend):
            return self._append(event.audio)
        if isinstance(event, SessionUpdate):
            return self._session_update(event)
        if isinstance(event, InputAudioCommit):
            return self._commit()
        if isinstance(event, InputAudioClear):
            self.framer.clear()
            self.uncommitted_bytes = 0
            return [ClearInput(), self._send(self.events.cleared())]
        if isinstance(event, ItemCreate):
            return self._item_create(event)
        if isinstance(event, ItemRetrieve):
            return [self._send(self.events.item_retrieved(self._item(event.item_id).to_json()))]
        if isinstance(event, ItemTruncate):
            return self._truncate(event)
        if isinstance(event, ResponseCreate):
            return self._response_create(event.options)
        if isinstance(event, ResponseCancel):
            return self._response_cancel(event.response_id)
        if isinstance(event, ItemDelete):
            raise RealtimeError(
                ErrorCode.UNSUPPORTED,
                "conversation.item.delete is not supported: the history of the node's LLM "
                "cannot drop a turn",
                "type",
            )
        assert isinstance(event, OutputAudioClear)
        raise RealtimeError(
            ErrorCode.UNSUPPORTED,
            "output_audio_buffer.clear is for WebRTC and SIP: over a WebSocket, "
            "response.cancel stops the answer",
            "type",
        )

    def _session_update(self, event: SessionUpdate) -> list[Action]:
        patch = event.session
        if self.opened and patch.type is not self.config.type:
            raise RealtimeError(
                ErrorCode.SESSION_TYPE_LOCKED,
                "the session type cannot change once audio or items were sent",
                "session.type",
            )
        config = apply_patch(
            self.config,
            patch,
            turns=self.turns,
            catalog=self.catalog,
            voice_locked=self.voice_locked,
        )
        if self.opened:
            for name, param in (("input_format", "input"), ("output_format", "output")):
                if getattr(config, name) != getattr(self.config, name):
                    raise RealtimeError(
                        ErrorCode.SESSION_TYPE_LOCKED,
                        f"the {param} format cannot change once audio or items were sent",
                        f"session.audio.{param}.format",
                    )
        if config.input_format != self.config.input_format:
            self.framer = InputFramer(config.input_format, self.max_frame_bytes)
        changed = config != self.config
        self.config = config
        actions: list[Action] = []
        if self.opened and changed:
            actions.append(UpdatePipeline(self.options))
        actions.append(self._send(self.events.session_updated(self._session_json())))
        return actions

    def _open(self) -> list[Action]:
        if self.opened:
            return []
        self.opened = True
        return [OpenPipeline(self.config.input_format, self.config.output_format, self.options)]

    def _append(self, audio: bytes) -> list[Action]:
        actions = self._open()
        self.uncommitted_bytes += len(audio)
        actions.extend(ForwardAudio(piece) for piece in self.framer.append(audio))
        return actions

    def _commit(self) -> list[Action]:
        if self.config.input_format.duration_ms(self.uncommitted_bytes) < MIN_COMMIT_MS:
            raise RealtimeError(
                ErrorCode.COMMIT_EMPTY,
                f"the input audio buffer holds less than {MIN_COMMIT_MS:g} ms of audio",
            )
        self.uncommitted_bytes = 0
        actions: list[Action] = [ForwardAudio(piece) for piece in self.framer.flush()]
        actions.append(CommitInput())
        item = self._open_user_item()
        if item is None:
            item = self._new_user_item("audio", None)
            self.unbound.append(item)
        actions.extend(self._committed(item))
        return actions

    def _open_user_item(self) -> _Item | None:
        """The audio item of the utterance in progress (speech started, not committed)."""
        for item in reversed(self.by_turn.values()):
            if item.kind == "audio" and not item.committed:
                return item
        return None

    def _item_create(self, event: ItemCreate) -> list[Action]:
        if self.config.type is SessionType.TRANSCRIPTION:
            raise RealtimeError(
                ErrorCode.UNSUPPORTED,
                "a transcription session has no conversation to add items to",
                "item",
            )
        if event.item_id is not None and event.item_id in self.items:
            raise RealtimeError(
                ErrorCode.INVALID_VALUE, f"item id {event.item_id!r} is taken", "item.id"
            )
        if event.previous_item_id is not None and event.previous_item_id not in self.order[-1:]:
            raise RealtimeError(
                ErrorCode.UNSUPPORTED,
                "items are added at the end of the conversation only",
                "previous_item_id",
            )
        actions = self._open()
        previous = self.order[-1] if self.order else None
        item = self._new_user_item("text", event.item_id, event.text)
        item.status = "completed"
        item.committed = True
        self.unbound.append(item)
        actions.append(AddText(event.text))
        actions.append(self._send(self.events.item_added(item.to_json(), previous)))
        actions.append(self._send(self.events.item_done(item.to_json(), previous)))
        return actions

    def _truncate(self, event: ItemTruncate) -> list[Action]:
        item = self._item(event.item_id)
        if item.role != "assistant" or item.kind != Modality.AUDIO.value or item.turn is None:
            raise RealtimeError(
                ErrorCode.INVALID_VALUE, "only an assistant's audio can be truncated", "item_id"
            )
        if event.audio_end_ms > item.audio_out_ms + 1:
            raise RealtimeError(
                ErrorCode.INVALID_VALUE,
                f"audio_end_ms {event.audio_end_ms} is beyond the {item.audio_out_ms:.0f} ms "
                "of audio sent",
                "audio_end_ms",
            )
        chars = item.heard_chars(event.audio_end_ms)
        if item.marks:  # without marks the node cannot say which text was heard
            item.text = (item.text or "")[:chars]
        return [
            TruncateAnswer(item.turn, event.audio_end_ms, chars),
            self._send(self.events.item_truncated(item.id, event.audio_end_ms)),
        ]

    def _response_create(self, options: ResponseOptions) -> list[Action]:
        if not self.config.responds:
            raise RealtimeError(
                ErrorCode.UNSUPPORTED, "a transcription session does not answer", "type"
            )
        if self.response is not None or self.requested is not None:
            raise RealtimeError(
                ErrorCode.RESPONSE_ACTIVE,
                "the conversation already has a response in progress",
            )
        if not isinstance(options.voice, Unset) and options.voice != self.config.voice:
            raise RealtimeError(
                ErrorCode.UNSUPPORTED,
                "a response speaks in the session's voice",
                "response.audio.output.voice",
            )
        if (
            not isinstance(options.output_format, Unset)
            and options.output_format != self.config.output_format
        ):
            raise RealtimeError(
                ErrorCode.UNSUPPORTED,
                "a response comes in the session's output format",
                "response.audio.output.format",
            )
        actions = self._open()
        self.requested = options
        actions.append(
            CreateResponse(options.instructions, options.modality, options.max_output_tokens)
        )
        return actions

    def _response_cancel(self, response_id: str | None) -> list[Action]:
        response = self.response
        if response is None or (response_id is not None and response_id != response.id):
            if response is None and self.requested is not None and response_id is None:
                # The pipeline has not started it yet: it is cancelled when it does.
                self.requested = None
                self.cancel_next = True
                return []
            raise RealtimeError(
                ErrorCode.NO_ACTIVE_RESPONSE,
                "there is no response in progress"
                + ("" if response_id is None else f" with id {response_id!r}"),
                "response_id" if response_id is not None else None,
            )
        self.dropped_turns.add(response.turn)
        actions: list[Action] = [CancelResponse(response.turn)]
        actions.extend(self._finish(CANCELLED, "client_cancelled", None))
        return actions

    # -- pipeline events ----------------------------------------------------------------

    def pipeline_event(self, event: ServerEvent) -> list[Action]:
        """What the pipeline reported, in the gateway's event types."""
        turn = getattr(event, "turn", None)
        if isinstance(turn, int) and turn in self.dropped_turns:
            return []
        if isinstance(event, SpeechStarted):
            return self._speech_started(event)
        if isinstance(event, SpeechStopped):
            return self._speech_stopped(event)
        if isinstance(event, TranscriptPartial):
            return self._transcript_partial(event)
        if isinstance(event, TranscriptFinal):
            return self._transcript_final(event)
        if isinstance(event, ResponseStarted):
            return self._response_started(event.turn)
        if isinstance(event, ResponseTextDelta):
            return self._text_delta(event)
        if isinstance(event, ResponseDone):
            return self._response_done(event)
        if isinstance(event, ResponseCancelled):
            return self._response_cancelled(event)
        if isinstance(event, ErrorEvent):
            return [self.error(_node_error(event))]
        # session.started, response.audio.started, output.degraded: /v1/stream's own.
        return []

    def answer_audio(self, turn: int, data: bytes) -> list[Action]:
        """Answer audio for ``turn`` in the output format."""
        response = self.response
        if response is None or response.turn != turn or response.modality is not Modality.AUDIO:
            return []
        self.voice_locked = True
        response.item.audio_out_ms += self.config.output_format.duration_ms(len(data))
        return [Send(self.events.audio_delta_text(response.id, response.item.id, data))]

    def answer_mark(self, turn: int, audio_ms: int, text_chars: int) -> None:
        """The answer to ``turn`` speaks its first ``text_chars`` characters in its first
        ``audio_ms`` of audio (the pipeline's AUDIO_MARK): what truncation keeps."""
        for item in reversed(self.order):
            answer = self.items[item]
            if answer.role == "assistant" and answer.turn == turn:
                answer.marks.append((audio_ms, text_chars))
                return

    def _user_item_for(self, turn: int, typed: str | None = None) -> _Item:
        """The user item of ``turn``. A typed turn first shows as its transcript, which is
        the text typed (``typed``); speech shows first as speech events, so a waiting
        text item is never taken by speech that overtook it in the pipeline."""
        item = self.by_turn.get(turn)
        if item is not None:
            return item
        waiting = [i for i in self.unbound if i.kind == "audio"]
        if typed is not None:
            waiting = [i for i in self.unbound if i.kind == "text" and i.text == typed] or waiting
        if waiting and turn not in self.seen_turns:
            item = waiting[0]
            self.unbound.remove(item)
        else:
            item = self._new_user_item("audio", None)
        item.turn = turn
        self.by_turn[turn] = item
        self.seen_turns.add(turn)
        return item

    def _speech_started(self, event: SpeechStarted) -> list[Action]:
        item = self._user_item_for(event.turn)
        item.audio_start_ms = event.audio_start_ms
        if self.config.turn_detection is None or item.announced:
            return []
        return [self._send(self.events.speech_started(item.id, event.audio_start_ms))]

    def _speech_stopped(self, event: SpeechStopped) -> list[Action]:
        item = self._user_item_for(event.turn)
        item.audio_end_ms = event.audio_end_ms
        if self.config.turn_detection is None or item.committed:
            return []
        actions: list[Action] = [
            self._send(self.events.speech_stopped(item.id, event.audio_end_ms))
        ]
        # Server VAD commits the turn it ended.
        self.uncommitted_bytes = 0
        actions.extend(self._committed(item))
        return actions

    def _committed(self, item: _Item) -> list[Action]:
        item.committed = True
        previous = self.order[-1] if self.order else None
        self.order.append(item.id)
        return [
            self._send(self.events.committed(item.id, previous)),
            self._send(self.events.item_added(item.to_json(), previous)),
        ]

    def _transcript_partial(self, event: TranscriptPartial) -> list[Action]:
        item = self._user_item_for(event.turn)
        if self.config.transcription is None or item.kind != "audio":
            return []
        sent = self.partials.get(event.turn, "")
        # Deltas only append: a revision of the provisional text waits for the final one.
        if not event.text.startswith(sent) or len(event.text) == len(sent):
            return []
        self.partials[event.turn] = event.text
        return [self._send(self.events.transcription_delta(item.id, event.text[len(sent) :]))]

    def _transcript_final(self, event: TranscriptFinal) -> list[Action]:
        item = self._user_item_for(event.turn, typed=event.text)
        if item.kind == "text":
            return []
        actions: list[Action] = []
        if not item.committed:
            # A turn the pipeline ended without a speech.stopped we passed on.
            actions.extend(self._committed(item))
        item.text = event.text
        item.status = "completed"
        if self.config.transcription is not None:
            sent = self.partials.pop(event.turn, "")
            if event.text.startswith(sent) and len(event.text) > len(sent):
                actions.append(
                    self._send(self.events.transcription_delta(item.id, event.text[len(sent) :]))
                )
            seconds = 0.0
            if item.audio_start_ms is not None and item.audio_end_ms is not None:
                seconds = max(0.0, (item.audio_end_ms - item.audio_start_ms) / 1000)
            actions.append(
                self._send(self.events.transcription_completed(item.id, event.text, seconds))
            )
        previous = self._previous(item.id)
        actions.append(self._send(self.events.item_done(item.to_json(), previous)))
        return actions

    def _response_started(self, turn: int) -> list[Action]:
        if not self.config.responds or self.response is not None:
            return []
        if self.cancel_next:
            self.cancel_next = False
            self.dropped_turns.add(turn)
            return [CancelResponse(turn)]
        options = self.requested or ResponseOptions()
        self.requested = None
        modality = (
            options.modality if isinstance(options.modality, Modality) else (self.config.modality)
        )
        tokens = (
            self.config.max_output_tokens
            if isinstance(options.max_output_tokens, Unset)
            else options.max_output_tokens
        )
        item = _Item(self.events.ids.item(), "assistant", modality.value, turn=turn, text="")
        self.items[item.id] = item
        previous = self.order[-1] if self.order else None
        self.order.append(item.id)
        response = _Response(
            self.events.ids.response(), turn, item, modality, tokens, dict(options.metadata)
        )
        self.response = response
        ev = self.events
        return [
            self._send(ev.response_created(self._response_json(response, "in_progress"))),
            self._send(ev.output_item_added(response.id, self._assistant_json(item))),
            self._send(ev.item_added(self._assistant_json(item), previous)),
            self._send(ev.content_part_added(response.id, item.id, modality)),
        ]

    def _text_delta(self, event: ResponseTextDelta) -> list[Action]:
        response = self.response
        if response is None or response.turn != event.turn or not event.delta:
            return []
        response.parts.append(event.delta)
        ev = self.events
        if response.modality is Modality.AUDIO:
            built = ev.transcript_delta(response.id, response.item.id, event.delta)
        else:
            built = ev.text_delta(response.id, response.item.id, event.delta)
        return [self._send(built)]

    def _response_done(self, event: ResponseDone) -> list[Action]:
        response = self.response
        if response is None or response.turn != event.turn:
            return []
        metadata = turn_metadata(
            event.latency_ms,
            turn=event.turn,
            audio_ms=event.audio_ms,
            speculative=event.speculative,
        )
        return self._finish(COMPLETED, None, metadata, text=event.text)

    def _response_cancelled(self, event: ResponseCancelled) -> list[Action]:
        response = self.response
        if response is None or response.turn != event.turn:
            return []
        status, reason = _CANCEL_STATUS.get(event.reason, (CANCELLED, "client_cancelled"))
        actions: list[Action] = []
        spoken = any(turn > response.turn for turn in self.by_turn)
        if event.reason == "barge_in" and self.config.turn_detection is not None and not spoken:
            # The pipeline says so before the new turn's speech start; a client hears of
            # the speech first, as the API orders it. The item takes the new turn.
            item = self._new_user_item("audio", None)
            item.announced = True
            self.unbound.append(item)
            heard_at = int(self.framer.received_ms)
            actions.append(self._send(self.events.speech_started(item.id, heard_at)))
        return actions + self._finish(status, reason, None)

    def _finish(
        self,
        status: str,
        reason: str | None,
        metadata: dict[str, str] | None,
        *,
        text: str | None = None,
    ) -> list[Action]:
        response = self.response
        assert response is not None
        self.response = None
        item = response.item
        item.text = text if text is not None else "".join(response.parts)
        item.status = "completed" if status == COMPLETED else "incomplete"
        ev = self.events
        rid, iid = response.id, item.id
        actions: list[Action] = []
        if response.modality is Modality.AUDIO:
            actions.append(self._send(ev.audio_done(rid, iid)))
            actions.append(self._send(ev.transcript_done(rid, iid, item.text)))
        else:
            actions.append(self._send(ev.text_done(rid, iid, item.text)))
        actions.append(self._send(ev.content_part_done(rid, iid, response.modality, item.text)))
        item_json = self._assistant_json(item)
        actions.append(self._send(ev.output_item_done(rid, item_json)))
        actions.append(self._send(ev.item_done(item_json, self._previous(iid))))
        response.metadata.update(metadata or {})
        done = self._response_json(response, status, reason=reason, output=[item_json])
        actions.append(self._send(ev.response_done(done)))
        return actions

    # -- helpers ------------------------------------------------------------------------

    def error(self, error: RealtimeError) -> Send:
        return self._send(self.events.error(error))

    def _send(self, event: Event) -> Send:
        return Send(encode(event))

    def _session_json(self) -> dict[str, object]:
        return self.config.to_json(self.events.ids.session_id)

    def _new_user_item(self, kind: str, item_id: str | None, text: str | None = None) -> _Item:
        item = _Item(item_id or self.events.ids.item(), "user", kind, text=text)
        self.items[item.id] = item
        if kind == "text":
            self.order.append(item.id)  # audio joins the conversation when committed
        return item

    def _item(self, item_id: str) -> _Item:
        item = self.items.get(item_id)
        if item is None:
            raise RealtimeError(ErrorCode.ITEM_NOT_FOUND, f"no item with id {item_id!r}", "item_id")
        return item

    def _previous(self, item_id: str) -> str | None:
        if item_id not in self.order:
            return None
        index = self.order.index(item_id)
        return self.order[index - 1] if index > 0 else None

    def _assistant_json(self, item: _Item) -> Event:
        return item.to_json()

    def _response_json(
        self,
        response: _Response,
        status: str,
        *,
        reason: str | None = None,
        output: list[Event] | None = None,
    ) -> Event:
        return self.events.response_object(
            response.id,
            status,
            modality=response.modality,
            output_format=self.config.output_format,
            voice=self.config.voice,
            max_output_tokens=response.max_output_tokens,
            output=output,
            usage=Usage() if status != "in_progress" else None,
            metadata=response.metadata,
            reason=reason,
        )


def _node_error(event: ErrorEvent) -> RealtimeError:
    try:
        code = ErrorCode(event.code)
    except ValueError:
        code = ErrorCode.INTERNAL_ERROR
    client_side = code in (ErrorCode.RATE_LIMITED, ErrorCode.SLOW_CLIENT, ErrorCode.TIMEOUT)
    return RealtimeError(
        code,
        event.message,
        error_type=ErrorType.INVALID_REQUEST if client_side else ErrorType.SERVER,
    )
