"""The supervisor end to end: real processes, real rings, the test playing the gateways.

No wall-clock thresholds: every wait is for an event, with a generous timeout.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from runtime_helpers import (
    RING_IMPL,
    NodeProcess,
    TestGateway,
    group_members,
    wait_until,
)

from voicegate.core.config import STAGES
from voicegate.core.payloads import RestartReason, StageId
from voicegate.workers.procinfo import is_alive
from voicegate.workers.status import State

StartNode = Callable[..., NodeProcess]
Connect = Callable[[NodeProcess, int], TestGateway]


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[StartNode]:
    nodes: list[NodeProcess] = []

    def start(sections: Mapping[str, Mapping[str, object]] | None = None) -> NodeProcess:
        node = NodeProcess(tmp_path, sections or {})
        nodes.append(node)
        node.start()
        return node

    yield start
    for node in nodes:
        node.kill_group()
        node.remove_leftovers()


@pytest.fixture
def connect() -> Iterator[Connect]:
    gateways: list[TestGateway] = []

    def attach(node: NodeProcess, index: int) -> TestGateway:
        gateways.append(TestGateway(node.config, index))
        return gateways[-1]

    yield attach
    for gateway in gateways:
        gateway.close()


def stop_cleanly(
    node: NodeProcess, gateways: list[TestGateway], sig: signal.Signals = signal.SIGTERM
) -> None:
    """SIGTERM (or SIGINT) with no turn in flight: exit 0, no process left, nothing in
    /dev/shm."""
    for gateway in gateways:
        gateway.close()
    os.kill(node.pid, sig)
    assert node.wait_exit() == 0, node.log()
    wait_until(lambda: not group_members(node.pid), "every process of the node to exit")
    assert node.leftovers() == []


@pytest.mark.parametrize("impl", sorted({RING_IMPL, "reference"}))
def test_pipeline_carries_frames_of_many_sessions_in_order(
    start_node: StartNode, connect: Connect, impl: str
) -> None:
    node = start_node({"rings": {"impl": impl}})
    node.wait_ready()
    gateways = [connect(node, 0), connect(node, 1)]
    sessions = {gw.index: [gw.session(local) for local in range(6)] for gw in gateways}
    for gw in gateways:
        gw.open(sessions[gw.index])
    for _ in range(3):
        for gw in gateways:  # both gateways' turns are in flight together
            gw.send_turn(sessions[gw.index], frames=10)
        for gw in gateways:
            gw.verify_turn(sessions[gw.index], 10, gw.collect(sessions[gw.index]))
    for gw in gateways:
        gw.close_sessions(sessions[gw.index])

    for stage in STAGES:
        status = node.status(stage)
        pid = status.pid
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0] == f"voicegate: {stage}".encode()
        for task in os.listdir(f"/proc/{pid}/task"):  # every thread, not just the main one
            assert os.sched_getaffinity(int(task)) == set(node.config.cpus_for(stage))
        assert status.state is State.READY
        # 12 opens, 3 turns x 12 x (10 frames + commit), 12 closes
        assert status.counters["records_in"] == 12 + 3 * 12 * 11 + 12
        assert status.histograms["ring_wait"].count == status.counters["records_in"]
        assert status.histograms["compute"].count == status.counters["records_in"]
        assert status.counters["dropped_stale"] == status.counters["dropped_unknown"] == 0
        assert status.counters["sessions"] == 0
        assert status.counters["generation"] == 1
    stop_cleanly(node, gateways)


def test_each_killed_worker_is_replaced_and_later_turns_succeed(
    start_node: StartNode, connect: Connect
) -> None:
    node = start_node()
    node.wait_ready()
    gateways = [connect(node, 0), connect(node, 1)]
    sessions = {gw.index: [gw.session(local) for local in range(4)] for gw in gateways}
    for gw in gateways:
        gw.open(sessions[gw.index])
        gw.run_turn(sessions[gw.index], frames=5)
    for stage in STAGES:
        pids = {s: node.worker_pid(s) for s in STAGES}
        victim = pids[stage]
        for gw in gateways:  # a turn in flight ...
            gw.send_frames(sessions[gw.index], range(1, 4))
        os.kill(victim, signal.SIGKILL)  # ... when its worker dies
        for gw in gateways:
            gw.send_frames(sessions[gw.index], range(4, 6))
            gw.commit(sessions[gw.index])
        for gw in gateways:
            event = gw.wait_restart()
            assert event.stage is StageId.from_name(stage)
            assert event.pid == victim
            assert event.reason is RestartReason.EXITED
            assert event.exit_code == -signal.SIGKILL
            gw.reopen_all()

        def replaced(s: str = stage) -> bool:
            status = node.status(s)
            return status.counters["generation"] == 2 and status.state is State.READY

        wait_until(replaced, f"a replacement {stage} worker")
        replacement = node.worker_pid(stage)
        assert replacement != victim
        # Later turns of every session succeed, on the same rings, and no other worker
        # was restarted.
        for _ in range(2):
            for gw in gateways:
                gw.run_turn(sessions[gw.index], frames=5)
        assert {s: node.worker_pid(s) for s in STAGES} == {**pids, stage: replacement}
        assert node.status(stage).counters["restarts"] == 1

        # The supervisor records the replacement time once it has seen the worker ready.
        def timed(s: str = stage) -> bool:
            return node.status(s).counters["last_replace_ns"] > 0

        wait_until(timed, "the replacement time")
    assert "replaced in" in node.log()
    stop_cleanly(node, gateways)


def test_stopped_worker_is_detected_and_replaced(start_node: StartNode, connect: Connect) -> None:
    node = start_node()
    node.wait_ready()
    gw = connect(node, 0)
    sessions = [gw.session(local) for local in range(3)]
    gw.open(sessions)
    gw.run_turn(sessions, frames=3)
    victim = node.worker_pid("llm")
    os.kill(victim, signal.SIGSTOP)
    gw.send_frames(sessions, range(1, 4))
    event = gw.wait_restart()
    assert (event.stage, event.pid, event.reason) == (
        StageId.LLM,
        victim,
        RestartReason.UNRESPONSIVE,
    )
    wait_until(lambda: not is_alive(victim), "the stopped worker to be killed")
    gw.reopen_all()
    wait_until(
        lambda: node.status("llm").state is State.READY and node.worker_pid("llm") != victim,
        "a replacement llm worker",
    )
    for _ in range(2):
        gw.run_turn(sessions, frames=3)
    assert "was stopped (SIGSTOP or a debugger)" in node.log()
    stop_cleanly(node, [gw], signal.SIGINT)


def test_sigterm_drains_the_turn_in_flight_then_removes_everything(
    start_node: StartNode, connect: Connect
) -> None:
    node = start_node({"node": {"drain_timeout_s": 60.0}})
    node.wait_ready()
    gw = connect(node, 1)
    sessions = [gw.session(local) for local in range(3)]
    gw.open(sessions)
    gw.send_frames(sessions, range(1, 6))  # a turn in flight
    os.kill(node.pid, signal.SIGTERM)
    while not gw.drains:
        gw.poll_control(0.05)
    assert node.status("node").state is State.DRAINING
    # The pipeline still serves while draining: the turn in flight completes.
    gw.commit(sessions)
    got = gw.collect(sessions)
    assert all(len(records) == 6 for records in got.values())
    gw.close_sessions(sessions)
    gw.link.set_state(State.DRAINED)
    assert node.wait_exit() == 0, node.log()
    gw.close()
    wait_until(lambda: not group_members(node.pid), "every process of the node to exit")
    assert node.leftovers() == []
    assert "draining" in node.log()


def test_worker_that_keeps_crashing_ends_the_supervisor(start_node: StartNode) -> None:
    node = start_node(
        {
            "health": {"max_restarts": 2},
            "workers": {
                "tts": {
                    "stage": "runtime_helpers:CrashAfterReadyStage",
                    "options": {"crash_after_s": 1.0},
                }
            },
        }
    )
    assert node.wait_exit(120) == 1
    log = node.log()
    assert "worker tts failed 3 times within 60 s (limit 2)" in log
    assert "exited with status 7" in log
    wait_until(lambda: not group_members(node.pid), "every process of the node to exit")
    assert node.leftovers() == []


def test_failed_start_ends_the_supervisor_with_the_reason(start_node: StartNode) -> None:
    node = start_node({"workers": {"stt": {"stage": "runtime_helpers:FailingLoadStage"}}})
    assert node.wait_exit(120) == 1
    log = node.log()
    assert "worker stt failed to start (exited with status 1: FileNotFoundError: model file" in log
    wait_until(lambda: not group_members(node.pid), "every process of the node to exit")
    assert node.leftovers() == []


def test_start_after_a_crashed_instance_removes_what_it_left(
    start_node: StartNode, connect: Connect
) -> None:
    first = start_node()
    first.wait_ready()
    workers = [first.worker_pid(stage) for stage in STAGES]
    # A second supervisor of the same node refuses to start while the first lives.
    twin = start_node({"node": {"name": first.name}})
    assert twin.wait_exit() == 1
    assert f"node '{first.name}' is already running (supervisor pid {first.pid})" in twin.log()
    assert first.status("node").state is State.READY
    # kill -9 of the whole process group, the supervisor's janitor included (a lone
    # supervisor's kill -9 is cleaned up by its janitor: test_gateway_supervision.py):
    # its workers are gone ...
    first.kill_group()
    wait_until(lambda: not any(is_alive(pid) for pid in workers), "orphaned workers to exit")
    left = first.leftovers()
    assert f"{first.prefix}node.status" in left
    assert f"{first.prefix}vad-stt" in left
    # ... and the next start removes what it left behind.
    second = start_node({"node": {"name": first.name}})
    second.wait_ready()
    assert "removing what a crashed supervisor" in second.log()
    gw = connect(second, 0)
    sessions = [gw.session(0)]
    gw.open(sessions)
    gw.run_turn(sessions, frames=2)
    stop_cleanly(second, [gw])
