"""Names and shapes of a node's rings and status blocks, derived from the configuration.

Every process computes the same names from the same configuration, so nothing but the
configuration has to be passed to a spawned worker or a gateway::

    vg-<node>-gw<i>-vad        gateway i -> VAD            (one per gateway)
    vg-<node>-vad-stt          VAD -> STT
    vg-<node>-stt-llm          STT -> LLM
    vg-<node>-llm-tts          LLM -> TTS
    vg-<node>-tts-gw<i>        TTS -> gateway i            (one per gateway)
    vg-<node>-vad-gw<i>        VAD -> gateway i: turn events past the later stages
    vg-<node>-ctl-gw<i>        supervisor -> gateway i     (WORKER_RESTARTED, DRAIN)
    vg-<node>-<process>.status status block of vad, stt, llm, tts, gw<i> and node

Status block names contain a dot so that the ring's ``cleanup_stale``, which only looks
at dot-free names, never mistakes one for a ring segment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from voicegate.core.config import STAGES, NodeConfig
from voicegate.core.kinds import gateway_of

SUPERVISOR = "supervisor"
STATUS_SUFFIX = ".status"


def gateway_name(index: int) -> str:
    return f"gw{index}"


@dataclass(frozen=True)
class RingSpec:
    """One ring: its shared-memory name, size and the two processes at its ends."""

    name: str
    capacity: int
    producer: str
    consumer: str
    # A full ring drops rather than blocks its producer: rings to gateways, where one
    # gateway that stopped reading must not stall the others.
    lossy: bool = False


class Topology:
    """The rings and status blocks of one node."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.prefix = config.shm_prefix
        self.stages = STAGES
        self.gateways = tuple(gateway_name(i) for i in range(config.node.gateways))
        rings = config.rings
        first, last = STAGES[0], STAGES[-1]
        self._inputs: dict[str, list[RingSpec]] = {stage: [] for stage in STAGES}
        self._outputs: dict[str, list[RingSpec]] = {stage: [] for stage in STAGES}
        self.gateway_in: list[RingSpec] = []
        self.gateway_out: list[RingSpec] = []
        self.control: list[RingSpec] = []
        self.gateway_events: list[RingSpec] = []
        for gw in self.gateways:
            spec = self._ring(gw, first, rings.gateway_capacity)
            self.gateway_in.append(spec)
            self._inputs[first].append(spec)
        for upstream, downstream in pairwise(STAGES):
            spec = self._ring(upstream, downstream, rings.stage_capacity)
            self._outputs[upstream].append(spec)
            self._inputs[downstream].append(spec)
        for gw in self.gateways:
            spec = self._ring(last, gw, rings.gateway_capacity, lossy=True)
            self.gateway_out.append(spec)
            self._outputs[last].append(spec)
        for gw in self.gateways:
            self.gateway_events.append(self._ring(first, gw, rings.gateway_capacity, lossy=True))
        for gw in self.gateways:
            self.control.append(
                RingSpec(f"{self.prefix}ctl-{gw}", rings.control_capacity, SUPERVISOR, gw)
            )

    def _ring(
        self, producer: str, consumer: str, capacity: int, *, lossy: bool = False
    ) -> RingSpec:
        return RingSpec(f"{self.prefix}{producer}-{consumer}", capacity, producer, consumer, lossy)

    @property
    def rings(self) -> list[RingSpec]:
        """Every ring of the node, each once."""
        seen: dict[str, RingSpec] = {}
        for spec in [*self.gateway_in, *self.gateway_out, *self.gateway_events, *self.control]:
            seen[spec.name] = spec
        for stage in self.stages:
            for spec in self._outputs[stage]:
                seen[spec.name] = spec
        return list(seen.values())

    def inputs(self, stage: str) -> list[RingSpec]:
        return list(self._inputs[stage])

    def outputs(self, stage: str) -> list[RingSpec]:
        return list(self._outputs[stage])

    def events(self, stage: str) -> list[RingSpec]:
        """The event rings a stage writes straight to each gateway (the first stage)."""
        return list(self.gateway_events) if stage == self.stages[0] else []

    def router(self, stage: str) -> Callable[[int], int]:
        """Session id -> index into ``outputs(stage)``. The last stage writes to the
        gateway that owns the session (its index is in the session id's high bits)."""
        if stage == self.stages[-1]:
            return gateway_of
        return _first_output

    def spin_us(self, spec: RingSpec) -> float:
        """How long the ends of ``spec`` spin before they park: ``[rings] spin_us``, but 0
        when both are pinned to the same single CPU. There a spinning consumer only keeps
        its producer from running (the gateway and VAD share CPU 0 on two cores)."""
        ends = [self._cpus(spec.producer), self._cpus(spec.consumer)]
        if ends[0] is not None and len(ends[0]) == 1 and ends[0] == ends[1]:
            return 0.0
        return self.config.rings.spin_us

    def _cpus(self, process: str) -> frozenset[int] | None:
        if process in self.gateways:
            return frozenset(self.config.cpus_for("gateway"))
        if process in self.stages:
            return frozenset(self.config.cpus_for(process))
        return None  # the supervisor: not pinned

    def status_block(self, process: str) -> str:
        """Name of the status block of a stage, a gateway ("gw0") or the node ("node")."""
        return f"{self.prefix}{process}{STATUS_SUFFIX}"

    @property
    def node_block(self) -> str:
        return self.status_block("node")

    @property
    def status_blocks(self) -> list[str]:
        return [self.status_block(p) for p in (*self.stages, *self.gateways)]


def _first_output(session: int) -> int:
    return 0
