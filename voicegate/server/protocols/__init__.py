"""The wire protocols the gateway speaks, one module per protocol, and their registry.

A protocol is a route path, a handshake, a parser and a renderer, with no I/O of its own:
``PROTOCOLS`` lists one ``base.WireProtocol`` per protocol (name, path, ``open``), and the
gateway mounts every one. ``open(session, query, limits)`` makes the state machine of one
connection, a ``base.WireSession``; the gateway's ``Connection`` (server/gateway) drives it:

- Handshake: credentials are checked before the upgrade by the gateway's access guard
  (header, ``Sec-WebSocket-Protocol`` or query, for ``name``); the options a protocol
  takes in the URL come in ``query``. ``connect(at_capacity=)`` answers the handshake:
  ``Accept`` and, when the node is full or an option is bad, the protocol's error and
  ``Close``. A protocol whose session needs no opening message returns ``OpenSession``
  from ``connect`` (its state is then STARTED).
- Client frames: ``receive_text`` and ``receive_bytes`` return actions. Audio becomes
  ``ForwardAudio`` in the session's input format (a protocol that carries base64 in JSON
  decodes it first), typed text ``ForwardText``, a client-driven end of turn (a Realtime
  ``input_audio_buffer.commit`` with turn detection off) ``CommitTurn``. ``OpenSession``,
  once per session, carries the options the stages need (input and output formats,
  instructions). Of the options that change mid-session (a Realtime
  ``session.update``), the output format is a ``SwitchOutput``; the others (input
  format, instructions, turn detection) have no record kind yet: a protocol answers such
  an update with its own error until one exists, never by sending ``OpenSession`` again.
- Per-session state a protocol keeps (its item and response ids, its current options)
  lives in its ``WireSession``; the connection holds nothing protocol-specific.
- Pipeline to client: the session's ``SessionTurns`` makes protocol-neutral turn events
  of the pipeline's records (``base.TurnEvent``: speech started/stopped, transcript
  partial/final, response started, text delta, audio started, response done with its
  latency, cancelled, a failed turn), and answer audio chunks. ``send_event`` renders an
  event as zero, one or several frames (``SendText``; one pipeline record may become
  several wire events); ``audio_frame(turn, data)`` makes the frame of one audio chunk
  (bytes as is, or a JSON text frame with base64 audio). Audio stays in the formats the
  session opened with (pcm16, mu-law or A-law at 8, 16, 24 or 48 kHz, both ways): the
  stages convert, the gateway never resamples.
- Server side: ``degrade_output`` (slow client), ``begin_shutdown`` and
  ``shutdown_deadline`` (drain), ``refuse`` (a server limit, ``base.Refusal``) and
  ``disconnected`` return actions the same way; how each is said (an error event, a
  close code and reason) is the protocol's.
- Barge-in is the connection's: audio of a stale turn is dropped before it is sent, and
  ``send_event`` gets ``ResponseCancelled``.

Modules:
    base                    What a wire protocol and the gateway's ``Connection`` say to each other
    native                  The native protocol, ``/v1/stream``
    native_events           The events the server sends on ``/v1/stream``, as JSON text messages
    native_wire             The client side of the native WebSocket protocol at ``/v1/stream``:
                            parsing and limits
    realtime                OpenAI's Realtime protocol (GA) on ``WS /v1/realtime?model=NAME``
                            (docs/realtime.md)
    realtime_audio          Input audio of a Realtime session: client chunks of any size into whole
                            10 ms frames
    realtime_config         The configuration of one Realtime session: defaults, ``session.update``
    realtime_events         The client events of the OpenAI Realtime protocol (GA), parsed into
                            typed values
    realtime_fields         The OpenAI Realtime protocol's ``error`` and the reading of client JSON
                            into typed values
    realtime_server_events  The server events of the OpenAI Realtime protocol (GA), built for one
                            session
    realtime_session        One Realtime conversation as a pure state machine: client events in,
                            pipeline events in, server events and pipeline actions out
    telephony               Raw audio for telephony bridges: ``WS
                            /v1/pcm?encoding=mulaw&sample_rate=8000``
"""

from voicegate.server.protocols import native, realtime, telephony
from voicegate.server.protocols.base import WireProtocol

PROTOCOLS: tuple[WireProtocol, ...] = (native.PROTOCOL, telephony.PROTOCOL, realtime.PROTOCOL)
