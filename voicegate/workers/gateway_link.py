"""A gateway process's end of the node: the rings it writes and reads, and its status.

Gateway ``i`` is the producer of ``gw<i> -> vad`` and the consumer of ``tts -> gw<i>``,
of ``vad -> gw<i>`` (turn events)
and of the supervisor's control ring ``ctl-gw<i>``. Nothing here blocks unless asked to:
``send`` is the hot path and drops (returning False) when the ring is full, as docs/gateway.md
("Ingress") wants of a gateway. Session ids must come from ``voicegate.core.kinds.session_id`` with
this gateway's index, so answers find their way back.

The gateway's duties towards the runtime (the server implements them):

- on WORKER_RESTARTED: every session with a turn in flight gets an error event for that
  turn; every live session sends SESSION_OPEN again with ``Flag.REOPEN`` and its next turn
  (``send_wait``: it must not be dropped), then carries on with that turn;
- on DRAIN: admit no new sessions, let turns in flight finish until the event's deadline,
  close what is left with 1001, then ``set_state(State.DRAINED)``;
- call ``beat`` regularly so operators can see it alive.

Every control record a gateway sends comes back to it from the last stage once the
whole pipeline has processed it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import numpy as np
from typing_extensions import Buffer

from voicegate.core.clock import monotonic_ns
from voicegate.core.config import NodeConfig
from voicegate.ext import Record
from voicegate.workers.rings import ring_class
from voicegate.workers.status import Field, Histogram, State, StatusBlock
from voicegate.workers.topology import RingSpec, Topology, gateway_name

if TYPE_CHECKING:
    from voicegate.ext._ring import Ring
    from voicegate.ext.ring_format import Role

_VECTOR_MIN = 16  # ring-wait samples from one read above which numpy is the cheaper way


# A record copied out of a ring, its payload as bytes: it outlives the read.
Received: TypeAlias = Record[bytes]


class GatewayLink:
    """Attach gateway ``index`` of the node described by ``config``."""

    def __init__(self, config: NodeConfig, index: int) -> None:
        if not 0 <= index < config.node.gateways:
            raise ValueError(f"gateway index {index} is outside 0..{config.node.gateways - 1}")
        self.index = index
        topology = Topology(config)
        ring_type = ring_class(config.rings.impl)
        self._batch = config.rings.batch_records
        self._rings: list[Ring] = []

        def attach(spec: RingSpec, role: Role) -> Ring:
            ring = ring_type.attach(spec.name, role, spin_us=topology.spin_us(spec))
            self._rings.append(ring)
            return ring

        try:
            self.to_pipeline = attach(topology.gateway_in[index], "producer")
            self.from_pipeline = attach(topology.gateway_out[index], "consumer")
            self.events_ring = attach(topology.gateway_events[index], "consumer")
            self.control_ring = attach(topology.control[index], "consumer")
            self.status = StatusBlock.attach(topology.status_block(gateway_name(index)))
        except BaseException:
            for ring in self._rings:
                ring.close()
            raise
        self.status.claim()
        self.status.state = State.READY
        self.status.beat()

    # -- towards the pipeline -------------------------------------------------------

    def send(self, record: Record[Buffer], *, publish: bool = True) -> bool:
        """Write one record; never blocks. False (and counted) when full.

        ``publish=False`` leaves it staged, invisible to the first stage until ``publish``
        (or any later publishing write): a caller that writes many records in one go
        makes the consumer see them, and wakes it, once. The ring writes the publish time
        into the header: the payload is copied once, into the ring."""
        ring = self.to_pipeline
        written = ring.try_write(record) if publish else ring.stage(record)
        if written:
            self.status.add(Field.RECORDS_OUT, 1)
            return True
        self.status.add(Field.DROPPED_OUTPUT, 1)
        return False

    def publish(self) -> None:
        """Make the records staged by ``send(publish=False)`` visible."""
        self.to_pipeline.publish()

    def send_wait(self, record: Record[Buffer], timeout: float | None = None) -> bool:
        """Like ``send`` but waits up to ``timeout`` seconds for room (for control records
        that must not be lost). Blocks: call it off the event loop."""
        ok = self.to_pipeline.write(record, timeout=timeout)
        self.status.add(Field.RECORDS_OUT if ok else Field.DROPPED_OUTPUT, 1)
        return ok

    # -- from the pipeline and the supervisor ---------------------------------------

    def receive(
        self, max_records: int | None = None, timeout: float | None = 0.0
    ) -> list[Received]:
        """Records from the last stage (answer audio and echoed control), copied out;
        waits up to ``timeout`` for the first (0: never waits)."""
        records = self._read(self.from_pipeline, max_records, timeout)
        if records:
            self._observe_waits(records)
            self.status.add(Field.RECORDS_IN, len(records))
        return records

    def _observe_waits(self, records: list[Received]) -> None:
        read_ns = monotonic_ns()
        waits = [read_ns - r.sent_ns for r in records if r.sent_ns]
        if len(waits) > _VECTOR_MIN:
            self.status.observe_many(Histogram.RING_WAIT, np.array(waits, dtype=np.int64))
        else:  # a few records per read, the usual case: numpy would cost more than it saves
            for wait in waits:
                self.status.observe(Histogram.RING_WAIT, wait)

    def events(self, max_records: int | None = None, timeout: float | None = 0.0) -> list[Received]:
        """Turn events straight from the first stage (speech start, pause, end of turn,
        barge-in): they do not queue behind the later stages' model work."""
        return self._read(self.events_ring, max_records, timeout)

    def control(self, timeout: float | None = 0.0) -> list[Received]:
        """Records from the supervisor: WORKER_RESTARTED and DRAIN."""
        return self._read(self.control_ring, None, timeout)

    def _read(self, ring: Ring, max_records: int | None, timeout: float | None) -> list[Received]:
        records = ring.read_batch(max_records or self._batch, timeout=timeout)
        try:
            return [_copy(r) for r in records]
        finally:
            ring.release()
            self.status.beat()

    # -- status ---------------------------------------------------------------------

    def beat(self) -> None:
        self.status.beat()

    def set_state(self, state: State) -> None:
        self.status.state = state

    def close(self) -> None:
        """Detach: mark this gateway stopped and leave the rings (the supervisor owns them)."""
        if not self._rings:
            return
        self.status.state = State.STOPPED
        for ring in self._rings:
            ring.close()
        self._rings.clear()
        self.status.close()

    def __enter__(self) -> GatewayLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _copy(record: Record[memoryview]) -> Received:
    return Record(
        kind=record.kind, session=record.session, turn=record.turn, seq=record.seq,
        origin_ns=record.origin_ns, payload=bytes(record.payload), flags=record.flags,
        sent_ns=record.sent_ns,
    )  # fmt: skip
