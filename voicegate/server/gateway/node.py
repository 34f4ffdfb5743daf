"""A gateway process's server: the Starlette app and the one egress task.

The gateway only moves frames. It mounts every registered wire protocol
(``voicegate.server.protocols``) at its path; each connection is a ``Connection`` whose
coroutine feeds client frames to its protocol's state machine and writes audio into the
ring to VAD (a full ring drops and counts the frame: the event loop never waits on a
ring). One egress task per process reads the event, answer and control rings
(doorbell-based waiting, never a blocking call on the loop), hands each record to its
session's ``Connection`` and so to that session's bounded send queue; one sender task per
connection drains that queue into the socket. Every ring write goes through ``_write``.
A client that does not keep up fills only its own queue: it is degraded to its fallback
format, then closed with ``slow_client``.

Admission is node-wide: every gateway publishes its started sessions in the SESSIONS
field of its status block, and a session may start while the sum over the gateways
whose process is alive is below ``max_sessions``. A connection counts once its
``session.start`` is accepted (checked at the handshake and again then), so silent
sockets take no capacity: the per-address connection limit and the ``session.start``
timeout bound them instead ([limits], ``voicegate.server.gateway.limits``). Two gateways
admitting in the same instant may each see the other's count before its increment, so
the node can exceed the limit by at most ``gateways - 1`` sessions for that instant;
with one gateway it is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from voicegate.core.clock import monotonic_ns
from voicegate.core.config import GatewayOptions, NodeConfig, end_of_turn_silence_ms
from voicegate.core.kinds import Kind, session_id
from voicegate.core.logs import current_session
from voicegate.core.payloads import DrainEvent, WorkerRestarted
from voicegate.ext import Record
from voicegate.ext.aio import AsyncRingReader, wait_any
from voicegate.ext.errors import RingClosed, RingError
from voicegate.server.gateway.connection import Connection, InputBudget
from voicegate.server.gateway.limits import (
    AddressLimiter,
    TokenBucket,
    audio_bucket,
    fair_share_refuses,
)
from voicegate.server.ops import prometheus
from voicegate.server.protocols import PROTOCOLS
from voicegate.server.protocols.base import ForwardAudio, Refusal, WireProtocol
from voicegate.server.protocols.native_events import ResponseDone
from voicegate.server.security.auth import AccessGuard, GatewaySecurity
from voicegate.server.web import web_routes
from voicegate.workers.runtime.gateway_link import GatewayLink, Received
from voicegate.workers.runtime.metrics import RingObservers, read_node_status
from voicegate.workers.runtime.status import Field, State, StatusBlock
from voicegate.workers.runtime.topology import Topology

log = logging.getLogger("voicegate.gateway")

_WAIT_SLICE_S = 0.25  # the egress task wakes at least this often (drain deadline, beat)
_LATENCY_WINDOW = 1024  # turns kept for the latency summaries of /metrics


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
        self.sessions: dict[int, Connection] = {}  # every open connection
        self.started: set[int] = set()  # the sessions that count against capacity
        self.limits = config.limits
        self.addresses = AddressLimiter(config.limits.max_connections_per_address)
        self.end_of_turn_ms = end_of_turn_silence_ms(config.workers["vad"].options)
        for protocol in PROTOCOLS:
            if protocol.configure is not None:
                protocol.configure(config)
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
            kind=Kind.SESSION_CLOSE,
            session=session_id(self.index, 0),
            turn=0,
            origin_ns=monotonic_ns(),
        )
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
            live.perform(live.wire.begin_shutdown())
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
                *(
                    WebSocketRoute(p.path, functools.partial(self._serve, protocol=p))
                    for p in PROTOCOLS
                ),
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
            name in status and status[name].state is State.READY for name in self.config.workers
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

    async def _serve(self, websocket: WebSocket, protocol: WireProtocol) -> None:
        grant = await self.guard.admit(websocket, protocol.name)
        if grant is None:  # refused before the upgrade: no session
            return
        sid = session_id(self.index, next(self._locals))
        # Every record logged while serving this connection names the session; the
        # sender task copies this context when it is created.
        session_token = current_session.set(sid)
        query = dict(websocket.query_params)
        wire = protocol.open(f"{sid:08x}", query, self.options.limits)
        live = Connection(
            self, sid, wire, websocket, self.end_of_turn_ms, subprotocol=grant.subprotocol
        )
        wire.admit = lambda: not self.draining and self.free_capacity() > 0
        address = websocket.client.host if websocket.client is not None else ""
        crowded = not self.addresses.acquire(address)
        refused = crowded or self.draining or self.free_capacity() <= 0
        if refused:
            self.counters["sessions_rejected"] += 1
        else:
            self.sessions[sid] = live
        self.guard.opened(grant, admitted=not refused)
        try:
            if crowded:
                self.counters["connections_refused_address"] += 1
                opening = wire.connect() + wire.refuse(
                    Refusal.TOO_MANY_CONNECTIONS,
                    "too many connections from this address, try again later",
                )
            elif self.draining:  # stopping, not full: server_shutdown and 1001
                opening = [*wire.connect(), *wire.begin_shutdown()]
            else:
                opening = wire.connect(at_capacity=refused)
            await live.run(
                opening,
                refused=refused,
                start_timeout_s=self.limits.session_start_timeout_s,
                idle_timeout_s=self.limits.idle_timeout_s,
            )
        finally:
            self.sessions.pop(sid, None)
            if not crowded:
                self.addresses.release(address)
            if sid in self.started:
                self.started.discard(sid)
                self._publish_sessions()
            self._check_drained()
            self.guard.closed(grant, admitted=not refused)
            current_session.reset(session_token)

    # -- what a connection asks of the node (ConnectionHost) ---------------------------

    def holds(self, connection: Connection) -> bool:
        return connection.sid in self.sessions

    def session_opened(self, connection: Connection) -> None:
        self.started.add(connection.sid)
        self.counters["sessions"] += 1
        self._publish_sessions()
        limits = self.limits
        connection.budget = InputBudget(
            audio_bucket(limits.audio_burst_ms),
            TokenBucket(limits.text_inputs_per_s, limits.text_input_burst),
            f"audio more than {limits.audio_burst_ms:g} ms ahead of real time",
            f"text.input more often than {limits.text_inputs_per_s:g} per second",
        )

    def turn_done(self, done: ResponseDone) -> None:
        for name, value in done.latency_ms.to_dict().items():
            window = self.latencies.setdefault(name, deque(maxlen=_LATENCY_WINDOW))
            window.append(value)

    def forward_audio(self, connection: Connection, action: ForwardAudio) -> None:
        ring = self.link.to_pipeline
        budget = connection.budget
        if budget is not None and fair_share_refuses(
            budget.audio_ms.deficit(), ring.available(), ring.capacity
        ):
            self.counters["frames_in_dropped"] += 1
            self.counters["frames_in_dropped_unfair"] += 1
            return
        now = monotonic_ns()
        connection.turns.input_arrived(action.stream_ms + action.audio.duration_ms, now)
        record = Record(
            kind=Kind.AUDIO_IN,
            session=connection.sid,
            turn=connection.turns.turn,
            seq=connection.next_seq(),
            origin_ns=now,
            payload=action.audio.data,
        )
        if self.link.send(record, publish=False):
            self.counters["frames_in"] += 1
            if not self._publish_due:
                # Every frame that arrives in this turn of the event loop becomes visible
                # to VAD at its end, at once: one wake-up of the worker, not one per frame.
                self._publish_due = True
                asyncio.get_running_loop().call_soon(self._publish_staged)
        else:
            self.counters["frames_in_dropped"] += 1

    def write(self, record: Record[bytes]) -> None:
        # Control must not be lost, and the ring has one producer (this loop): what does
        # not fit waits in order in ``_pending`` and the egress task retries it.
        if self._pending or not self.link.send(record):
            self._pending.append(record)

    def _flush_pending(self) -> None:
        while self._pending and self.link.send(self._pending[0]):
            self._pending.popleft()

    def _publish_staged(self) -> None:
        self._publish_due = False
        with contextlib.suppress(RingClosed):  # the node is going down: nobody reads
            self.link.publish()

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
                        live.perform(live.wire.shutdown_deadline())
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
                live.perform(live.wire.shutdown_deadline())
        finally:
            for reader in readers:
                reader.close()

    def _dispatch(self, record: Received, now: int) -> None:
        live = self.sessions.get(record.session)
        if live is not None:
            live.on_record(record, now)

    def _on_control(self, record: Received) -> None:
        if record.kind == Kind.DRAIN:
            self.begin_drain(DrainEvent.unpack(record.payload).deadline_ns)
        elif record.kind == Kind.WORKER_RESTARTED:
            event = WorkerRestarted.unpack(record.payload)
            log.warning(
                "worker %s restarted: failing the turns in flight", event.stage.name.lower()
            )
            for live in list(self.sessions.values()):
                live.reopen()


def _occupancy(ring: Any) -> int:
    return int(ring.stats().get("occupancy_bytes", 0))
