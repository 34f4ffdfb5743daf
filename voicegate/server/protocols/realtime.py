"""OpenAI's Realtime protocol (GA) on ``WS /v1/realtime?model=NAME`` (docs/realtime.md).

The connection's side of it (``base.WireSession``): the conversation itself is
``realtime_session.RealtimeConversation`` (pure, no I/O); this module turns its actions
into the gateway's (``base.Action``) and says the node's conditions (capacity, slow
client, timeouts, shutdown) the Realtime way: an ``error`` event, then a close code.

The Realtime session starts at the handshake (``session.created`` is the first event)
and opens in the pipeline with the first audio, item or response, so that a
``session.update`` sent first sets the audio formats. ``?intent=transcription`` opens a
transcription session; ``model`` is echoed; other query parameters are ignored (a proxy
or an SDK may add its own). The key comes in the handshake (``Authorization: Bearer``
or the ``openai-insecure-api-key.`` subprotocol), checked by the gateway before the
upgrade.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from voicegate.core.codec import AudioFormat
from voicegate.core.config import NodeConfig, ProtocolLimits, end_of_turn_silence_ms
from voicegate.core.payloads import SessionOptions
from voicegate.server.protocols import realtime_session as rs
from voicegate.server.protocols.base import (
    Accept,
    Action,
    CancelResponse,
    Close,
    CloseSession,
    CommitTurn,
    ConnectionState,
    CreateResponse,
    ForwardAudio,
    ForwardText,
    OpenSession,
    Refusal,
    SendText,
    TruncateAnswer,
    TurnEvent,
    UpdateSession,
    WireProtocol,
)
from voicegate.server.protocols.native_wire import AudioInput, CloseCode
from voicegate.server.protocols.realtime_config import (
    PipelineOptions,
    SessionType,
    TurnDefaults,
    VoiceCatalog,
)
from voicegate.server.protocols.realtime_fields import ErrorCode, ErrorType, RealtimeError

REALTIME_PATH: Final[str] = "/v1/realtime"
DEFAULT_MODEL: Final[str] = "voicegate"
# The name a bundle whose voices cannot be read gives its one voice.
_UNNAMED_VOICE: Final[str] = "default"


@dataclass(frozen=True, slots=True)
class RealtimeStart:
    """The SESSION_OPEN of a Realtime session (``base.StartRequest``)."""

    input: AudioFormat
    output: AudioFormat
    instructions: str | None


@dataclass(frozen=True)
class NodeSettings:
    """What a Realtime session needs of its node: its turn taking and its voices."""

    turns: TurnDefaults
    voices: VoiceCatalog


_settings = NodeSettings(TurnDefaults(), VoiceCatalog((_UNNAMED_VOICE,)))


def configure(config: NodeConfig) -> None:
    """Read the node's turn taking and its bundle's voice names (``WireProtocol``)."""
    global _settings  # noqa: PLW0603 (one gateway process serves one node)
    _settings = node_settings(config)


def node_settings(config: NodeConfig) -> NodeSettings:
    options = config.workers["vad"].options if "vad" in config.workers else {}
    threshold = 0.5
    voices: tuple[str, ...] = (_UNNAMED_VOICE,)
    if config.node.bundle is not None:
        # Read once per gateway process; a bundle without these keeps the defaults, and
        # its stages report what is wrong with it.
        with contextlib.suppress(Exception):
            from voicegate.models.bundle import load_bundle  # noqa: PLC0415

            bundle = load_bundle(config.node.bundle, require=())
            value = bundle.tables.get("vad", {}).get("threshold", threshold)
            if isinstance(value, int | float) and 0 < value < 1:
                threshold = float(value)
            if "tts" in bundle.tables:
                # The voice's config alone: no model is loaded in a gateway.
                from voicegate.models.tts import voice_names  # noqa: PLC0415

                voices = voice_names(bundle.table("tts"), bundle.root) or voices
    pre_roll = options.get("pre_roll_ms", 200)
    turns = TurnDefaults(
        threshold=threshold,
        prefix_padding_ms=int(pre_roll) if isinstance(pre_roll, int | float) else 200,
        silence_duration_ms=int(end_of_turn_silence_ms(options)),
    )
    return NodeSettings(turns, VoiceCatalog(voices))


def session_options(options: PipelineOptions, voices: VoiceCatalog) -> SessionOptions:
    """The SESSION_UPDATE payload of the Realtime configuration's pipeline options."""
    doc = options.to_json()
    # The bundle's own voice is null: a bundle whose voice names are unknown still works.
    if doc["voice"] == voices.default:
        doc["voice"] = None
    return SessionOptions(**doc)  # type: ignore[arg-type]


