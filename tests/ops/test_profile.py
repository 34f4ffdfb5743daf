"""``voicegate profile`` against a running node: py-spy records and dumps every process.

py-spy attaches with ptrace. Where the kernel or the container forbids it the test says
so and skips; here (root in a container) it runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_helpers import NodeProcess

from voicegate.core.config import STAGES
from voicegate.server.cli.main import main
from voicegate.server.ops.profiling import node_processes, py_spy_path


def ptrace_refusal() -> str | None:
    """Why py-spy cannot attach to a process of ours, or None when it can."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    error = ""
    try:
        # A few tries: py-spy fails differently on an interpreter still starting up.
        for _ in range(10):
            time.sleep(0.3)
            result = subprocess.run(
                [py_spy_path(), "dump", "--pid", str(child.pid)],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if result.returncode == 0:
                return None
            error = result.stderr.strip()[:300]
    finally:
        child.kill()
        child.wait()
    return f"py-spy cannot attach here (ptrace not permitted?): {error}"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    reason = ptrace_refusal()
    if reason is not None:
        pytest.skip(reason)
    process = NodeProcess(tmp_path_factory.mktemp("profile"), {})
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill_group()
        process.remove_leftovers()


def worker_pids(node: NodeProcess) -> dict[str, int]:
    return {stage: node.worker_pid(stage) for stage in STAGES}


def test_node_processes_are_the_supervisor_and_its_workers(node: NodeProcess) -> None:
    processes = node_processes(node.pid)
    assert processes[0].pid == node.pid
    assert "voicegate: supervisor" in processes[0].title
    titles = {p.pid: p.title for p in processes}
    for stage, pid in worker_pids(node).items():
        assert titles[pid].startswith(f"voicegate: {stage}"), titles


def test_dump_by_node_name_shows_every_worker_loop(
    node: NodeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["profile", "--dump", "--node", node.name]) == 0
    out = capsys.readouterr().out
    sections = out.split("===== pid ")[1:]
    by_pid = {int(section.split(":", 1)[0]): section for section in sections}
    assert node.pid in by_pid
    for stage, pid in worker_pids(node).items():
        frame = "run_once (voicegate/workers/runtime/worker.py"
        assert frame in by_pid[pid], f"{stage}:\n{by_pid[pid]}"
        assert "worker_main" in by_pid[pid], f"{stage}:\n{by_pid[pid]}"


def test_record_speedscope_covers_the_workers(node: NodeProcess, tmp_path: Path) -> None:
    out = tmp_path / "node.json"
    code = main(
        ["profile", "--pid", str(node.pid), "--duration", "2", "--idle", "--out", str(out)]
    )
    assert code == 0
    profile = json.loads(out.read_text())
    frames = {frame["name"] for frame in profile["shared"]["frames"]}
    assert {"Worker.run", "Worker.run_once", "worker_main", "Supervisor.run"} <= frames
    # py-spy names each process's root frame after its pid and title.
    for stage, pid in worker_pids(node).items():
        assert f'process {pid}:"voicegate: {stage}"' in frames, sorted(frames)
    profiled = " ".join(p["name"] for p in profile["profiles"])
    assert f"Process {node.pid} " in profiled


def test_record_flamegraph_by_extension(node: NodeProcess, tmp_path: Path) -> None:
    out = tmp_path / "node.svg"
    code = main(["profile", "--node", node.name, "--duration", "1", "--idle", "--out", str(out)])
    assert code == 0
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "Worker.run_once" in svg


def test_profile_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--node", "no-such-node-x9", "--dump"]) == 2
    assert "not running" in capsys.readouterr().err
    assert main(["profile", "--pid", "1", "--duration", "1", "--out", str(tmp_path / "x")]) == 2
    assert "extension" in capsys.readouterr().err
    assert main(["profile", "--pid", "1", "--out", str(tmp_path / "x.svg")]) == 2
    assert "--duration" in capsys.readouterr().err

