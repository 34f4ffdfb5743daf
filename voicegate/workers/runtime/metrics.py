"""Reading a node's status blocks and ring counters from any process (the metrics
endpoint does, from a gateway): consistent-enough copies, taken without locks."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from voicegate.core.clock import monotonic_ns
from voicegate.core.config import NodeConfig
from voicegate.ext.errors import RingError
from voicegate.workers.runtime.rings import ring_class
from voicegate.workers.runtime.status import StatusBlock, StatusSnapshot
from voicegate.workers.runtime.topology import Topology

if TYPE_CHECKING:
    from voicegate.ext._ring import Ring

log = logging.getLogger(__name__)

_SHM_DIR = "/dev/shm"


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


def _segment_id(name: str) -> tuple[int, int] | None:
    """(device, inode) of a ring's shared-memory segment; None when it has no name."""
    try:
        st = os.stat(os.path.join(_SHM_DIR, name.lstrip("/")))
    except OSError:
        return None
    return st.st_dev, st.st_ino


class RingObservers:
    """Observer handles on every ring of the node, attached once and kept, so a scrape
    costs one ``stats()`` per ring rather than an attach.

    A ring that does not exist yet is attached at a later ``read``; one whose segment
    was unlinked (node stopping) or replaced by a new one of the same name is dropped
    and attached anew, so a handle never reports a dead segment's counters.
    """

    def __init__(self, config: NodeConfig) -> None:
        topology = Topology(config)
        self._ring_type = ring_class(config.rings.impl)
        # edge label ("gw0-vad") -> ring name
        self.edges: dict[str, str] = {
            spec.name.removeprefix(topology.prefix): spec.name for spec in topology.rings
        }
        self._handles: dict[str, tuple[Ring, tuple[int, int]]] = {}

    def read(self) -> dict[str, dict[str, int]]:
        """``stats()`` of every ring that exists now, keyed by edge."""
        result: dict[str, dict[str, int]] = {}
        for edge, name in self.edges.items():
            segment = _segment_id(name)
            held = self._handles.get(edge)
            if held is not None and held[1] != segment:
                self._drop(edge)
                held = None
            if segment is None:
                continue
            if held is None:
                try:
                    ring = self._ring_type.attach(name, "observer")
                except (RingError, OSError, ValueError) as exc:
                    log.debug("ring %s not observable yet (%s)", name, exc)
                    continue
                held = self._handles[edge] = (ring, segment)
            try:
                result[edge] = held[0].stats()
            except RingError:  # closed under us: attach again next time
                self._drop(edge)
        return result

    def _drop(self, edge: str) -> None:
        ring, _ = self._handles.pop(edge)
        try:
            ring.close()
        except (RingError, OSError) as exc:
            log.debug("closing the observer of %s: %s", edge, exc)

    def close(self) -> None:
        for edge in list(self._handles):
            self._drop(edge)
