"""The native protocol, ``/v1/stream``: the lifecycle of one connection as a pure state
machine (``native_wire`` parses its client messages, ``native_events`` shapes its server
events).

The gateway coroutine feeds it what happens (a client message arrived, the pipeline
produced an event, the client is too slow, the server is shutting down) and carries
out the actions it returns, in order. No I/O happens here, so every rule of the
protocol is testable without a socket.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from voicegate.core.codec import AudioFormat
from voicegate.server.protocols.base import (
    Accept,
    Action,
    Close,
    CloseSession,
    ConnectionState,
    ForwardAudio,
    ForwardText,
    OpenSession,
    Refusal,
    SendText,
    SwitchOutput,
    TurnEvent,
    WireProtocol,
)
from voicegate.server.protocols.native_events import (
    ErrorEvent,
    OutputDegraded,
    ResponseCancelled,
    ResponseDone,
    ResponseStarted,
    ServerEvent,
    SessionStarted,
)
from voicegate.server.protocols.native_wire import (
    DEFAULT_LIMITS,
    STREAM_PATH,
    CloseCode,
    ErrorCode,
    ProtocolError,
    ProtocolLimits,
    SessionEnd,
    SessionStart,
    TextInput,
    parse_client_audio,
    parse_client_text,
)


def _send(event: ServerEvent) -> SendText:
    return SendText(event.to_json(), event.type)


class StreamConnection:
    """The protocol state of one connection; see `ConnectionState` for the states."""

    def __init__(self, session: str, limits: ProtocolLimits = DEFAULT_LIMITS) -> None:
        self.session = session
        self.limits = limits
        self.state = ConnectionState.CONNECTING
        self.start: SessionStart | None = None
        self.output: AudioFormat | None = None  # current output format, after degradation
        self.audio_ms_received = 0
        self.close_code: CloseCode | None = None
        self._responses_in_flight: set[int] = set()
        # Whether a session may start now: a session counts against the node's capacity
        # from session.start on, so the check is made there too, not only at connect.
        self.admit: Callable[[], bool] = lambda: True
        self.start_message = "session.start"

    @property
    def degraded(self) -> bool:
        return self.start is not None and self.output != self.start.output

    def connect(self, *, at_capacity: bool = False) -> list[Action]:
        """The handshake arrived; refuse it with 1013 when the node is full."""
        self._expect(ConnectionState.CONNECTING, "connect")
        self.state = ConnectionState.CONNECTED
        if at_capacity:
            return [
                Accept(),
                *self._fail(
                    ErrorCode.AT_CAPACITY,
                    CloseCode.TRY_AGAIN_LATER,
                    "the server is at capacity, try again later",
                ),
            ]
        return [Accept()]

    def receive_text(self, text: str) -> list[Action]:
        if self.state in (ConnectionState.CONNECTING, ConnectionState.CLOSED):
            return []
        try:
            message = parse_client_text(text, self.limits)
        except ProtocolError as exc:
            return self._refuse(exc)
        if isinstance(message, SessionStart):
            return self._on_session_start(message)
        if isinstance(message, SessionEnd):
            return self._close_normally()
        return self._on_text_input(message)

    def receive_bytes(self, data: bytes) -> list[Action]:
        if self.state is ConnectionState.STARTED:
            assert self.start is not None
            try:
                audio = parse_client_audio(data, self.start.input, self.limits)
            except ProtocolError as exc:
                return self._refuse(exc)
            position = self.audio_ms_received
            self.audio_ms_received += audio.duration_ms
            return [ForwardAudio(audio, position)]
        if self.state is ConnectionState.CONNECTED:
            return self._refuse(
                ProtocolError(
                    ErrorCode.SESSION_NOT_STARTED,
                    CloseCode.POLICY_VIOLATION,
                    "binary audio before session.start",
                )
            )
        # ENDING: a microphone keeps streaming until it sees the close; that is not an error.
        return []

    def send_event(self, event: TurnEvent) -> list[Action]:
        """An event from the pipeline for this client."""
        if self.state not in (ConnectionState.STARTED, ConnectionState.ENDING):
            return []
        if isinstance(event, ErrorEvent) and not event.fatal:
            return [_send(event)]  # a turn failed; the session goes on
        if isinstance(event, SessionStarted | ErrorEvent | OutputDegraded):
            raise ValueError(f"{event.type} is sent by the connection itself, not the pipeline")
        if isinstance(event, ResponseStarted):
            self._responses_in_flight.add(event.turn)
        elif isinstance(event, ResponseDone | ResponseCancelled):
            self._responses_in_flight.discard(event.turn)
        actions: list[Action] = [_send(event)]
        if self.state is ConnectionState.ENDING and not self._responses_in_flight:
            actions += self._shutdown_now()
        return actions

    def audio_frame(self, turn: int, data: bytes) -> bytes:
        """Answer audio goes out as binary messages, as it is."""
        return data

    def degrade_output(self) -> list[Action]:
        """The client does not take its audio fast enough."""
        if self.state not in (ConnectionState.STARTED, ConnectionState.ENDING):
            return []
        assert self.start is not None
        fallback = self.start.fallback
        if fallback is None or self.degraded:
            return self._fail(
                ErrorCode.SLOW_CLIENT,
                CloseCode.POLICY_VIOLATION,
                "the client does not receive its audio fast enough"
                + (" even in the fallback format" if self.degraded else ""),
            )
        self.output = fallback
        event = OutputDegraded(fallback.encoding, fallback.sample_rate, "slow_client")
        # The event goes first: every later binary message is in the new format.
        return [_send(event), SwitchOutput(fallback)]

    def begin_shutdown(self) -> list[Action]:
        """The server is stopping: finish the answer in flight, then close with 1001."""
        if self.state is ConnectionState.STARTED and self._responses_in_flight:
            self.state = ConnectionState.ENDING
            return []
        if self.state in (ConnectionState.CONNECTED, ConnectionState.STARTED):
            return self._shutdown_now()
        return []

    def shutdown_deadline(self) -> list[Action]:
        """The grace period is over: cancel what is in flight and close with 1001."""
        if self.state in (ConnectionState.CONNECTING, ConnectionState.CLOSED):
            return []
        return self._shutdown_now()

    def refuse(self, refusal: Refusal, message: str) -> list[Action]:
        """A limit of the server ends the connection (rate, timeout, address)."""
        if self.state in (ConnectionState.CONNECTING, ConnectionState.CLOSED):
            return []
        code, close_code = _REFUSALS[refusal]
        return self._fail(code, close_code, message)

    def internal_error(self, message: str) -> list[Action]:
        """Something failed on the server side; `message` goes to the client as is."""
        if self.state in (ConnectionState.CONNECTING, ConnectionState.CLOSED):
            return []
        return self._fail(ErrorCode.INTERNAL_ERROR, CloseCode.INTERNAL_ERROR, message)

    def disconnected(self) -> list[Action]:
        """The client went away (or the close handshake finished)."""
        was_open = self.state in (ConnectionState.STARTED, ConnectionState.ENDING)
        self.state = ConnectionState.CLOSED
        self._responses_in_flight.clear()
        return [CloseSession(self.session)] if was_open else []

    def _on_session_start(self, start: SessionStart) -> list[Action]:
        if self.state is not ConnectionState.CONNECTED:
            return self._refuse(
                ProtocolError(
                    ErrorCode.SESSION_ALREADY_STARTED,
                    CloseCode.POLICY_VIOLATION,
                    "session.start sent twice",
                )
            )
        if not self.admit():
            return self._fail(
                ErrorCode.AT_CAPACITY,
                CloseCode.TRY_AGAIN_LATER,
                "the server is at capacity, try again later",
            )
        self.state = ConnectionState.STARTED
        self.start = start
        self.output = start.output
        started = SessionStarted(
            self.session, start.input, start.output, start.fallback, self.limits
        )
        return [OpenSession(self.session, start), _send(started)]

    def _on_text_input(self, message: TextInput) -> list[Action]:
        if self.state is ConnectionState.CONNECTED:
            return self._refuse(
                ProtocolError(
                    ErrorCode.SESSION_NOT_STARTED,
                    CloseCode.POLICY_VIOLATION,
                    "text.input before session.start",
                )
            )
        if self.state is ConnectionState.ENDING:
            return []
        return [ForwardText(message.text)]

    def _refuse(self, exc: ProtocolError) -> list[Action]:
        if exc.close_code is None:
            return [_send(ErrorEvent(exc.code.value, exc.message, fatal=False))]
        return self._fail(exc.code, exc.close_code, exc.message)

    def _fail(self, code: ErrorCode, close_code: CloseCode, message: str) -> list[Action]:
        return [
            _send(ErrorEvent(code.value, message, fatal=True)),
            *self._close(close_code, code.value),
        ]

    def _close_normally(self) -> list[Action]:
        return self._cancel_in_flight("session_end") + self._close(
            CloseCode.NORMAL, "session ended"
        )

    def _shutdown_now(self) -> list[Action]:
        return self._cancel_in_flight("shutdown") + self._fail(
            ErrorCode.SERVER_SHUTDOWN, CloseCode.GOING_AWAY, "the server is shutting down"
        )

    def _cancel_in_flight(self, reason: str) -> list[Action]:
        turns = sorted(self._responses_in_flight)
        self._responses_in_flight.clear()
        return [_send(ResponseCancelled(turn, reason)) for turn in turns]

    def _close(self, code: CloseCode, reason: str) -> list[Action]:
        actions: list[Action] = []
        if self.state in (ConnectionState.STARTED, ConnectionState.ENDING):
            actions.append(CloseSession(self.session))
        self.state = ConnectionState.CLOSED
        self.close_code = code
        self._responses_in_flight.clear()
        actions.append(Close(code, reason))
        return actions

    def _expect(self, state: ConnectionState, what: str) -> None:
        if self.state is not state:
            raise RuntimeError(f"{what} in state {self.state.name}")


_REFUSALS: dict[Refusal, tuple[ErrorCode, CloseCode]] = {
    Refusal.TOO_MANY_CONNECTIONS: (ErrorCode.TOO_MANY_CONNECTIONS, CloseCode.TRY_AGAIN_LATER),
    Refusal.TIMEOUT: (ErrorCode.TIMEOUT, CloseCode.POLICY_VIOLATION),
    Refusal.RATE_LIMITED: (ErrorCode.RATE_LIMITED, CloseCode.POLICY_VIOLATION),
}


def _open(session: str, query: Mapping[str, str], limits: ProtocolLimits) -> StreamConnection:
    # Every option of /v1/stream comes in session.start, none in the URL.
    return StreamConnection(session, limits)


PROTOCOL = WireProtocol("stream", STREAM_PATH, _open)
