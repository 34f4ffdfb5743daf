"""The supervisor: builds a node's shared memory, runs its workers, replaces failed ones.

Lifecycle of ``Supervisor.run``:

1. Claim the node name through its status block ``vg-<node>-node.status``: a live supervisor
   of the same node is an error; anything a dead one left (rings, semaphores, status
   blocks) is removed.
2. Create every ring of the topology (the supervisor owns them and alone unlinks them,
   so a worker's death never takes a ring with it) and a status block per process.
3. Spawn one process per stage (spawn start method, pinned, named ``voicegate: <stage>``)
   and wait for each to report ready; any failure here ends the start with the reason.
4. Supervise: a worker whose process ends, or whose heartbeat is older than
   ``health.heartbeat_timeout_s`` (it is then killed with SIGKILL: that also ends a
   SIGSTOPped one), is replaced after a backoff that doubles per failure. At detection
   every gateway gets WORKER_RESTARTED on its control ring, so the sessions with a turn in
   flight fail that turn and re-open with the next one; the replacement attaches to the
   same rings and status block and no other worker restarts. A worker the kernel shows
   stopped (SIGSTOP, a debugger) for ``health.stopped_timeout_s`` is killed the same way,
   without waiting for its heartbeat to age. More than
   ``health.max_restarts`` failures of one worker within ``health.restart_window_s`` end
   the supervisor with exit status 1 and the reason, for the service manager to restart
   the node.
   A janitor process (``voicegate.workers.janitor``) waits on a pipe only the supervisor
   holds: if the supervisor is killed, its workers and gateways die with it and the
   janitor removes what it left in /dev/shm at once.
5. On SIGTERM or SIGINT: DRAIN to every gateway (stop admitting sessions, finish turns in
   flight, close the rest with 1001 at the deadline); wait until every attached gateway
   reports drained or ``node.drain_timeout_s`` passes; SIGTERM the workers, SIGKILL those
   still there after ``node.stop_timeout_s``; unlink every segment and semaphore. A
   second signal skips what is left of the drain.

With a ``Notifier`` (``voicegate serve`` passes one; it does nothing unless systemd set
``$NOTIFY_SOCKET``) the service manager hears ``READY=1`` once ``on_ready`` returned (the
gateways listen), ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` from the supervise loop
while every worker is running, ``STATUS=<n> sessions`` when the gateways' session count
changes, ``STOPPING=1`` on the first SIGTERM/SIGINT and ``STATUS=failed: <reason>`` when
the node gives up.

Signals are queued by the handler and dispatched from the loop to ``handle_<signal>``
methods; a wake-up pipe interrupts the wait so that they are handled at once.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

import posix_ipc

from voicegate.core.clock import NS_PER_S, monotonic_ns
from voicegate.core.config import NodeConfig
from voicegate.core.kinds import Kind
from voicegate.core.payloads import DrainEvent, RestartReason, StageId, WorkerRestarted
from voicegate.ext import Record
from voicegate.ext.errors import RingError
from voicegate.ext.procinfo import process_state
from voicegate.workers import janitor
from voicegate.workers.process import WORKER_BLOCKED_SIGNALS, WorkerSpec, worker_main
from voicegate.workers.rings import cleanup_stale, ring_class
from voicegate.workers.status import Field, State, StatusBlock, remove_stale_blocks
from voicegate.workers.topology import Topology

if TYPE_CHECKING:
    from voicegate.ext._ring import Ring
    from voicegate.server.sdnotify import Notifier

log = logging.getLogger("voicegate.supervisor")

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How long a node block with no valid header is taken for one being created.
_HALF_MADE_GRACE_S = 2.0


class NodeFailureError(Exception):
    """The node cannot go on; the message is the reason."""


class Children(Protocol):
    """Processes other than the workers that the supervisor's loop keeps running (the
    gateways of ``voicegate serve``), once ``on_ready`` has started them."""

    def sentinels(self) -> list[int]:
        """What to wait on besides the workers: each becomes ready when a child dies."""

    def check(self, now: int) -> None:
        """Replace dead children; raise to end the node (the message is the reason)."""

    def whole(self) -> bool:
        """Every child runs (the watchdog is pinged only then)."""


class SlotState(Enum):
    STOPPED = "stopped"
    STARTING = "starting"  # spawned, not ready yet
    RUNNING = "running"
    BACKOFF = "backoff"  # failed, waiting to be started again


@dataclass
class Slot:
    """One worker position of the node and the process currently filling it."""

    name: str
    status: StatusBlock
    process: BaseProcess | None = None
    state: SlotState = SlotState.STOPPED
    generation: int = 0
    spawned_ns: int = 0
    down_ns: int = 0  # when the last failure was detected; 0 before any
    restart_at_ns: int = 0
    stopped_since_ns: int = 0  # when the process was first seen stopped; 0: running
    failures: deque[int] = field(default_factory=deque)


class Supervisor:
    def __init__(
        self,
        config: NodeConfig,
        *,
        on_ready: Callable[[], None] | None = None,
        notifier: Notifier | None = None,
        children: Children | None = None,
    ) -> None:
        self.config = config
        self.children = children
        # Called once every worker is ready (``voicegate serve`` starts its gateway
        # processes there); an exception from it ends the node with its message.
        self.on_ready = on_ready
        # The service manager's view of the node (sd_notify): READY=1 after on_ready,
        # WATCHDOG=1 while every worker is healthy, STATUS=<sessions>, STOPPING=1.
        self.notifier = notifier
        # Called on SIGHUP (systemctl reload): serve forwards it to its gateways, which
        # reload their TLS certificate. Without it SIGHUP is logged and ignored.
        self.on_reload: Callable[[], None] | None = None
        self._notified_ready = False
        self.topology = Topology(config)
        self.reason = ""  # why run() returned non-zero
        self._mp = multiprocessing.get_context("spawn")
        self._rings: list[Ring] = []
        self._control: list[Ring] = []
        self._gateways: list[StatusBlock] = []
        self._slots: list[Slot] = []
        self._node: StatusBlock | None = None
        self._signals: deque[int] = deque()
        self._wake_r = self._wake_w = -1
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup_fd = -1
        self._janitor: subprocess.Popen[bytes] | None = None
        self._stop_requested = False
        self._skip_drain = False
        self._draining = False

    # -- entry point ----------------------------------------------------------------

    def run(self) -> int:
        """Run the node until a signal stops it (0) or it cannot go on (1; ``reason``
        says why). Call it from the main thread: it installs the signal handlers."""
        code = 0
        try:
            self._install_signals()
            self._claim_node()
            # Removes what this supervisor leaves in /dev/shm should it be killed.
            self._janitor = janitor.start(self.topology.prefix)
            try:
                self._create_shared_memory()
            except (OSError, ValueError, RingError, posix_ipc.Error) as exc:
                raise NodeFailureError(f"cannot create the node's shared memory: {exc}") from exc
            self._start_workers()
            if not self._stop_requested:
                assert self._node is not None
                self._node.state = State.READY
                log.info("node %s ready", self.config.node.name)
                if self.on_ready is not None:
                    try:
                        self.on_ready()
                    except Exception as exc:
                        raise NodeFailureError(f"starting the gateways failed: {exc}") from exc
                if not self._stop_requested:
                    # After on_ready: the gateways listen, so READY=1 means "connect now".
                    self._notify("ready", self._sessions_status())
                    self._notified_ready = True
                while not self._stop_requested:
                    self._supervise_once()
            self._drain()
        except NodeFailureError as exc:
            self.reason = str(exc)
            log.error("node %s stopping: %s", self.config.node.name, self.reason)
            self._notify("status", f"failed: {self.reason}")
            code = 1
        finally:
            self._stop_workers()
            self._remove_shared_memory()
            if self._janitor is not None:
                janitor.stop(self._janitor)
                self._janitor = None
            self._restore_signals()
            if self.notifier is not None:
                self.notifier.close()
        log.info("node %s stopped", self.config.node.name)
        return code

    # -- signals --------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_w)
        for sig in HANDLED_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._queue_signal)

    def _restore_signals(self) -> None:
        if self._wake_r < 0:
            return
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_wakeup_fd)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_r = self._wake_w = -1

    def _queue_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _dispatch_signals(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass
        while self._signals:
            sig = signal.Signals(self._signals.popleft())
            getattr(self, f"handle_{sig.name.lower()}")()

    def handle_sigterm(self) -> None:
        self._request_stop("SIGTERM")

    def handle_sigint(self) -> None:
        self._request_stop("SIGINT")

    def handle_sighup(self) -> None:
        log.info("SIGHUP: reloading")
        if self.on_reload is not None:
            self.on_reload()

    def _request_stop(self, why: str) -> None:
        if self._stop_requested:
            log.warning("%s again: skipping the rest of the drain", why)
            self._skip_drain = True
            return
        log.info("%s: shutting down", why)
        self._stop_requested = True
        self._notify("stopping", f"stopping ({why}): draining {self._session_count()} sessions")

    # -- shared memory --------------------------------------------------------------

    def _claim_node(self) -> None:
        """Create the node's status block, which doubles as the node's lock: creation
        is exclusive, and an existing block names the supervisor holding the node."""
        name = self.topology.node_block
        node_name = self.config.node.name
        unreadable_since: float | None = None
        for _ in range(1000):
            try:
                self._node = StatusBlock.create(name)
                break
            except posix_ipc.ExistentialError:
                pass
            try:
                old = StatusBlock.attach(name)
            except FileNotFoundError:
                continue  # removed in between: try to create it again
            except ValueError:
                # Being created by another supervisor right now, or left half made by a
                # crash: wait a little before deciding it is garbage.
                now = time.monotonic()
                unreadable_since = unreadable_since or now
                if now - unreadable_since < _HALF_MADE_GRACE_S:
                    time.sleep(0.02)
                else:
                    StatusBlock.unlink_name(name)
                continue
            alive, pid = old.creator_alive(), old.get(Field.CREATOR_PID)
            old.close()
            if alive:
                raise NodeFailureError(
                    f"node {node_name!r} is already running (supervisor pid {pid})"
                )
            log.warning("node %s: removing what a crashed supervisor (pid %d) left", node_name, pid)
            StatusBlock.unlink_name(name)
        else:
            raise NodeFailureError(f"node {node_name!r}: cannot create {name!r}")
        self._node.claim()
        self._node.state = State.STARTING
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        prefix = self.topology.prefix
        removed = remove_stale_blocks(prefix) + cleanup_stale(prefix)
        if removed:
            log.warning("removed %d stale shared-memory objects under %s", len(removed), prefix)

    def _create_shared_memory(self) -> None:
        try:
            ring_type = ring_class(self.config.rings.impl)
        except RuntimeError as exc:
            raise NodeFailureError(str(exc)) from exc
        spin_us = self.config.rings.spin_us
        control = {spec.name for spec in self.topology.control}
        for spec in self.topology.rings:
            # The supervisor writes the control rings itself; the rest it only owns.
            if spec.name in control:
                ring = ring_type.create(spec.name, spec.capacity, role="producer", spin_us=spin_us)
                self._control.append(ring)
            else:
                ring = ring_type.create(spec.name, spec.capacity, role="owner", spin_us=spin_us)
            self._rings.append(ring)
        for gateway in self.topology.gateways:
            self._gateways.append(StatusBlock.create(self.topology.status_block(gateway)))
        for stage in self.topology.stages:
            self._slots.append(Slot(stage, StatusBlock.create(self.topology.status_block(stage))))

    def _remove_shared_memory(self) -> None:
        for ring in self._rings:
            try:
                ring.close()
            except Exception:
                log.exception("closing ring %s", ring.name)
        self._rings.clear()
        self._control.clear()
        blocks = [slot.status for slot in self._slots] + self._gateways
        for block in blocks:
            block.close()
            StatusBlock.unlink_name(block.name)
        self._slots.clear()
        self._gateways.clear()
        if self._node is not None:
            self._node.state = State.STOPPED
            self._node.close()
            StatusBlock.unlink_name(self._node.name)
            self._node = None

    # -- workers --------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> None:
        slot.generation += 1
        status = slot.status
        status.set(Field.GENERATION, slot.generation)
        status.set(Field.PID, 0)
        status.set(Field.HEARTBEAT_NS, 0)
        status.last_error = ""
        status.state = State.STARTING
        spec = WorkerSpec(slot.name, self.config, slot.generation, os.getpid())
        process = self._mp.Process(target=worker_main, args=(spec,), name=f"voicegate-{slot.name}")
        # The child inherits the signal mask across fork and exec: it starts with SIGTERM
        # blocked in every thread, including those its imports start (OpenBLAS) before it
        # could block it itself. It polls for it instead (see process.py). The spawn
        # start method launches multiprocessing's resource tracker on first use and
        # unblocks SIGTERM after doing so: launch it first, outside the masked section.
        resource_tracker.ensure_running()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_BLOCKED_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        slot.process = process
        slot.state = SlotState.STARTING
        slot.spawned_ns = monotonic_ns()

    def _start_workers(self) -> None:
        for slot in self._slots:
            self._spawn(slot)
        while not self._stop_requested and any(
            slot.state is not SlotState.RUNNING for slot in self._slots
        ):
            self._supervise_once(starting=True)

    def _supervise_once(self, *, starting: bool = False) -> None:
        self._wait(self._next_timeout_s())
        self._dispatch_signals()
        now = monotonic_ns()
        for slot in self._slots:
            self._check(slot, now, starting)
        if (
            self._notified_ready
            and self.children is not None
            and not (self._draining or self._stop_requested)
        ):
            try:
                self.children.check(now)
            except Exception as exc:
                raise NodeFailureError(str(exc)) from exc
        if self._notified_ready:
            self._report(now)

    # -- service manager --------------------------------------------------------------

    def _report(self, now: int) -> None:
        """Watchdog ping and session count, from the loop that proves the node's health:
        no ping while a worker is down, so systemd restarts a node that stays broken."""
        if self.notifier is None:
            return
        whole = self.children is None or self.children.whole()
        if whole and all(slot.state is SlotState.RUNNING for slot in self._slots):
            self._notify("watchdog_if_due", now / NS_PER_S)
        if not self._stop_requested:
            self._notify("status", self._sessions_status())

    def _session_count(self) -> int:
        return sum(block.get(Field.SESSIONS) for block in self._gateways)

    def _sessions_status(self) -> str:
        count = self._session_count()
        return f"{count} session{'' if count == 1 else 's'}"

    def _notify(self, method: str, *args: Any) -> None:
        if self.notifier is None:
            return
        try:
            getattr(self.notifier, method)(*args)
        except OSError as exc:
            # A unit whose socket is wrong cannot be told anything: stop trying. Without
            # pings a watchdog restarts it, which is the right outcome for a broken unit.
            log.error("%s; no more notifications to the service manager", exc)
            self.notifier.close()
            self.notifier = None

    def _next_timeout_s(self) -> float:
        timeout = self.config.health.heartbeat_interval_s
        if self.notifier is not None:
            interval = self.notifier.watchdog_interval()
            if interval is not None:
                # Pings are due every interval / 2: wake often enough to be on time.
                timeout = min(timeout, interval / 4)
        now = monotonic_ns()
        for slot in self._slots:
            if slot.state is SlotState.STARTING:
                timeout = min(timeout, 0.01)  # readiness is polled from the status block
            elif slot.state is SlotState.BACKOFF:
                timeout = min(timeout, max(0.0, (slot.restart_at_ns - now) / NS_PER_S))
        return timeout

    def _wait(self, timeout_s: float) -> None:
        waitables: list[Any] = [self._wake_r]
        for slot in self._slots:
            if slot.process is not None:
                waitables.append(slot.process.sentinel)
        if self.children is not None and self._notified_ready:
            waitables += self.children.sentinels()
        multiprocessing.connection.wait(waitables, timeout_s)

    def _check(self, slot: Slot, now: int, starting: bool) -> None:
        health = self.config.health
        process = slot.process
        if slot.state in (SlotState.STARTING, SlotState.RUNNING):
            assert process is not None
            if process.exitcode is not None:
                self._failed(slot, RestartReason.EXITED, now, starting)
            elif slot.state is SlotState.STARTING:
                if slot.status.state is State.READY:
                    self._ready(slot, now)
                elif now - slot.spawned_ns > health.ready_timeout_s * NS_PER_S:
                    self._kill(slot)
                    self._failed(slot, RestartReason.NOT_READY, now, starting)
            elif slot.status.heartbeat_age_s(
                now
            ) > health.heartbeat_timeout_s or _stopped_for_too_long(
                slot, now, health.stopped_timeout_s
            ):
                self._kill(slot)
                self._failed(slot, RestartReason.UNRESPONSIVE, now, starting)
        elif (
            slot.state is SlotState.BACKOFF
            and now >= slot.restart_at_ns
            and not self._draining
            and not self._stop_requested
        ):
            self._spawn(slot)

    def _ready(self, slot: Slot, now: int) -> None:
        slot.state = SlotState.RUNNING
        load_ms = slot.status.get(Field.LOAD_NS) / 1e6
        pid = slot.process.pid if slot.process else 0
        if slot.down_ns:
            replace_ns = now - slot.down_ns
            slot.status.set(Field.LAST_REPLACE_NS, replace_ns)
            log.info(
                "worker %s replaced in %.0f ms (generation %d, pid %s, model load %.1f ms)",
                slot.name,
                replace_ns / 1e6,
                slot.generation,
                pid,
                load_ms,
            )
        else:
            log.info(
                "worker %s started in %.0f ms (pid %s, model load %.1f ms)",
                slot.name,
                (now - slot.spawned_ns) / 1e6,
                pid,
                load_ms,
            )

    def _kill(self, slot: Slot) -> None:
        process = slot.process
        if process is None or process.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=10)

    def _failed(self, slot: Slot, reason: RestartReason, now: int, starting: bool) -> None:
        process = slot.process
        assert process is not None
        pid = process.pid or 0
        exit_code = process.exitcode if process.exitcode is not None else -signal.SIGKILL
        process.close()
        slot.process = None
        what = _describe_exit(reason, exit_code, self.config.health.heartbeat_timeout_s)
        if reason is RestartReason.UNRESPONSIVE and slot.stopped_since_ns:
            what = (
                f"was stopped (SIGSTOP or a debugger) for "
                f"{(now - slot.stopped_since_ns) / NS_PER_S:.1f} s"
            )
        slot.stopped_since_ns = 0
        error = slot.status.last_error
        detail = f"{what}: {error}" if error else what
        if starting:
            raise NodeFailureError(f"worker {slot.name} failed to start ({detail})")
        log.warning("worker %s (pid %d) %s; replacing it", slot.name, pid, detail)
        self._notify_gateways(
            WorkerRestarted(StageId.from_name(slot.name), slot.generation, pid, reason, exit_code)
        )
        slot.status.add(Field.RESTARTS, 1)
        slot.status.state = State.FAILED
        slot.failures.append(now)
        window_ns = int(self.config.health.restart_window_s * NS_PER_S)
        while slot.failures and now - slot.failures[0] > window_ns:
            slot.failures.popleft()
        health = self.config.health
        if len(slot.failures) > health.max_restarts:
            raise NodeFailureError(
                f"worker {slot.name} failed {len(slot.failures)} times within "
                f"{health.restart_window_s:g} s (limit {health.max_restarts}); last: {detail}"
            )
        slot.down_ns = now
        if self._draining or self._stop_requested:
            slot.state = SlotState.STOPPED
            return
        backoff = min(
            health.restart_backoff_max_s, health.restart_backoff_s * 2 ** (len(slot.failures) - 1)
        )
        slot.restart_at_ns = now + int(backoff * NS_PER_S)
        slot.state = SlotState.BACKOFF

    def _notify_gateways(self, event: WorkerRestarted) -> None:
        payload = event.pack()
        now = monotonic_ns()
        for index, ring in enumerate(self._control):
            if not ring.try_write(
                Record(
                    kind=Kind.WORKER_RESTARTED,
                    session=0,
                    turn=0,
                    seq=event.generation,
                    origin_ns=now,
                    payload=payload,
                ),
            ):
                log.warning("gateway %d control ring full: WORKER_RESTARTED not delivered", index)

    # -- shutdown -------------------------------------------------------------------

    def _drain(self) -> None:
        self._draining = True
        if self._node is not None:
            self._node.state = State.DRAINING
        timeout = self.config.node.drain_timeout_s
        deadline = monotonic_ns() + int(timeout * NS_PER_S)
        payload = DrainEvent(deadline).pack()
        for index, ring in enumerate(self._control):
            if not ring.try_write(
                Record(
                    kind=Kind.DRAIN,
                    session=0,
                    turn=0,
                    origin_ns=monotonic_ns(),
                    payload=payload,
                ),
            ):
                log.warning("gateway %d control ring full: DRAIN not delivered", index)
        log.info("draining: up to %.1f s for turns in flight", timeout)
        while not self._skip_drain and monotonic_ns() < deadline:
            if all(_gateway_done(block) for block in self._gateways):
                break
            self._supervise_once()

    def _stop_workers(self) -> None:
        live = [slot for slot in self._slots if slot.process is not None]
        for slot in live:
            assert slot.process is not None and slot.process.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.process.pid, signal.SIGTERM)
                os.kill(slot.process.pid, signal.SIGCONT)  # a stopped one must run to exit
        deadline = monotonic_ns() + int(self.config.node.stop_timeout_s * NS_PER_S)
        for slot in live:
            process = slot.process
            assert process is not None
            process.join(timeout=max(0.0, (deadline - monotonic_ns()) / NS_PER_S))
            if process.exitcode is None:
                log.warning("worker %s did not stop in time: killing it", slot.name)
                self._kill(slot)
            process.close()
            slot.process = None
            slot.state = SlotState.STOPPED


def _stopped_for_too_long(slot: Slot, now: int, timeout_s: float) -> bool:
    """Whether the slot's process has been stopped (state T or t) for ``timeout_s``."""
    pid = slot.process.pid if slot.process is not None else None
    state = process_state(pid) if pid else None
    if state is None or state.state not in ("T", "t"):
        slot.stopped_since_ns = 0
        return False
    if not slot.stopped_since_ns:
        slot.stopped_since_ns = now
    return now - slot.stopped_since_ns >= timeout_s * NS_PER_S


def _gateway_done(block: StatusBlock) -> bool:
    if block.get(Field.PID) == 0 or not block.holder_alive():
        return True
    return block.state in (State.DRAINED, State.STOPPED)


def _describe_exit(reason: RestartReason, exit_code: int, heartbeat_timeout_s: float) -> str:
    if reason is RestartReason.UNRESPONSIVE:
        return f"stopped answering (no heartbeat for {heartbeat_timeout_s:g} s)"
    if reason is RestartReason.NOT_READY:
        return "did not report ready in time"
    if exit_code < 0:
        try:
            return f"was killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"was killed by signal {-exit_code}"
    return f"exited with status {exit_code}"
