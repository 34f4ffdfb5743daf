"""One client connection, whatever its wire protocol.

``Connection`` holds everything of one session at the gateway: the protocol's state
machine (``WireSession``), the session's turn state (``SessionTurns``) and its send queue,
and what the sender knows of the answer playing. It carries out the state machine's
actions, turns the pipeline's records into turn events (``on_record``), paces answer
audio to the client at real time plus a lead, and applies the slow-client policy
(degrade to the fallback format, then close).

What is the node's lives in the ``ConnectionHost`` it is given: the ring writes, the
admission count, the counters. The gateway is one host; the benches' baseline servers
are another, in front of an in-process pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from voicegate.core.clock import monotonic_ns
from voicegate.core.codec import PCM16_16K
from voicegate.core.config import GatewayOptions
from voicegate.core.kinds import Flag, Kind
from voicegate.core.logs import current_session
from voicegate.core.payloads import (
    SessionParams,
    Truncation,
    encode_output_format,
    encode_playback,
    encode_text,
    heard_chars,
)
from voicegate.ext import Record
from voicegate.server.gateway.limits import TokenBucket
from voicegate.server.gateway.send_queue import (
    AudioItem,
    CloseItem,
    DoneItem,
    EventItem,
    Item,
    SendQueue,
    TextItem,
)
from voicegate.server.gateway.slow_clients import socket_fd_of, unread_backlog
from voicegate.server.gateway.turns import SessionTurns
from voicegate.server.protocols.base import (
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
    SwitchOutput,
    TruncateAnswer,
    UpdateSession,
    WireSession,
)
from voicegate.server.protocols.native_events import ErrorEvent, ResponseDone
from voicegate.server.protocols.native_wire import ErrorCode
from voicegate.workers.runtime.gateway_link import Received

log = logging.getLogger("voicegate.gateway")

_CLOSE_GRACE_S = 5.0  # how long the close may wait behind what the client should still get
_TURN_COUNTERS = ("turns_committed", "turns_cancelled", "turns_failed")

class ConnectionHost(Protocol):
    """What a connection needs from the server that holds it."""

    options: GatewayOptions
    counters: dict[str, int]  # the names of Gateway.counters; a host may keep fewer

    def write(self, record: Record[bytes]) -> None:
        """Write a control record to the pipeline; it must not be lost."""
        ...

    def forward_audio(self, connection: Connection, action: ForwardAudio) -> None:
        """Hand client audio to the pipeline (it may be dropped and counted)."""
        ...

    def session_opened(self, connection: Connection) -> None:
        """The session starts: it counts against capacity from now on."""
        ...

    def turn_done(self, done: ResponseDone) -> None:
        """A response.done goes out (its latency breakdown, for the metrics)."""
        ...

    def holds(self, connection: Connection) -> bool:
        """Whether the connection is still open."""
        ...


@dataclass
class InputBudget:
    """How much input a session may send: refused past it with ``rate_limited``."""

    audio_ms: TokenBucket  # ms of input audio: real time plus a burst
    text: TokenBucket  # text messages
    audio_detail: str  # what the client is told when over budget
    text_detail: str


@dataclass
class Connection:
    host: ConnectionHost
    sid: int
    wire: WireSession
    websocket: WebSocket
    end_of_turn_ms: float = 300.0
    subprotocol: str | None = None  # accepted with the handshake (never a credential)
    turns: SessionTurns = field(init=False)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    open_payload: bytes = b""  # the SESSION_OPEN payload, sent again after a restart
    seq: int = 0
    budget: InputBudget | None = None
    sending_since_ns: int = 0  # when the send in progress began; 0 when none is
    play_start_ns: int = 0  # when the answer playing now began to go out
    play_sent_ms: float = 0.0  # audio of it sent so far
    socket_fd: int = -1  # the client's TCP socket, to read its unacknowledged backlog
    unread_mark: int = -1  # the backlog when it was degraded; -1: not degraded for it

    def __post_init__(self) -> None:
        options = self.host.options
        queue = SendQueue(options.send_queue_frames)
        self.turns = SessionTurns(PCM16_16K, queue, self.end_of_turn_ms)
        queue.on_push = self.wake.set
        stall_ns = int(options.stall_ms * 1e6)
        queue.stalled = lambda: self.stalled(stall_ns)

    def stalled(self, stall_ns: int) -> bool:
        since = self.sending_since_ns
        return since != 0 and monotonic_ns() - since > stall_ns

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def write(self, kind: Kind, payload: bytes, flags: int = 0) -> None:
        """A control record of this session, stamped with its current turn."""
        self.host.write(
            Record(
                kind=kind,
                session=self.sid,
                turn=self.turns.turn,
                seq=self.next_seq(),
                origin_ns=monotonic_ns(),
                payload=payload,
                flags=flags,
            )
        )

    # -- the connection's life --------------------------------------------------------

    async def run(
        self,
        opening: Sequence[Action],
        *,
        refused: bool = False,
        start_timeout_s: float | None = None,
        idle_timeout_s: float | None = None,
    ) -> None:
        """Serve the connection until it closes: ``opening`` are the actions of the
        handshake; a ``refused`` connection only gets them (its error and close)."""
        sender = asyncio.create_task(self._sender(), name=f"send-{self.sid:08x}")
        try:
            self.perform(opening)
            await self.websocket.accept(subprotocol=self.subprotocol)
            if not refused:
                self.socket_fd = socket_fd_of(self.websocket)
                await self._receive_loop(start_timeout_s, idle_timeout_s)
            if not sender.done() and self.wire.close_code is not None:
                # We close: the close goes out behind what the client should still get.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(sender), timeout=_CLOSE_GRACE_S)
        finally:
            self.perform(self.wire.disconnected())
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _receive_loop(
        self, start_timeout_s: float | None, idle_timeout_s: float | None
    ) -> None:
        ws = self.websocket
        while self.wire.state is not ConnectionState.CLOSED:
            waiting_start = self.wire.state is ConnectionState.CONNECTED
            timeout = start_timeout_s if waiting_start else idle_timeout_s
            try:
                message = await asyncio.wait_for(ws.receive(), timeout)
            except TimeoutError:
                self.host.counters["connections_timed_out"] += 1
                what = f"no {self.wire.start_message}" if waiting_start else "no message"
                self.perform(self.wire.refuse(Refusal.TIMEOUT, f"{what} within {timeout:g} s"))
                return
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is not None:
                self.perform(self.wire.receive_bytes(data))
            else:
                self.perform(self.wire.receive_text(message.get("text") or ""))

    # -- the state machine's actions ------------------------------------------------

    def perform(self, actions: Sequence[Action]) -> None:
        """Carry out the state machine's actions; what goes to the client goes through
        the send queue, so the order is kept."""
        turns = self.turns
        if any(isinstance(a, Close) for a in actions):
            turns.queue.drop_pipeline_items()
        for action in actions:
            if isinstance(action, ForwardAudio | ForwardText) and not self._within_rate(action):
                return
            if isinstance(action, ForwardAudio):
                self.host.forward_audio(self, action)
            elif isinstance(action, SendText):
                turns.queue.push(TextItem(action.text, action.type))
            elif isinstance(action, OpenSession):
                if self.open_payload:
                    raise RuntimeError("a session opens once (protocols/__init__.py)")
                self.host.session_opened(self)
                turns.output = action.start.output
                start = action.start
                self.open_payload = SessionParams(
                    start.input, start.output, start.instructions
                ).pack()
                self.write(Kind.SESSION_OPEN, self.open_payload)
            elif isinstance(action, ForwardText):
                flags = Flag.ITEM_ONLY if action.item_only else 0
                self.write(Kind.TEXT_INPUT, encode_text(action.text), flags)
            elif isinstance(action, CommitTurn):
                self.write(Kind.COMMIT, b"")
            elif isinstance(action, SwitchOutput):
                turns.switch_output(action.format)
                self.write(Kind.OUTPUT_FORMAT, encode_output_format(action.format))
            elif isinstance(action, UpdateSession | CreateResponse | CancelResponse
                            | TruncateAnswer):  # fmt: skip
                self._session_option(action)
            elif isinstance(action, CloseSession):
                self.write(Kind.SESSION_CLOSE, b"")
            elif isinstance(action, Close):
                turns.queue.push(CloseItem(int(action.code), action.reason))
            # Accept: run() accepts before reading.

    def _session_option(
        self, action: UpdateSession | CreateResponse | CancelResponse | TruncateAnswer
    ) -> None:
        """The records of the per-session options (docs/pipeline.md, "Session options")."""
        turns = self.turns
        if isinstance(action, UpdateSession):
            turns.respond = action.options.respond
            self.write(Kind.SESSION_UPDATE, action.options.to_payload())
        elif isinstance(action, CreateResponse):
            turns.response_modes.append(
                action.own.respond if action.own is not None else turns.respond
            )
            if action.own is not None:
                self.write(Kind.SESSION_UPDATE, action.own.to_payload())
            self.write(Kind.RESPONSE_CREATE, b"")
            if action.session is not None:
                self.write(Kind.SESSION_UPDATE, action.session.to_payload())
        elif isinstance(action, CancelResponse):
            # As a barge-in does: what is queued of the answer goes, and the stages drop
            # it from the next turn on.
            turns.turn = max(turns.turn, action.turn + 1)
            turns.void_before(action.turn + 1, "client")
            self.write(Kind.CANCEL, b"")
        else:
            chars = heard_chars(turns.marks.get(action.turn, ()), action.audio_ms)
            self.write(Kind.TRUNCATE, Truncation(action.turn, chars).to_payload())

    def _within_rate(self, action: ForwardAudio | ForwardText) -> bool:
        """Whether the session's input is within its budget; if not, it is closed with
        ``rate_limited``: one caller must not take the ring every session shares."""
        budget = self.budget
        if budget is None:
            return True
        if isinstance(action, ForwardAudio):
            if budget.audio_ms.take(float(action.audio.duration_ms)):
                return True
            detail = budget.audio_detail
        else:
            if budget.text.take(1.0):
                return True
            detail = budget.text_detail
        self.host.counters["sessions_rate_limited"] += 1
        self.perform(self.wire.refuse(Refusal.RATE_LIMITED, detail))
        return False

    # -- records from the pipeline -----------------------------------------------------

    def on_record(self, record: Received, now: int) -> None:
        """A record of this session from the pipeline."""
        turns = self.turns
        counted = turns.counters
        counters = self.host.counters
        before = (counted.dropped_stale, counted.turns_committed,
                  counted.turns_cancelled, counted.turns_failed)  # fmt: skip
        if record.kind == Kind.BARGE_IN:
            counters["barge_ins"] += 1
        # What on_record logs names the session (session_context without its generator:
        # this runs for every record).
        token = current_session.set(self.sid)
        try:
            turns.on_record(record, now)
        except ValueError as exc:  # a malformed payload: never the end of the gateway
            counters["records_malformed"] += 1
            # The record's repr names its kind and size, never its payload.
            log.warning("malformed %r dropped (%s)", record, exc, extra={"session": self.sid})
        finally:
            current_session.reset(token)
        after = (counted.dropped_stale, counted.turns_committed,
                 counted.turns_cancelled, counted.turns_failed)  # fmt: skip
        if before != after:
            counters["records_stale_dropped"] += after[0] - before[0]
            for i, name in enumerate(_TURN_COUNTERS, start=1):
                counters[name] += after[i] - before[i]
        if turns.overflowed:
            turns.overflowed = False
            self.slow_client()

    def slow_client(self) -> None:
        actions = self.wire.degrade_output()
        if any(isinstance(a, SwitchOutput) for a in actions):
            self.host.counters["slow_client_degraded"] += 1
            # The backlog is what the client could not take: drop it rather than close.
            self.turns.queue.drop_turns_below(1 << 62)
        else:
            self.host.counters["slow_client_closed"] += 1
        self.perform(actions)

    def reopen(self) -> None:
        """A pipeline worker restarted: the turns in flight failed, the session is
        opened again in the stages."""
        turns = self.turns
        in_flight = turns.turns_in_flight()
        if in_flight:
            self.host.counters["turns_failed"] += len(in_flight)
            error = ErrorEvent(
                ErrorCode.INTERNAL_ERROR.value,
                "a pipeline worker restarted; the turn in progress was lost",
                fatal=False,
            )
            turns.queue.push(EventItem(0, error))
            turns.fail_turn(in_flight[-1], "worker restarted")
        # An answer that is complete here (all its audio arrived) lost nothing: it plays
        # on. Only the turns in flight failed, above.
        turns.turn += 1
        if self.open_payload:
            self.write(Kind.SESSION_OPEN, self.open_payload, Flag.REOPEN)

    # -- sending to the client ---------------------------------------------------------

    async def _sender(self) -> None:
        # The client going away ends this task quietly: run() ends the session.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self._send_loop()

    async def _send_loop(self) -> None:
        queue = self.turns.queue
        while True:
            item = queue.pop()
            if item is None:
                self.wake.clear()
                await self.wake.wait()
                continue
            if isinstance(item, CloseItem):
                self.sending_since_ns = monotonic_ns()
                await self.websocket.close(item.code, item.reason)
                return
            await self._send_item(item)

    async def _send_item(self, item: Item) -> None:
        turns = self.turns
        if isinstance(item, TextItem):
            await self._timed(self.websocket.send_text(item.text))
        elif isinstance(item, AudioItem):
            await self._send_audio(item)
        elif isinstance(item, DoneItem):
            if item.turn < turns.stale_below:
                return
            done = turns.render_done(item.turn, monotonic_ns())
            if done is not None:
                self.host.turn_done(done)
                await self._deliver(self.wire.send_event(done))
        elif isinstance(item, EventItem):
            await self._deliver(self.wire.send_event(item.event))

    async def _send_audio(self, item: AudioItem) -> None:
        turns = self.turns
        if item.turn < turns.stale_below:
            return
        now = monotonic_ns()
        if turns.playing != item.turn:
            turns.start_playing(item.turn, now)
            self.play_start_ns, self.play_sent_ms = now, 0.0
            self.write(Kind.PLAYBACK, encode_playback(True))
        # Paced at real time plus a lead: the client's buffer stays short, so a barge-in
        # silences the answer within the lead, and a client that cannot take real time
        # shows as stalled sends.
        lead_ms = self.host.options.lead_ms
        ahead_ms = self.play_sent_ms - (now - self.play_start_ns) / 1e6
        if ahead_ms > lead_ms:
            await asyncio.sleep((ahead_ms - lead_ms) / 1000)
            if item.turn < turns.stale_below:  # barged in while we slept
                return
        if item.data:
            frame = self.wire.audio_frame(item.turn, item.data)
            if frame:  # empty: the protocol has nothing to send for it
                await self._send_frame(frame)
            self.play_sent_ms += turns.output_ms(len(item.data))
            self.host.counters["frames_out"] += 1
            self._check_unread()
        if item.last:
            remaining = self.play_sent_ms - (monotonic_ns() - self.play_start_ns) / 1e6
            asyncio.get_running_loop().call_later(
                max(0.0, remaining) / 1000, self._playback_ended, item.turn
            )

    def _check_unread(self) -> None:
        """A client that does not read shows as a growing backlog of unacknowledged
        bytes on its socket, long before a send blocks when the kernel buffers are large
        (and paced audio fills them slowly): past ``unread_limit_ms`` of audio it is
        degraded; past that much more again, in the new format, closed."""
        backlog = unread_backlog(self.socket_fd)
        if backlog < 0:
            return
        limit = int(self.host.options.unread_limit_ms * self.turns.output_ms_bytes())
        if self.unread_mark < 0 and backlog > limit:
            self.unread_mark = backlog
            self.slow_client()
        elif self.unread_mark >= 0 and backlog > self.unread_mark + limit:
            self.unread_mark = 1 << 62  # once
            self.slow_client()

    def _playback_ended(self, turn: int) -> None:
        if self.host.holds(self) and self.turns.stop_playing(turn):
            self.write(Kind.PLAYBACK, encode_playback(False))

    async def _deliver(self, actions: Sequence[Action]) -> None:
        """Actions raised while sending: their text goes out now, in place, not behind
        the rest of the queue."""
        for action in actions:
            if isinstance(action, SendText):
                await self._timed(self.websocket.send_text(action.text))
            else:
                self.perform([action])

    async def _send_frame(self, frame: bytes | str) -> None:
        if isinstance(frame, bytes):
            await self._timed(self.websocket.send_bytes(frame))
        else:
            await self._timed(self.websocket.send_text(frame))

    async def _timed(self, send: Awaitable[None]) -> None:
        self.sending_since_ns = monotonic_ns()
        try:
            await send
        finally:
            self.sending_since_ns = 0
