"""Reading a node's status blocks from any process (the metrics endpoint does, from a
gateway): one consistent-enough copy per process, taken without locks."""

from __future__ import annotations

from voicegate.core.clock import monotonic_ns
from voicegate.core.config import NodeConfig
from voicegate.workers.status import StatusBlock, StatusSnapshot
from voicegate.workers.topology import Topology


def read_node_status(config: NodeConfig) -> dict[str, StatusSnapshot]:
    """Snapshot of every status block of the node that exists now, keyed by process name
    ("node", "vad", ..., "gw0", ...). Blocks that do not exist (node not running) or
    are not initialised yet are left out."""
    topology = Topology(config)
    now = monotonic_ns()
    result: dict[str, StatusSnapshot] = {}
    for process in ("node", *topology.stages, *topology.gateways):
        try:
            block = StatusBlock.attach(topology.status_block(process))
        except (FileNotFoundError, ValueError):
            continue  # absent, or being created right now
        try:
            result[process] = block.snapshot(now)
        finally:
            block.close()
    return result
