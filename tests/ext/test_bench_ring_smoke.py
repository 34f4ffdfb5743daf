"""Smoke run of ``python -m bench ring --quick``: every peer measured, JSON and PNG written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS = {"voicegate", "mp.Queue", "mp.Pipe", "faster-fifo", "pyzmq"}


def _bench_objects() -> set[str]:
    return {e for e in os.listdir("/dev/shm") if e.startswith(("vg-bench", "sem.vg-bench"))}


def test_bench_ring_quick(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    before = _bench_objects()
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "ring", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Targets" in proc.stdout
    assert not _bench_objects() - before, "the bench left rings in /dev/shm"
    result = json.loads((tmp_path / "ring.json").read_text())
    placements = set(result["placements"])
    assert "same" in placements
    for placement in placements:
        parked = {
            r["transport"]
            for r in result["latency"]
            if r["placement"] == placement and r["mode"] == "park"
        }
        single = {
            r["transport"]
            for r in result["throughput"]
            if r["placement"] == placement and r["mode"] == "single"
        }
        assert parked == single == PEERS
        floors = {f["kind"] for f in result["floors"] if f["placement"] == placement}
        assert {"futex", "pipe"} <= floors
    for row in result["latency"]:
        assert row["samples"] > 0 and 0 < row["p50_us"] <= row["p99_us"]
    for row in result["throughput"]:
        assert row["frames_per_s"] > 0
    assert {t["target"] for t in result["targets"]} and all(
        isinstance(t["met"], bool) for t in result["targets"]
    )
    assert (tmp_path / "ring.png").stat().st_size > 10_000


def test_bench_dispatcher_lists_ring() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "bench"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "ring" in proc.stdout.split("benches:")[1]
    bad = subprocess.run(
        [sys.executable, "-m", "bench", "nope"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "unknown bench" in bad.stderr
