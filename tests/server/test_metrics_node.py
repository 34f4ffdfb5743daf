"""/metrics of a real node: `voicegate serve` with the model-backed stages and the
generated default bundle answers one turn from `voicegate talk`, then a scrape must show
every process, every ring of the topology and every stage's model batches."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from exposition import Family, parse

from voicegate.core.config import NodeConfig, NodeSettings
from voicegate.models.named_bundles import SYNTHETIC_REPLY
from voicegate.workers.runtime.topology import Topology

REPO = Path(__file__).resolve().parents[2]

GATEWAY_FAMILIES = (
    "voicegate_gateway_sessions_active",
    "voicegate_gateway_sessions_total",
    "voicegate_gateway_sessions_rejected_total",
    "voicegate_gateway_frames_in_total",
    "voicegate_gateway_frames_in_dropped_total",
    "voicegate_gateway_frames_out_total",
    "voicegate_gateway_turns_committed_total",
    "voicegate_gateway_turns_cancelled_total",
    "voicegate_gateway_barge_ins_total",
    "voicegate_gateway_turns_failed_total",
)
RING_FAMILIES = (
    "voicegate_ring_occupancy_bytes",
    "voicegate_ring_capacity_bytes",
    "voicegate_ring_written_total",
    "voicegate_ring_read_total",
    "voicegate_ring_dropped_full_total",
    "voicegate_ring_parks_total",
    "voicegate_ring_wakeups_total",
)
PROCESSES = ("node", "vad", "stt", "llm", "tts", "gw0")
STAGES = ("vad", "stt", "llm", "tts")


def _check_histogram(fam: Family, **labels: str) -> tuple[float, float]:
    buckets, total, count = fam.histogram(**labels)
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), (fam.name, labels)
    assert buckets[-1] == (float("inf"), count), (fam.name, labels)
    assert total >= 0
    return total, count


def test_metrics_of_a_real_node_after_a_turn(tmp_path: Path) -> None:
    name = f"metrics{os.getpid() % 100000}"
    env = dict(os.environ, VOICEGATE_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    env["VOICEGATE_NODE_NAME"] = name
    serve = subprocess.Popen(
        [sys.executable, "-m", "voicegate", "serve", "--port", "0", "--bundle", "synthetic"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        port = 0
        for line in serve.stdout:
            found = re.search(r"serving on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port
        talk = subprocess.run(
            [sys.executable, "-m", "voicegate", "talk", "--url",
             f"ws://127.0.0.1:{port}/v1/stream", "--out", str(tmp_path / "a.wav")],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert talk.returncode == 0, talk.stdout + talk.stderr
        assert SYNTHETIC_REPLY in talk.stdout
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = parse(reply.text)
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    assert not [n for n in os.listdir("/dev/shm") if f"vg-{name}-" in n]

    for fam in families.values():
        assert fam.name.endswith("_total") == (fam.kind == "counter"), fam.name
    for family in GATEWAY_FAMILIES:
        assert families[family].value(gateway="0") >= 0, family
    assert families["voicegate_gateway_sessions_total"].value(gateway="0") >= 1
    assert families["voicegate_gateway_turns_committed_total"].value(gateway="0") >= 1
    assert families["voicegate_gateway_frames_in_total"].value(gateway="0") > 0
    assert families["voicegate_gateway_frames_out_total"].value(gateway="0") > 0

    up = families["voicegate_process_up"]
    assert {s.labels["process"] for s in up.samples} == set(PROCESSES)
    for process in PROCESSES:
        assert families["voicegate_worker_restarts_total"].value(process=process) == 0
        assert families["voicegate_process_generation"].value(process=process) >= 0
    for stage in STAGES:
        assert families["voicegate_process_generation"].value(process=stage) == 1
        assert families["voicegate_process_records_in_total"].value(process=stage) > 0
        _, waits = _check_histogram(families["voicegate_stage_ring_wait_seconds"], process=stage)
        _, computed = _check_histogram(families["voicegate_stage_compute_seconds"], process=stage)
        assert waits > 0 and computed > 0, stage
        _check_histogram(families["voicegate_stage_tick_seconds"], process=stage)
        items, calls = _check_histogram(families["voicegate_model_batch_size"], process=stage)
        # One session: every model call held exactly one item... except VAD, where a
        # session with a backlog takes one call per chunk, still one row each.
        assert calls > 0 and items == calls, (stage, items, calls)

    edges = {
        spec.name.removeprefix(f"vg-{name}-")
        for spec in Topology(NodeConfig(node=NodeSettings(name=name))).rings
    }
    assert edges == {"gw0-vad", "vad-stt", "stt-llm", "llm-tts", "tts-gw0", "vad-gw0", "ctl-gw0"}
    for family in RING_FAMILIES:
        seen = {s.labels["edge"] for s in families[family].samples}
        assert seen == edges, (family, seen)
    for edge in edges:
        capacity = families["voicegate_ring_capacity_bytes"].value(edge=edge)
        occupancy = families["voicegate_ring_occupancy_bytes"].value(edge=edge)
        written = families["voicegate_ring_written_total"].value(edge=edge)
        read = families["voicegate_ring_read_total"].value(edge=edge)
        assert capacity > 0 and 0 <= occupancy <= capacity, edge
        assert 0 <= read <= written, edge
        assert families["voicegate_ring_dropped_full_total"].value(edge=edge) >= 0, edge
        if not edge.startswith("ctl-"):  # the supervisor had nothing to say
            assert written > 0, edge
