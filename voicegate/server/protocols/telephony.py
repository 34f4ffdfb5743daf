"""Raw audio for telephony bridges: ``WS /v1/pcm?encoding=mulaw&sample_rate=8000``.

Binary frames both ways and nothing else: the caller's audio in, the answer's audio out,
with no JSON a media gateway would have to speak. The options come in the URL, the key
in the handshake as on every route (``Authorization: Bearer``, or the subprotocol);
every error is a WebSocket close code with a reason.

Query parameters (all optional):

- ``encoding`` (``mulaw`` or ``pcm16``, default ``mulaw``) and ``sample_rate`` (8000,
  16000, 24000 or 48000; default 8000): the caller's audio;
- ``output_encoding`` and ``output_sample_rate``: the answer's, by default the caller's;
- ``instructions``: the system prompt of the session;
- ``token``: a session token (``POST /v1/tokens``), checked by the gateway.

The session starts with the first audio frame; each frame is a whole number of 10 ms of
audio. When the caller speaks over an answer, the answer's audio stops (nothing of a
cancelled answer is sent after the barge-in). Close codes: 1000 the caller closed; 1001
the server is shutting down; 1003 a text frame; 1008 a bad query parameter or frame, a
slow client, a timeout or input over its rate; 1009 a frame over the size limit; 1013
the node is at capacity or the address has too many connections. The reason says which.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from voicegate.core.codec import SUPPORTED_SAMPLE_RATES, AudioFormat, Encoding
from voicegate.server.protocols.base import (
    Accept,
    Action,
    Close,
    CloseSession,
    ConnectionState,
    ForwardAudio,
    OpenSession,
    Refusal,
    TurnEvent,
    WireProtocol,
)
from voicegate.server.protocols.native_events import (
    ResponseCancelled,
    ResponseDone,
    ResponseStarted,
)
from voicegate.server.protocols.native_wire import (
    ProtocolError,
    ProtocolLimits,
    parse_client_audio,
)

PCM_PATH: Final[str] = "/v1/pcm"
_CREDENTIAL_PARAMETERS: Final[frozenset[str]] = frozenset({"token"})  # the gateway's


class PcmClose(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    TRY_AGAIN_LATER = 1013


@dataclass(frozen=True, slots=True)
class PcmOptions:
    """A session's options, from the handshake's query parameters."""

    input: AudioFormat
    output: AudioFormat
    instructions: str | None = None


class BadParameterError(ValueError):
    """A query parameter the protocol refuses; the message is the close reason."""


def parse_options(query: Mapping[str, str], limits: ProtocolLimits) -> PcmOptions:
    """The options of ``query``, or ``BadParameterError`` naming the parameter."""
    unknown = sorted(set(query) - _PARAMETERS - _CREDENTIAL_PARAMETERS)
    if unknown:
        raise BadParameterError(f"unknown query parameter {unknown[0][:40]!r}")
    encoding = _encoding(query, "encoding", Encoding.MULAW)
    rate = _rate(query, "sample_rate", 8000)
    fmt = AudioFormat(encoding, rate)
    output = AudioFormat(
        _encoding(query, "output_encoding", encoding), _rate(query, "output_sample_rate", rate)
    )
    instructions = query.get("instructions")
    if instructions is not None and len(instructions) > limits.max_instructions_chars:
        raise BadParameterError(
            f"instructions longer than {limits.max_instructions_chars} characters"
        )
    return PcmOptions(fmt, output, instructions or None)


_PARAMETERS: Final[frozenset[str]] = frozenset(
    {"encoding", "sample_rate", "output_encoding", "output_sample_rate", "instructions"}
)


def _encoding(query: Mapping[str, str], name: str, default: Encoding) -> Encoding:
    value = query.get(name)
    if value is None:
        return default
    try:
        return Encoding(value)
    except ValueError:
        names = " or ".join(e.value for e in Encoding)
        raise BadParameterError(f"{name} must be {names}, got {value[:20]!r}") from None


def _rate(query: Mapping[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    rates = ", ".join(map(str, SUPPORTED_SAMPLE_RATES))
    if not value.isdigit() or int(value) not in SUPPORTED_SAMPLE_RATES:
        raise BadParameterError(f"{name} must be one of {rates}, got {value[:20]!r}")
    return int(value)


class PcmConnection:
    """The protocol state of one ``/v1/pcm`` connection (``base.WireSession``)."""

    start_message = "audio"

    def __init__(self, session: str, query: Mapping[str, str], limits: ProtocolLimits) -> None:
        self.session = session
        self.limits = limits
        self.state = ConnectionState.CONNECTING
        self._close_code: int | None = None
        self.admit: Callable[[], bool] = lambda: True
        self.options: PcmOptions | None = None
        self._bad_query = ""
        try:
            self.options = parse_options(query, limits)
        except BadParameterError as exc:
            self._bad_query = str(exc)
        self.audio_ms_received = 0
        self._responses_in_flight: set[int] = set()

    @property
    def close_code(self) -> int | None:
        return self._close_code

    def connect(self, *, at_capacity: bool = False) -> list[Action]:
        if self.state is not ConnectionState.CONNECTING:
            raise RuntimeError(f"connect in state {self.state.name}")
        self.state = ConnectionState.CONNECTED
        if self._bad_query:
            return [Accept(), *self._close(PcmClose.POLICY_VIOLATION, self._bad_query)]
        if at_capacity:
            return [Accept(), *self._close(PcmClose.TRY_AGAIN_LATER, "at capacity")]
        return [Accept()]

    def receive_text(self, text: str) -> list[Action]:
        if self.state in (ConnectionState.CONNECTING, ConnectionState.CLOSED):
            return []
        return self._close(PcmClose.UNSUPPORTED_DATA, "only binary audio frames are accepted")

    def receive_bytes(self, data: bytes) -> list[Action]:
        if self.state not in (ConnectionState.CONNECTED, ConnectionState.STARTED):
            return []  # ENDING: the caller's audio runs on until it sees the close
        assert self.options is not None
        try:
            audio = parse_client_audio(data, self.options.input, self.limits)
        except ProtocolError as exc:
            too_big = len(data) > self.limits.max_message_bytes
            code = PcmClose.MESSAGE_TOO_BIG if too_big else PcmClose.POLICY_VIOLATION
            return self._close(code, exc.message)
        actions: list[Action] = []
        if self.state is ConnectionState.CONNECTED:
            if not self.admit():
                return self._close(PcmClose.TRY_AGAIN_LATER, "at capacity")
            self.state = ConnectionState.STARTED
            actions.append(OpenSession(self.session, self.options))
        position = self.audio_ms_received
        self.audio_ms_received += audio.duration_ms
        actions.append(ForwardAudio(audio, position))
        return actions

    def send_event(self, event: TurnEvent) -> list[Action]:
        """Nothing but audio goes to the caller; the events only mark the answers in
        flight, which a drain lets finish."""
        if isinstance(event, ResponseStarted):
            self._responses_in_flight.add(event.turn)
        elif isinstance(event, ResponseDone | ResponseCancelled):
            self._responses_in_flight.discard(event.turn)
            if self.state is ConnectionState.ENDING and not self._responses_in_flight:
                return self._close(PcmClose.GOING_AWAY, "server shutting down")
        return []

    def audio_frame(self, turn: int, data: bytes) -> bytes:
        return data

    def degrade_output(self) -> list[Action]:
        if self.state not in (ConnectionState.STARTED, ConnectionState.ENDING):
            return []
        return self._close(PcmClose.POLICY_VIOLATION, "slow client: answer audio not read")

    def begin_shutdown(self) -> list[Action]:
        if self.state is ConnectionState.STARTED and self._responses_in_flight:
            self.state = ConnectionState.ENDING
            return []
        return self.shutdown_deadline()

    def shutdown_deadline(self) -> list[Action]:
        if self.state in (ConnectionState.CONNECTING, ConnectionState.CLOSED):
            return []
        return self._close(PcmClose.GOING_AWAY, "server shutting down")

    def refuse(self, refusal: Refusal, message: str) -> list[Action]:
        if self.state in (ConnectionState.CONNECTING, ConnectionState.CLOSED):
            return []
        code = (
            PcmClose.TRY_AGAIN_LATER
            if refusal is Refusal.TOO_MANY_CONNECTIONS
            else PcmClose.POLICY_VIOLATION
        )
        return self._close(code, message)

    def disconnected(self) -> list[Action]:
        was_open = self.state in (ConnectionState.STARTED, ConnectionState.ENDING)
        self.state = ConnectionState.CLOSED
        return [CloseSession(self.session)] if was_open else []

    def _close(self, code: PcmClose, reason: str) -> list[Action]:
        actions: list[Action] = []
        if self.state in (ConnectionState.STARTED, ConnectionState.ENDING):
            actions.append(CloseSession(self.session))
        self.state = ConnectionState.CLOSED
        self._close_code = code
        self._responses_in_flight.clear()
        # A close reason is at most 123 bytes of UTF-8.
        actions.append(Close(code, reason.encode()[:123].decode(errors="ignore")))
        return actions


PROTOCOL = WireProtocol("pcm", PCM_PATH, PcmConnection)
