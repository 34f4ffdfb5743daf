"""A gateway process's server: the Starlette app and the one egress task.

The gateway only moves frames. Each connection's coroutine parses client messages with
``StreamConnection`` and writes audio into the ring to VAD (a full ring drops and counts
the frame: the event loop never waits on a ring). One egress task per process reads the
event, answer and control rings (doorbell-based waiting, never a blocking call on the
loop), hands each record to its session's ``SessionTurns`` and so to that session's
bounded send queue; one sender task per connection drains that queue into the socket.
A client that does not keep up fills only its own queue: it is degraded to its fallback
format, then closed with ``slow_client``.

Admission is node-wide: every gateway publishes its started sessions in the SESSIONS
field of its status block, and a session may start while the sum over the gateways
whose process is alive is below ``max_sessions``. A connection counts once its
``session.start`` is accepted (checked at the handshake and again then), so silent
sockets take no capacity: the per-address connection limit and the ``session.start``
timeout bound them instead ([limits], ``voicegate.server.limits``). Two gateways
admitting in the same instant may each see the other's count before its increment, so
the node can exceed the limit by at most ``gateways - 1`` sessions for that instant;
with one gateway it is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voicegate.core.clock import monotonic_ns
from voicegate.core.codec import PCM16_16K
from voicegate.core.config import NodeConfig
from voicegate.core.kinds import DrainEvent, Flag, Kind, WorkerRestarted, session_id
from voicegate.core.logs import current_session
from voicegate.ext import Record
from voicegate.ext.aio import AsyncRingReader, wait_any
from voicegate.ext.errors import RingClosed, RingError
from voicegate.server import prometheus
from voicegate.server.auth import AccessGuard, GatewaySecurity
from voicegate.server.events import ErrorEvent
from voicegate.server.gateway_session import (
    AudioItem,
    CloseItem,
    DoneItem,
    EventItem,
    Item,
    SendQueue,
    SessionTurns,
    TextItem,
)
from voicegate.server.limits import (
    AddressLimiter,
    TokenBucket,
    audio_bucket,
    fair_share_refuses,
)
from voicegate.server.protocol import DEFAULT_LIMITS, CloseCode, ErrorCode, ProtocolLimits
from voicegate.server.session_state import (
    Action,
    Close,
    CloseSession,
    ConnectionState,
    ForwardAudio,
    ForwardText,
    OpenSession,
    SendText,
    StreamConnection,
    SwitchOutput,
)
from voicegate.server.slow_clients import socket_fd_of, unread_backlog
from voicegate.server.web import web_routes
from voicegate.workers.gateway_link import GatewayLink, Received
from voicegate.workers.metrics import RingObservers, read_node_status
from voicegate.workers.status import Field, State, StatusBlock
from voicegate.workers.topology import Topology

log = logging.getLogger("voicegate.gateway")

_WAIT_SLICE_S = 0.25  # the egress task wakes at least this often (drain deadline, beat)
_LATENCY_WINDOW = 1024  # turns kept for the latency summaries of /metrics


@dataclass(frozen=True)
class GatewayOptions:
    max_sessions: int = 256  # node-wide
    send_queue_frames: int = 100  # answer audio records queued per client (~2 s at 20 ms)
    stall_ms: float = 200.0  # a send blocked this long means the client is not reading
    lead_ms: float = 300.0  # answer audio is sent at most this far ahead of real time
    send_buffer_bytes: int = 0  # SO_SNDBUF of client sockets; 0: the kernel's autotuning
    # Answer audio the client's TCP stack has not acknowledged, in ms of its format, that
    # makes it a slow client, however large the kernel buffers are (unread_backlog).
    unread_limit_ms: float = 2000.0
    limits: ProtocolLimits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.send_queue_frames < 1:
            raise ValueError(f"send_queue_frames must be >= 1, got {self.send_queue_frames}")


@dataclass
class LiveSession:
    sid: int
    conn: StreamConnection
    turns: SessionTurns
    websocket: WebSocket
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    open_payload: bytes = b""
    seq: int = 0
    sending_since_ns: int = 0  # when the send in progress began; 0 when none is
    play_start_ns: int = 0  # when the answer playing now began to go out
    play_sent_ms: float = 0.0  # audio of it sent so far
    audio_budget: TokenBucket | None = None  # ms of input audio: real time plus a burst
    socket_fd: int = -1  # the client's TCP socket, to read its unacknowledged backlog
    unread_mark: int = -1  # the backlog when it was degraded; -1: not degraded for it
    text_budget: TokenBucket | None = None  # text.input messages
    subprotocol: str | None = None  # accepted with the handshake (never a credential)

    def stalled(self, stall_ns: int) -> bool:
        since = self.sending_since_ns
        return since != 0 and monotonic_ns() - since > stall_ns


class Gateway:
    """Gateway ``index`` of the node ``config``: sessions, rings, admission, metrics."""

    def __init__(
        self,
        config: NodeConfig,
        index: int,
        options: GatewayOptions,
        security: GatewaySecurity | None = None,
    ) -> None:
        self.config = config
        self.index = index
        self.options = options
        self.link = GatewayLink(config, index)
        self.ring_observers = RingObservers(config)
        topology = Topology(config)
        self._peers = [
            StatusBlock.attach(topology.status_block(name))
            for i, name in enumerate(topology.gateways)
            if i != index
        ]
        self.sessions: dict[int, LiveSession] = {}  # every open connection
        self.started: set[int] = set()  # the sessions that count against capacity
        self.limits = config.limits
        self.addresses = AddressLimiter(config.limits.max_connections_per_address)
        # The first stage's end-of-turn silence (its option, default 300 ms), to date the
        # audio that completed the silence in the latency breakdown.
        eot = config.workers["vad"].options.get("end_of_turn_silence_ms", 300.0)
        self.end_of_turn_ms = float(eot) if isinstance(eot, int | float) else 300.0
        self._locals = itertools.count(1)
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "sessions_active",
                "sessions",
                "sessions_rejected",
                "frames_in",
                "frames_in_dropped",
                "frames_out",
                "records_stale_dropped",
                "slow_client_degraded",
                "slow_client_closed",
                "barge_ins",
                "turns_committed",
                "turns_cancelled",
                "turns_failed",
                "records_malformed",
                "connections_refused_address",
                "connections_timed_out",
                "handshakes_timed_out",
                "sessions_rate_limited",
                "frames_in_dropped_unfair",
            ),
            0,
        )
        self.guard = AccessGuard(security, self.counters)
        self.latencies: dict[str, deque[float]] = {}
        self.draining = False
        self.drain_deadline_ns = 0
        self.drained = asyncio.Event()
        self._egress: asyncio.Task[None] | None = None
        self._pending: deque[Record[bytes]] = deque()
        self._publish_due = False  # a call to _publish_staged is scheduled

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        # Local session 0 is never a session: its SESSION_CLOSE tells every stage to close
        # what it still holds of this gateway index (a predecessor that died with its
        # sessions open), before any session of this process opens.
        close_predecessors = Record(
            kind=Kind.SESSION_CLOSE, session=session_id(self.index, 0), turn=0,
            origin_ns=monotonic_ns(),
        )  # fmt: skip
        self._pending.append(close_predecessors)
        self._egress = asyncio.create_task(self._egress_loop(), name="gateway-egress")

    async def stop(self) -> None:
        if self._egress is not None:
            self._egress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._egress
            self._egress = None
        for peer in self._peers:
            peer.close()
        self._peers.clear()
        self.ring_observers.close()
        self.link.close()

    def begin_drain(self, deadline_ns: int) -> None:
        if self.draining:
            return
        log.info("gateway %d draining %d sessions", self.index, len(self.sessions))
        self.draining = True
        self.drain_deadline_ns = deadline_ns
        self.link.set_state(State.DRAINING)
        for live in list(self.sessions.values()):
            self._perform(live, live.conn.begin_shutdown())
        self._check_drained()

    def _check_drained(self) -> None:
        if self.draining and not self.sessions and not self.drained.is_set():
            self.link.set_state(State.DRAINED)
            self.drained.set()

    # -- admission ------------------------------------------------------------------

    def node_sessions(self) -> int:
        total = len(self.started)
        for peer in self._peers:
            if peer.get(Field.PID) and peer.holder_alive():
                total += peer.get(Field.SESSIONS)
        return total

    def free_capacity(self) -> int:
        return max(0, self.options.max_sessions - self.node_sessions())

    def _publish_sessions(self) -> None:
        self.counters["sessions_active"] = len(self.started)
        self.link.status.set(Field.SESSIONS, len(self.started))

    # -- HTTP -----------------------------------------------------------------------

    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
                Route("/metrics", self._metrics),
                Route("/v1/tokens", self.guard.issue_token, methods=["POST"]),
                WebSocketRoute("/v1/stream", self._stream),
                *web_routes(self.config.web),  # the talk page, when [web] page is on
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive", "gateway": self.index})

    async def _readyz(self, request: Request) -> Response:
        status = read_node_status(self.config)
        node = status.get("node")
        node_ready = node is not None and node.state is State.READY
        # Whole: every worker serves; a load balancer sends no calls to a node that is
        # replacing one, nor to a full one.
        whole = all(
            name in status and status[name].state is State.READY
            for name in self.config.workers
        )
        free = self.free_capacity()
        ready = node_ready and whole and not self.draining and free > 0
        body = {
            "ready": ready,
            "gateway": self.index,
            "free_sessions": free if node_ready and not self.draining else 0,
            "max_sessions": self.options.max_sessions,
            "draining": self.draining,
            "whole": whole,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _metrics(self, request: Request) -> Response:
        denied = self.guard.http_denial(request)
        if denied is not None:
            return denied
        return self.metrics_response()

    def metrics_response(self) -> Response:
        counters = dict(self.counters)
        counters["node_free_sessions"] = self.free_capacity()
        counters["ring_to_pipeline_occupancy_bytes"] = _occupancy(self.link.to_pipeline)
        counters["ring_from_pipeline_occupancy_bytes"] = _occupancy(self.link.from_pipeline)
        text = prometheus.render(
            read_node_status(self.config),
            counters,
            self.index,
            {k: list(v) for k, v in self.latencies.items()},
            self.ring_observers.read(),
        )
        return PlainTextResponse(text, media_type=prometheus.CONTENT_TYPE)

    # -- one connection -------------------------------------------------------------

    async def _stream(self, websocket: WebSocket) -> None:
        grant = await self.guard.admit(websocket, "stream")
        if grant is None:  # refused before the upgrade: no session
            return
        sid = session_id(self.index, next(self._locals))
        # Every record logged while serving this connection names the session; the
        # sender task below copies this context when it is created.
        session_token = current_session.set(sid)
        conn = StreamConnection(f"{sid:08x}", self.options.limits)
        queue = SendQueue(self.options.send_queue_frames)
        turns = SessionTurns(PCM16_16K, queue, self.end_of_turn_ms)
        live = LiveSession(sid, conn, turns, websocket, subprotocol=grant.subprotocol)
        queue.on_push = live.wake.set
        stall_ns = int(self.options.stall_ms * 1e6)
        queue.stalled = lambda: live.stalled(stall_ns)
        conn.admit = lambda: not self.draining and self.free_capacity() > 0
        address = websocket.client.host if websocket.client is not None else ""
        crowded = not self.addresses.acquire(address)
        refused = crowded or self.draining or self.free_capacity() <= 0
        if refused:
            self.counters["sessions_rejected"] += 1
        else:
            self.sessions[sid] = live
        self.guard.opened(grant, admitted=not refused)
        sender = asyncio.create_task(self._sender(live), name=f"send-{sid:08x}")
        try:
            if crowded:
                self.counters["connections_refused_address"] += 1
                refusal = conn.connect() + conn.refuse(
                    ErrorCode.TOO_MANY_CONNECTIONS,
                    CloseCode.TRY_AGAIN_LATER,
                    "too many connections from this address, try again later",
                )
                self._perform(live, refusal)
            elif self.draining:  # stopping, not full: server_shutdown and 1001
                self._perform(live, [*conn.connect(), *conn.begin_shutdown()])
            else:
                self._perform(live, conn.connect(at_capacity=refused))
            if refused:
                await websocket.accept(subprotocol=live.subprotocol)
            else:
                await self._receive_loop(live)
            if not sender.done() and conn.close_code is not None:
                # We close: the close goes out behind what the client should still get.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(sender), timeout=5.0)
        finally:
            self._perform(live, conn.disconnected())
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            self.sessions.pop(sid, None)
            if not crowded:
                self.addresses.release(address)
            if sid in self.started:
                self.started.discard(sid)
                self._publish_sessions()
            self._check_drained()
            self.guard.closed(grant, admitted=not refused)
            current_session.reset(session_token)

    async def _receive_loop(self, live: LiveSession) -> None:
        ws = live.websocket
        await ws.accept(subprotocol=live.subprotocol)
        live.socket_fd = socket_fd_of(ws)
        limits = self.limits
        while live.conn.state is not ConnectionState.CLOSED:
            waiting_start = live.conn.state is ConnectionState.CONNECTED
            timeout = limits.session_start_timeout_s if waiting_start else limits.idle_timeout_s
            try:
                message = await asyncio.wait_for(ws.receive(), timeout)
            except TimeoutError:
                self.counters["connections_timed_out"] += 1
                what = "no session.start" if waiting_start else "no message"
                self._perform(
                    live,
                    live.conn.refuse(
                        ErrorCode.TIMEOUT,
                        CloseCode.POLICY_VIOLATION,
                        f"{what} within {timeout:g} s",
                    ),
                )
                return
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is not None:
                self._perform(live, live.conn.receive_bytes(data))
            else:
                self._perform(live, live.conn.receive_text(message.get("text") or ""))

    def _perform(self, live: LiveSession, actions: Sequence[Action]) -> None:
        """Carry out the state machine's actions; what goes to the client goes through
        the session's send queue, so the order is kept."""
        if any(isinstance(a, Close) for a in actions):
            live.turns.queue.drop_pipeline_items()
        for action in actions:
            if isinstance(action, ForwardAudio | ForwardText) and not self._within_rate(
                live, action
            ):
                return
            if isinstance(action, ForwardAudio):
                self._forward_audio(live, action)
            elif isinstance(action, SendText):
                live.turns.queue.push(TextItem(action.text, action.type))
            elif isinstance(action, OpenSession):
                self.started.add(live.sid)
                self.counters["sessions"] += 1
                self._publish_sessions()
                live.audio_budget = audio_bucket(self.limits.audio_burst_ms)
                live.text_budget = TokenBucket(
                    self.limits.text_inputs_per_s, self.limits.text_input_burst
                )
                start = action.start
                live.turns.output = start.output
                live.open_payload = json.dumps(
                    {
                        "input": start.input.to_dict(),
                        "output": start.output.to_dict(),
                        "instructions": start.instructions,
                    }
                ).encode()
                self._control(live, Kind.SESSION_OPEN, live.open_payload)
            elif isinstance(action, ForwardText):
                self._control(live, Kind.TEXT_INPUT, action.text.encode())
            elif isinstance(action, SwitchOutput):
                live.turns.output = action.format
                live.turns.awaiting_format = True
                self._control(
                    live, Kind.OUTPUT_FORMAT, json.dumps(action.format.to_dict()).encode()
                )
            elif isinstance(action, CloseSession):
                self._control(live, Kind.SESSION_CLOSE, b"")
            elif isinstance(action, Close):
                live.turns.queue.push(CloseItem(int(action.code), action.reason))
            # Accept: the connection coroutine accepts before reading.

    def _within_rate(self, live: LiveSession, action: ForwardAudio | ForwardText) -> bool:
        """Whether the session's input is within its budget; if not, it is closed with
        ``rate_limited``: one caller must not take the ring every session shares."""
        if isinstance(action, ForwardAudio):
            budget, cost, what = live.audio_budget, float(action.audio.duration_ms), "audio"
        else:
            budget, cost, what = live.text_budget, 1.0, "text.input"
        if budget is None or budget.take(cost):
            return True
        self.counters["sessions_rate_limited"] += 1
        detail = (
            f"audio more than {self.limits.audio_burst_ms:g} ms ahead of real time"
            if what == "audio"
            else f"text.input more often than {self.limits.text_inputs_per_s:g} per second"
        )
        self._perform(
            live, live.conn.refuse(ErrorCode.RATE_LIMITED, CloseCode.POLICY_VIOLATION, detail)
        )
        return False

    def _forward_audio(self, live: LiveSession, action: ForwardAudio) -> None:
        ring = self.link.to_pipeline
        budget = live.audio_budget
        if budget is not None and fair_share_refuses(
            budget.deficit(), ring.available(), ring.capacity
        ):
            self.counters["frames_in_dropped"] += 1
            self.counters["frames_in_dropped_unfair"] += 1
            return
        now = monotonic_ns()
        live.seq += 1
        live.turns.input_arrived(action.stream_ms + action.audio.duration_ms, now)
        if self.link.send(
            Record(
                kind=Kind.AUDIO_IN,
                session=live.sid,
                turn=live.turns.turn,
                seq=live.seq,
                origin_ns=now,
                payload=action.audio.data,
            ),
            publish=False,
        ):  # fmt: skip
            self.counters["frames_in"] += 1
            if not self._publish_due:
                # Every frame that arrives in this turn of the event loop becomes visible
                # to VAD at its end, at once: one wake-up of the worker, not one per frame.
                self._publish_due = True
                asyncio.get_running_loop().call_soon(self._publish_staged)
        else:
            self.counters["frames_in_dropped"] += 1

    def _publish_staged(self) -> None:
        self._publish_due = False
        with contextlib.suppress(RingClosed):  # the node is going down: nobody reads
            self.link.publish()

    def _control(self, live: LiveSession, kind: Kind, payload: bytes, flags: int = 0) -> None:
        live.seq += 1
        record = Record(
            kind=kind, session=live.sid, turn=live.turns.turn, seq=live.seq,
            origin_ns=monotonic_ns(), payload=payload, flags=flags,
        )  # fmt: skip
        # Control must not be lost, and the ring has one producer (this loop): what does
        # not fit waits in order in ``_pending`` and the egress task retries it.
        if self._pending or not self.link.send(record):
            self._pending.append(record)

    def _flush_pending(self) -> None:
        while self._pending and self.link.send(self._pending[0]):
            self._pending.popleft()

    # -- sending to one client -------------------------------------------------------

    async def _sender(self, live: LiveSession) -> None:
        # The client going away ends this task quietly: the connection coroutine ends
        # the session.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self._send_loop(live)

    async def _send_loop(self, live: LiveSession) -> None:
        queue = live.turns.queue
        ws = live.websocket
        while True:
            item = queue.pop()
            if item is None:
                live.wake.clear()
                await live.wake.wait()
                continue
            if isinstance(item, CloseItem):
                live.sending_since_ns = monotonic_ns()
                await ws.close(item.code, item.reason)
                return
            await self._send_item(live, item)

    async def _send_item(self, live: LiveSession, item: Item) -> None:
        ws = live.websocket
        turns = live.turns
        if isinstance(item, TextItem):
            await _timed(live, ws.send_text(item.text))
        elif isinstance(item, AudioItem):
            if item.turn < turns.stale_below:
                return
            answer = turns.answers.get(item.turn)
            now = monotonic_ns()
            if turns.playing != item.turn:
                turns.playing = item.turn
                live.play_start_ns, live.play_sent_ms = now, 0.0
                if answer is not None and not answer.audio_sent_ns:
                    answer.audio_sent_ns = now
                self._control(live, Kind.PLAYBACK, b"\x01")
            # Paced at real time plus a lead: the client's buffer stays short, so a
            # barge-in silences the answer within the lead, and a client that cannot take
            # real time shows as stalled sends.
            ahead_ms = live.play_sent_ms - (now - live.play_start_ns) / 1e6
            if ahead_ms > self.options.lead_ms:
                await asyncio.sleep((ahead_ms - self.options.lead_ms) / 1000)
                if item.turn < turns.stale_below:
                    return
            if item.data:
                await _timed(live, ws.send_bytes(item.data))
                live.play_sent_ms += turns.output_ms(len(item.data))
                self.counters["frames_out"] += 1
                self._check_unread(live)
            if item.last:
                remaining = live.play_sent_ms - (monotonic_ns() - live.play_start_ns) / 1e6
                turn = item.turn
                asyncio.get_running_loop().call_later(
                    max(0.0, remaining) / 1000, self._playback_ended, live, turn
                )
        elif isinstance(item, DoneItem):
            if item.turn < turns.stale_below:
                return
            done = turns.render_done(item.turn, monotonic_ns())
            if done is not None:
                for name, value in done.latency_ms.to_dict().items():
                    window = self.latencies.setdefault(name, deque(maxlen=_LATENCY_WINDOW))
                    window.append(value)
                await self._deliver(live, live.conn.send_event(done))
        elif isinstance(item, EventItem):
            await self._deliver(live, live.conn.send_event(item.event))

    def _check_unread(self, live: LiveSession) -> None:
        """A client that does not read shows as a growing backlog of unacknowledged
        bytes on its socket, long before a send blocks when the kernel buffers are large
        (and paced audio fills them slowly): past ``unread_limit_ms`` of audio it is
        degraded; past that much more again, in the new format, closed."""
        backlog = unread_backlog(live.socket_fd)
        if backlog < 0:
            return
        limit = int(self.options.unread_limit_ms * live.turns.output_ms_bytes())
        if live.unread_mark < 0 and backlog > limit:
            live.unread_mark = backlog
            self._slow_client(live)
        elif live.unread_mark >= 0 and backlog > live.unread_mark + limit:
            live.unread_mark = 1 << 62  # once
            self._slow_client(live)

    def _playback_ended(self, live: LiveSession, turn: int) -> None:
        if live.turns.playing == turn and live.sid in self.sessions:
            live.turns.playing = None
            self._control(live, Kind.PLAYBACK, b"\x00")

    async def _deliver(self, live: LiveSession, actions: Sequence[Action]) -> None:
        """Actions raised while sending: their text goes out now, in place, not behind
        the rest of the queue."""
        for action in actions:
            if isinstance(action, SendText):
                await _timed(live, live.websocket.send_text(action.text))
            else:
                self._perform(live, [action])

    # -- the egress task -------------------------------------------------------------

    async def _egress_loop(self) -> None:
        link = self.link
        readers = [
            AsyncRingReader(link.control_ring),
            AsyncRingReader(link.events_ring),
            AsyncRingReader(link.from_pipeline),
        ]
        try:
            while True:
                busy = False
                self._flush_pending()
                for record in link.control():
                    busy = True
                    self._on_control(record)
                now = monotonic_ns()
                # Events first: a barge-in must overtake the answer audio behind it.
                for record in link.events():
                    busy = True
                    self._dispatch(record, now)
                for record in link.receive():
                    busy = True
                    # Turn events count from the fast path only; copies that crossed the
                    # later stages would repeat them late.
                    if record.kind != Kind.VAD_EVENT:
                        self._dispatch(record, now)
                if self.draining and now >= self.drain_deadline_ns:
                    for live in list(self.sessions.values()):
                        self._perform(live, live.conn.shutdown_deadline())
                if not busy:
                    try:
                        await wait_any(readers, _WAIT_SLICE_S)
                    except RingError:
                        # A producer that died (a worker being replaced) raises at once:
                        # do not spin on its ring until the replacement attaches. A
                        # closed ring ends the loop at the next read.
                        await asyncio.sleep(0.01)
                else:
                    await asyncio.sleep(0)  # let the senders run between batches
        except RingClosed:
            # The supervisor removed the node's rings: after a drain nobody is left; if it
            # went down without one, the sessions still here can get no answer.
            log.info("gateway %d: the node's rings are closed", self.index)
            for live in list(self.sessions.values()):
                self._perform(live, live.conn.shutdown_deadline())
        finally:
            for reader in readers:
                reader.close()

    def _dispatch(self, record: Received, now: int) -> None:
        live = self.sessions.get(record.session)
        if live is None:
            return
        turns = live.turns
        counted = turns.counters
        before = (
            counted.dropped_stale,
            counted.turns_committed,
            counted.turns_cancelled,
            counted.turns_failed,
        )
        if record.kind == Kind.BARGE_IN:
            self.counters["barge_ins"] += 1
        # What on_record logs names the session (session_context without its generator:
        # this runs for every record).
        token = current_session.set(live.sid)
        try:
            turns.on_record(record, now)
        except ValueError as exc:  # a malformed payload: never the end of the gateway
            self.counters["records_malformed"] += 1
            # The record's repr names its kind and size, never its payload.
            log.warning("malformed %r dropped (%s)", record, exc, extra={"session": live.sid})
        finally:
            current_session.reset(token)
        after = (
            counted.dropped_stale,
            counted.turns_committed,
            counted.turns_cancelled,
            counted.turns_failed,
        )
        if before != after:
            self.counters["records_stale_dropped"] += counted.dropped_stale - before[0]
            self.counters["turns_committed"] += counted.turns_committed - before[1]
            self.counters["turns_cancelled"] += counted.turns_cancelled - before[2]
            self.counters["turns_failed"] += counted.turns_failed - before[3]
        if turns.overflowed:
            turns.overflowed = False
            self._slow_client(live)

    def _slow_client(self, live: LiveSession) -> None:
        actions = live.conn.degrade_output()
        if any(isinstance(a, SwitchOutput) for a in actions):
            self.counters["slow_client_degraded"] += 1
            # The backlog is what the client could not take: drop it rather than close.
            live.turns.queue.drop_turns_below(1 << 62)
        else:
            self.counters["slow_client_closed"] += 1
        self._perform(live, actions)

    def _on_control(self, record: Received) -> None:
        if record.kind == Kind.DRAIN:
            self.begin_drain(DrainEvent.unpack(record.payload).deadline_ns)
        elif record.kind == Kind.WORKER_RESTARTED:
            event = WorkerRestarted.unpack(record.payload)
            log.warning(
                "worker %s restarted: failing the turns in flight", event.stage.name.lower()
            )
            for live in list(self.sessions.values()):
                self._reopen(live)

    def _reopen(self, live: LiveSession) -> None:
        turns = live.turns
        in_flight = turns.turns_in_flight()
        if in_flight:
            self.counters["turns_failed"] += len(in_flight)
            error = ErrorEvent(
                ErrorCode.INTERNAL_ERROR.value,
                "a pipeline worker restarted; the turn in progress was lost",
                fatal=False,
            )
            turns.queue.push(TextItem(error.to_json(), error.type))
            turns.fail_turn(in_flight[-1], "worker restarted")
        # An answer that is complete here (all its audio arrived) lost nothing: it plays
        # on. Only the turns in flight failed, above.
        turns.turn += 1
        if live.open_payload:
            self._control(live, Kind.SESSION_OPEN, live.open_payload, Flag.REOPEN)


async def _timed(live: LiveSession, send: Awaitable[None]) -> None:
    live.sending_since_ns = monotonic_ns()
    try:
        await send
    finally:
        live.sending_since_ns = 0


def _occupancy(ring: Any) -> int:
    return int(ring.stats().get("occupancy_bytes", 0))
