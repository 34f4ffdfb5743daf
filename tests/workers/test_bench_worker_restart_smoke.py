"""Smoke run of ``python -m bench worker_restart --quick``: every stage killed and replaced,
the JSON written, nothing left behind. It checks that the bench runs, not how fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from voicegate.core.config import STAGES

ROOT = Path(__file__).resolve().parents[2]


def _bench_objects() -> set[str]:
    return {e for e in os.listdir("/dev/shm") if e.startswith(("vg-bench", "sem.vg-bench"))}


def test_bench_worker_restart_quick(tmp_path: Path) -> None:
    before = _bench_objects()
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "worker_restart", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "worker_restart.json").read_text())
    killed = {kill["stage"] for kill in result["kills"]}
    assert killed == set(STAGES)
    assert all(kill["kill_to_ready_ms"] > 0 for kill in result["kills"])
    assert not _bench_objects() - before, "the bench left its node's objects in /dev/shm"
