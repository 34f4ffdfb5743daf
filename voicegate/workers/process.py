"""The body of a worker process, started by the supervisor with the spawn method.

The child pins itself to its CPU set, names itself ``voicegate: <stage>`` in the process
list, asks to die with the supervisor, loads its stage, attaches its rings (a
replacement takes over the dead holder's place in each ring) and serves until SIGTERM,
which it keeps blocked and polls between batches.
SIGINT is ignored: on Ctrl-C the terminal signals the whole process group, and shutdown
order belongs to the supervisor.

Exit status: 0 after SIGTERM, 1 when the stage or the runtime failed (the reason is in
the status block's last error and in the log).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from setproctitle import setproctitle

from voicegate.core.clock import monotonic_ns
from voicegate.core.config import NodeConfig
from voicegate.core.logs import setup_node_logging
from voicegate.ext.ring_format import Role
from voicegate.workers.procinfo import die_with_parent, pin_to
from voicegate.workers.rings import ring_class
from voicegate.workers.stage import Stage, StageContext
from voicegate.workers.status import Field, Histogram, State, StatusBlock
from voicegate.workers.topology import RingSpec, Topology
from voicegate.workers.worker import Worker

log = logging.getLogger("voicegate.worker")

# Blocked in worker processes from their first instruction on.
WORKER_BLOCKED_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs; pickled to the spawned child."""

    stage: str  # "vad", "stt", ...
    config: NodeConfig
    generation: int
    supervisor_pid: int


def load_stage_class(path: str) -> type[Stage[Any]]:
    """Import "package.module:Class" and check that it is a Stage."""
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"stage {path!r}: cannot import module {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise TypeError(f"stage {path!r}: {class_name!r} is not a Stage subclass in {module_name}")
    return cls


def worker_main(spec: WorkerSpec) -> None:
    """Entry point of the spawned worker process."""
    # SIGTERM stays blocked and is polled between batches: a handler would interrupt
    # the semaphore waits inside the ring (sem_timedwait is never restarted). The
    # supervisor started us with it blocked already, so that no thread started during
    # the imports can take it with the default action.
    signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_BLOCKED_SIGNALS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    if os.getppid() != spec.supervisor_pid:  # the supervisor died before prctl took effect
        os._exit(1)
    setup_node_logging(spec.config.logging)
    name = spec.stage
    cpus = spec.config.cpus_for(name)
    pin_to(cpus)
    setproctitle(f"voicegate: {name}")
    topology = Topology(spec.config)
    status = StatusBlock.attach(topology.status_block(name))
    code = 0
    try:
        code = _serve(spec, topology, status, cpus)
    finally:
        status.close()
    sys.exit(code)


def _serve(
    spec: WorkerSpec,
    topology: Topology,
    status: StatusBlock,
    cpus: tuple[int, ...],
) -> int:
    name = spec.stage
    settings = spec.config.workers[name]
    status.claim()
    status.set(Field.STARTED_NS, monotonic_ns())
    status.state = State.LOADING
    status.beat()
    rings: list[Any] = []
    stage: Stage[Any] | None = None
    try:
        stage = load_stage_class(settings.stage)(
            StageContext(
                name,
                spec.config,
                settings.options,
                cpus,
                spec.generation,
                batch_sink=functools.partial(status.observe_size, Histogram.BATCH),
            )
        )
        start = monotonic_ns()
        stage.load()
        load_ns = monotonic_ns() - start
        ring_type = ring_class(spec.config.rings.impl)
        def attach(specs: list[RingSpec], role: Role) -> list[Any]:
            attached = []
            for ring_spec in specs:
                attached.append(
                    ring_type.attach(ring_spec.name, role, spin_us=topology.spin_us(ring_spec))
                )
                rings.append(attached[-1])
            return attached

        inputs = attach(topology.inputs(name), "consumer")
        outputs = attach(topology.outputs(name), "producer")
        events = attach(topology.events(name), "producer")
        health = spec.config.health
        worker = Worker(
            stage,
            inputs,
            outputs,
            topology.router(name),
            status,
            lossy_outputs=[ring_spec.lossy for ring_spec in topology.outputs(name)],
            event_outputs=events,
            batch_records=spec.config.rings.batch_records,
            heartbeat_interval_s=health.heartbeat_interval_s,
        )
        status.set(Field.LOAD_NS, load_ns)
        status.set(Field.READY_NS, monotonic_ns())
        status.state = State.READY
        log.info(
            "%s ready: generation %d, stage %s, model load %.1f ms, cpus %s",
            name,
            spec.generation,
            settings.stage,
            load_ns / 1e6,
            ",".join(map(str, cpus)),
        )

        def should_stop() -> bool:
            # A supervisor that vanished without PR_SET_PDEATHSIG firing (it only covers
            # the thread that spawned us) is noticed here too.
            return signal.SIGTERM in signal.sigpending() or os.getppid() != spec.supervisor_pid

        worker.run(should_stop)
        stage.unload()
        status.state = State.STOPPED
        log.info("%s stopped", name)
        return 0
    except Exception as exc:
        status.last_error = f"{type(exc).__name__}: {exc}"
        status.state = State.FAILED
        log.error("%s failed: %s\n%s", name, exc, traceback.format_exc())
        return 1
    finally:
        for ring in rings:
            try:
                ring.close()
            except BufferError:
                log.error("%s: a stage kept a payload view of ring %s", name, ring.name)
