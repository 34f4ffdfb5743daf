"""What a wire protocol and the gateway's ``Connection`` say to each other.

A protocol's state machine (``WireSession``) does no I/O: the connection feeds it what
happened (a client frame, a turn event from the pipeline, a slow client, a shutdown) and
carries out the ``Action`` list it returns, in order. The actions and the states below are
the same for every protocol; the frames, event shapes and error codes are each protocol's.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from voicegate.core.codec import AudioFormat
from voicegate.core.config import NodeConfig, ProtocolLimits
from voicegate.core.payloads import SessionOptions
from voicegate.server.protocols import native_events as ev

# Client audio as checked by a protocol, and the limits a protocol enforces: the native
# protocol's types, which every protocol uses.
from voicegate.server.protocols.native_wire import AudioInput

# The protocol-neutral turn events ``SessionTurns`` makes of the pipeline's records; a
# protocol renders each as zero, one or several wire frames (``WireSession.send_event``).
# Answer audio is not an event: it goes through ``WireSession.audio_frame``.
TurnEvent = (
    ev.SpeechStarted
    | ev.SpeechStopped
    | ev.TranscriptPartial
    | ev.TranscriptFinal
    | ev.ResponseStarted
    | ev.ResponseTextDelta
    | ev.ResponseAudioStarted
    | ev.ResponseDone
    | ev.ResponseCancelled
    | ev.ErrorEvent  # a turn failed (never fatal: the session goes on)
)


class ConnectionState(enum.Enum):
    CONNECTING = 0  # handshake received, not accepted yet
    CONNECTED = 1  # accepted, waiting for the session to start
    STARTED = 2  # session running: audio and events flow
    ENDING = 3  # server shutting down: no new input, the answer in flight is finished
    CLOSED = 4  # close sent or client gone: nothing more is sent


class Refusal(enum.Enum):
    """A limit of the server that ends a connection; each protocol says it its own way."""

    TOO_MANY_CONNECTIONS = "too_many_connections"  # from this client address
    TIMEOUT = "timeout"  # no session start, or no message at all, within the limit
    RATE_LIMITED = "rate_limited"  # audio ahead of real time, or text too often


class StartRequest(Protocol):
    """What the pipeline is told when a session opens (the SESSION_OPEN payload)."""

    @property
    def input(self) -> AudioFormat: ...
    @property
    def output(self) -> AudioFormat: ...
    @property
    def instructions(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Accept:
    """Accept the WebSocket handshake."""


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Open the session in the pipeline (before the client hears it started)."""

    session: str
    start: StartRequest


@dataclass(frozen=True, slots=True)
class ForwardAudio:
    """Hand client audio (input format, unparsed) to the pipeline."""

    audio: AudioInput
    stream_ms: int  # position of its first sample in the session's input audio


@dataclass(frozen=True, slots=True)
class ForwardText:
    text: str
    item_only: bool = False  # joins the conversation without an answer (Flag.ITEM_ONLY)


@dataclass(frozen=True, slots=True)
class CommitTurn:
    """The client ended its turn itself (no end-of-turn wait): VAD decides it now."""


@dataclass(frozen=True, slots=True)
class SwitchOutput:
    """Send all later answer audio in this format."""

    format: AudioFormat


@dataclass(frozen=True, slots=True)
class UpdateSession:
    """The session's options changed (SESSION_UPDATE: respond, voice, turn detection...)."""

    options: SessionOptions


@dataclass(frozen=True, slots=True)
class CreateResponse:
    """Answer now (RESPONSE_CREATE); ``own`` options apply to this response only: sent
    before it, and ``session`` again after it."""

    own: SessionOptions | None = None
    session: SessionOptions | None = None


@dataclass(frozen=True, slots=True)
class CancelResponse:
    """The client cancelled the answer to ``turn``: nothing more of it is sent, and the
    pipeline drops it."""

    turn: int


@dataclass(frozen=True, slots=True)
class TruncateAnswer:
    """The caller heard ``audio_ms`` of the answer to ``turn``: history keeps the text
    of that much (TRUNCATE, from the answer's AUDIO_MARKs)."""

    turn: int
    audio_ms: int


@dataclass(frozen=True, slots=True)
class SendText:
    """Send this text frame to the client."""

    text: str = field(repr=False)
    type: str  # what it is, for logs and tests (the event type)


@dataclass(frozen=True, slots=True)
class CloseSession:
    """Close the session in the pipeline: in-flight work for it is cancelled."""

    session: str


@dataclass(frozen=True, slots=True)
class Close:
    code: int  # the WebSocket close code
    reason: str


Action = (
    Accept
    | OpenSession
    | ForwardAudio
    | ForwardText
    | CommitTurn
    | SwitchOutput
    | UpdateSession
    | CreateResponse
    | CancelResponse
    | TruncateAnswer
    | SendText
    | CloseSession
    | Close
)


class WireSession(Protocol):
    """One connection's protocol state, driven by the gateway's ``Connection``."""

    state: ConnectionState
    # Whether a session may start now (node capacity): the connection sets it, the
    # protocol asks it when its session starts.
    admit: Callable[[], bool]

    @property
    def close_code(self) -> int | None:
        """The close code, once the protocol decided to close."""
        ...

    @property
    def start_message(self) -> str:
        """The client message that starts a session, as a timeout's error names it."""
        ...

    def connect(self, *, at_capacity: bool = False) -> list[Action]:
        """The handshake arrived; refuse it when the node is full."""
        ...

    def receive_text(self, text: str) -> list[Action]: ...

    def receive_bytes(self, data: bytes) -> list[Action]: ...

    def send_event(self, event: TurnEvent) -> list[Action]:
        """Render a turn event: zero, one or several frames, and any state change."""
        ...

    def audio_frame(self, turn: int, data: bytes) -> bytes | str:
        """One chunk of answer audio (output format) as the frame that carries it."""
        ...

    def degrade_output(self) -> list[Action]:
        """The client does not take its audio fast enough."""
        ...

    def begin_shutdown(self) -> list[Action]:
        """The server is stopping: finish the answer in flight, then close."""
        ...

    def shutdown_deadline(self) -> list[Action]:
        """The grace period is over: close now."""
        ...

    def refuse(self, refusal: Refusal, message: str) -> list[Action]:
        """A limit of the server ends the connection."""
        ...

    def disconnected(self) -> list[Action]:
        """The client went away (or the close handshake finished)."""
        ...


@dataclass(frozen=True, slots=True)
class WireProtocol:
    """One wire protocol the gateway mounts.

    ``open(session, query, limits)`` makes the state machine of one connection:
    ``session`` is its session id as text, ``query`` the handshake's query parameters
    (options a protocol takes in the URL; a bad one is reported by ``connect``).
    ``name`` is what API keys and tokens allow (``[[keys]] protocols``). ``configure``,
    when set, is called once per gateway process with the node's configuration (what a
    protocol needs of the node: its turn taking, its bundle's voices).
    """

    name: str
    path: str
    open: Callable[[str, Mapping[str, str], ProtocolLimits], WireSession]
    configure: Callable[[NodeConfig], None] | None = None