class RealtimeConnection:
    """The protocol state of one ``/v1/realtime`` connection (``base.WireSession``)."""

    start_message = "event"

    def __init__(
        self,
        session: str,
        query: Mapping[str, str],
        limits: ProtocolLimits,
        settings: NodeSettings | None = None,
    ) -> None:
        self.session = session
        self.limits = limits
        self.settings = settings or _settings
        self.state = ConnectionState.CONNECTING
        self._close_code: int | None = None
        self.admit: Callable[[], bool] = lambda: True
        kind = (
            SessionType.TRANSCRIPTION
            if query.get("intent") == "transcription"
            else SessionType.REALTIME
        )
        self.conversation = rs.RealtimeConversation(
            model=(query.get("model") or DEFAULT_MODEL)[:64],
            turns=self.settings.turns,
            catalog=self.settings.voices,
            session_type=kind,
            max_frame_bytes=limits.max_message_bytes,
        )
        self.audio_ms_received = 0.0

    @property
    def close_code(self) -> int | None:
        return self._close_code

    # -- the handshake and the client's frames ---------------------------------------

    def connect(self, *, at_capacity: bool = False) -> list[Action]:
        if self.state is not ConnectionState.CONNECTING:
            raise RuntimeError(f"connect in state {self.state.name}")
        # The Realtime session runs from the handshake; the pipeline's opens later.
        self.state = ConnectionState.STARTED
        if at_capacity:
            return [Accept(), *self._at_capacity()]
        return [Accept(), *self._actions(self.conversation.start())]

    def receive_text(self, text: str) -> list[Action]:
        if self.state is not ConnectionState.STARTED:
            return []
        limit = self.limits.max_message_bytes
        if 4 * len(text) > limit and len(text.encode("utf-8", "surrogatepass")) > limit:
            too_big = RealtimeError(
                ErrorCode.EVENT_TOO_BIG, f"the event is larger than the limit of {limit} bytes"
            )
            return self._actions([self.conversation.error(too_big)])
        return self._actions(self.conversation.client_text(text))

    def receive_bytes(self, data: bytes) -> list[Action]:
        if self.state is not ConnectionState.STARTED:
            return []
        return self._actions(self.conversation.client_binary())

    # -- the pipeline's side ---------------------------------------------------------

    def send_event(self, event: TurnEvent) -> list[Action]:
        if self.state is ConnectionState.CLOSED:
            return []
        actions = self._actions(self.conversation.pipeline_event(event))
        if self.state is ConnectionState.ENDING and self.conversation.response is None:
            actions += self.shutdown_deadline()
        return actions

    def audio_frame(self, turn: int, data: bytes) -> str:
        for send in self.conversation.answer_audio(turn, data):
            if isinstance(send, rs.Send):
                return send.text
        return ""  # nothing of a cancelled answer

    # -- the node's conditions -------------------------------------------------------

    def degrade_output(self) -> list[Action]:
        # A Realtime session has no fallback format: a client that cannot keep up is
        # closed.
        if self.state not in (ConnectionState.STARTED, ConnectionState.ENDING):
            return []
        return self._fail(
            ErrorCode.SLOW_CLIENT,
            CloseCode.POLICY_VIOLATION,
            "the client does not take its audio fast enough",
        )

    def begin_shutdown(self) -> list[Action]:
        if self.state is ConnectionState.STARTED and self.conversation.response is not None:
            self.state = ConnectionState.ENDING  # the answer in flight finishes first
            return []
        return self.shutdown_deadline()

    def shutdown_deadline(self) -> list[Action]:
        if self.state in (ConnectionState.CONNECTING, ConnectionState.CLOSED):
            return []
        return self._fail(
            ErrorCode.SERVER_SHUTDOWN, CloseCode.GOING_AWAY, "the server is shutting down"
        )

    def refuse(self, refusal: Refusal, message: str) -> list[Action]:
        if self.state in (ConnectionState.CONNECTING, ConnectionState.CLOSED):
            return []
        close = (
            CloseCode.TRY_AGAIN_LATER
            if refusal is Refusal.TOO_MANY_CONNECTIONS
            else CloseCode.POLICY_VIOLATION
        )
        return self._fail(ErrorCode(refusal.value), close, message)

    def disconnected(self) -> list[Action]:
        was_open = self.conversation.opened and self.state is not ConnectionState.CLOSED
        self.state = ConnectionState.CLOSED
        return [CloseSession(self.session)] if was_open else []

    # -- helpers ---------------------------------------------------------------------

    def _at_capacity(self) -> list[Action]:
        return self._fail(
            ErrorCode.AT_CAPACITY,
            CloseCode.TRY_AGAIN_LATER,
            "the node is at capacity, try again later",
        )

    def _fail(self, code: ErrorCode, close: CloseCode, message: str) -> list[Action]:
        client_side = code in (ErrorCode.SLOW_CLIENT, ErrorCode.RATE_LIMITED, ErrorCode.TIMEOUT)
        error = RealtimeError(
            code,
            message,
            error_type=ErrorType.INVALID_REQUEST if client_side else ErrorType.SERVER,
        )
        actions = self._actions([self.conversation.error(error)])
        if self.conversation.opened and self.state is not ConnectionState.CLOSED:
            actions.append(CloseSession(self.session))
        self.state = ConnectionState.CLOSED
        self._close_code = close
        # A close reason is at most 123 bytes of UTF-8.
        actions.append(Close(close, message.encode()[:123].decode(errors="ignore")))
        return actions

    def _actions(self, actions: list[rs.Action]) -> list[Action]:
        out: list[Action] = []
        conv = self.conversation
        voices = self.settings.voices
        for action in actions:
            if isinstance(action, rs.Send):
                out.append(SendText(action.text, _event_type(action.text)))
            elif isinstance(action, rs.ForwardAudio):
                ms = conv.config.input_format.duration_ms(len(action.data))
                position = int(self.audio_ms_received)
                self.audio_ms_received += ms
                out.append(ForwardAudio(AudioInput(action.data, round(ms)), position))
            elif isinstance(action, rs.OpenPipeline):
                if not self.admit():
                    return out + self._at_capacity()
                start = RealtimeStart(
                    action.input_format, action.output_format, action.options.instructions or None
                )
                out.append(OpenSession(self.session, start))
                out.append(UpdateSession(session_options(action.options, voices)))
            elif isinstance(action, rs.UpdatePipeline):
                out.append(UpdateSession(session_options(action.options, voices)))
            elif isinstance(action, rs.CommitInput):
                out.append(CommitTurn())
            elif isinstance(action, rs.AddText):
                out.append(ForwardText(action.text, item_only=True))
            elif isinstance(action, rs.CreateResponse):
                own = conv.response_options(action)
                if own is None:
                    out.append(CreateResponse())
                else:
                    out.append(
                        CreateResponse(
                            session_options(own, voices), session_options(conv.options, voices)
                        )
                    )
            elif isinstance(action, rs.CancelResponse):
                out.append(CancelResponse(action.turn))
            elif isinstance(action, rs.TruncateAnswer):
                out.append(TruncateAnswer(action.turn, action.audio_ms))
            # ClearInput: the audio held back is dropped by the conversation; the pipeline
            # has no record that drops an utterance in progress (docs/realtime.md).
        return out


def _event_type(text: str) -> str:
    # encode() writes "type" first: {"type":"...",
    end = text.find('"', 9)
    return text[9:end] if text.startswith('{"type":"') and end > 9 else "event"


def _open(session: str, query: Mapping[str, str], limits: ProtocolLimits) -> RealtimeConnection:
    return RealtimeConnection(session, query, limits)


PROTOCOL = WireProtocol("realtime", REALTIME_PATH, _open, configure)
