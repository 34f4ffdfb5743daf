"""The /metrics renderer over status blocks and rings made here, and the ring observers:
no node, real shared memory."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from exposition import parse

from voicegate.core.config import NodeConfig, NodeSettings
from voicegate.ext import Record
from voicegate.ext._ring import Ring
from voicegate.server import prometheus
from voicegate.workers.metrics import RingObservers, read_node_status
from voicegate.workers.status import Field, Histogram, StatusBlock
from voicegate.workers.topology import Topology


@pytest.fixture
def config() -> NodeConfig:
    return NodeConfig(node=NodeSettings(name=f"mx{os.getpid()}"))


@pytest.fixture
def blocks(config: NodeConfig) -> Iterator[dict[str, StatusBlock]]:
    topology = Topology(config)
    made = {p: StatusBlock.create(topology.status_block(p)) for p in ("node", "vad", "gw0")}
    try:
        yield made
    finally:
        for process, block in made.items():
            block.close()
            StatusBlock.unlink_name(topology.status_block(process))


def test_every_family_typed_with_help_and_counters_end_in_total(
    config: NodeConfig, blocks: dict[str, StatusBlock]
) -> None:
    vad = blocks["vad"]
    vad.set(Field.RESTARTS, 2)
    vad.add(Field.RECORDS_IN, 7)
    vad.add(Field.DROPPED_STALE, 3)
    for size in (1, 3, 3, 300):
        vad.observe_size(Histogram.BATCH, size)
    vad.observe(Histogram.COMPUTE, 5000, count=2)
    gateway = dict.fromkeys(prometheus.GATEWAY_METRICS, 0) | {"turns_committed": 4}
    rings = {"gw0-vad": {"occupancy_bytes": 64, "capacity": 4096, "written": 9, "read": 8,
                         "dropped_full": 1, "consumer_parks": 2, "producer_parks": 0,
                         "wakeups_sent": 2, "space_wakeups_sent": 0}}  # fmt: skip
    text = prometheus.render(read_node_status(config), gateway, 0, {"stt": [5.0, 7.0]}, rings)
    families = parse(text)
    for fam in families.values():
        assert fam.help, fam.name
        assert fam.name.endswith("_total") == (fam.kind == "counter"), fam.name
        assert fam.samples, fam.name
    assert families["voicegate_worker_restarts_total"].value(process="vad") == 2
    assert families["voicegate_worker_restarts_total"].value(process="gw0") == 0
    assert families["voicegate_process_records_in_total"].value(process="vad") == 7
    dropped = families["voicegate_process_records_dropped_total"]
    assert dropped.value(process="vad", reason="stale") == 3
    assert families["voicegate_gateway_turns_committed_total"].value(gateway="0") == 4
    assert families["voicegate_gateway_sessions_active"].kind == "gauge"
    buckets, total, count = families["voicegate_model_batch_size"].histogram(process="vad")
    assert [le for le, _ in buckets] == [1, 2, 4, 8, 16, 32, 64, 128, 256, float("inf")]
    assert [c for _, c in buckets] == [1, 1, 3, 3, 3, 3, 3, 3, 3, 4]
    assert (total, count) == (307, 4)
    buckets, total, count = families["voicegate_stage_compute_seconds"].histogram(process="vad")
    assert count == 2 and total == pytest.approx(10e-6)
    assert buckets[-1] == (float("inf"), 2)
    assert families["voicegate_ring_dropped_full_total"].value(edge="gw0-vad") == 1
    assert families["voicegate_ring_parks_total"].value(edge="gw0-vad", side="consumer") == 2
    assert families["voicegate_ring_capacity_bytes"].value(edge="gw0-vad") == 4096
    assert families["voicegate_turn_latency_ms"].value(stage="stt", quantile="0.5") == 7.0


def test_unknown_gateway_counter_is_refused() -> None:
    with pytest.raises(ValueError, match="frames_sideways"):
        prometheus.render({}, {"frames_sideways": 1}, 0, {})


def test_size_histogram_refuses_a_duration_histogram(blocks: dict[str, StatusBlock]) -> None:
    with pytest.raises(ValueError, match="COMPUTE"):
        blocks["vad"].observe_size(Histogram.COMPUTE, 3)


def test_observers_attach_late_follow_a_replaced_ring_and_drop_a_gone_one(
    config: NodeConfig,
) -> None:
    name = f"{config.shm_prefix}stt-llm"
    observers = RingObservers(config)
    try:
        assert "stt-llm" in observers.edges and "ctl-gw0" in observers.edges
        assert observers.read() == {}  # no ring yet
        with Ring.create(name, 4096, role="producer") as ring:
            assert ring.try_write(Record(kind=1, session=1, turn=1, payload=b"abc"))
            assert observers.read()["stt-llm"]["written"] == 1
            assert observers.read()["stt-llm"]["written"] == 1  # the same handle, kept
        assert "stt-llm" not in observers.read()  # unlinked by its owner
        with Ring.create(name, 8192, role="producer"):
            stats = observers.read()["stt-llm"]
            assert (stats["written"], stats["capacity"]) == (0, 8192)
    finally:
        observers.close()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(config.shm_prefix)]
