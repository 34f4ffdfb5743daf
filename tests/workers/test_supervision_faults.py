"""Faults the supervisor must see at once (issue 15, defect 7): a SIGSTOPped worker is
found by its process state, not after the heartbeat timeout.

No wall-clock thresholds: the heartbeat timeout here is far longer than the wait, so only
the stop-state check can find the worker in time."""

from __future__ import annotations

import os
import signal

import test_supervisor
from runtime_helpers import wait_until
from test_supervisor import Connect, StartNode, stop_cleanly

from voicegate.core.payloads import RestartReason, StageId
from voicegate.workers.procinfo import is_alive
from voicegate.workers.status import State

start_node = test_supervisor.start_node  # the fixtures
connect = test_supervisor.connect


def test_a_stopped_worker_is_found_by_its_state_not_its_heartbeat(
    start_node: StartNode, connect: Connect
) -> None:
    node = start_node({"health": {"heartbeat_timeout_s": 600.0}})
    node.wait_ready()
    gw = connect(node, 0)
    sessions = [gw.session(local) for local in range(2)]
    gw.open(sessions)
    gw.run_turn(sessions, frames=2)
    victim = node.worker_pid("stt")
    os.kill(victim, signal.SIGSTOP)
    event = gw.wait_restart(timeout=60.0)
    assert (event.stage, event.pid, event.reason) == (
        StageId.STT,
        victim,
        RestartReason.UNRESPONSIVE,
    )
    wait_until(lambda: not is_alive(victim), "the stopped worker to be killed")
    gw.reopen_all()
    wait_until(
        lambda: node.status("stt").state is State.READY and node.worker_pid("stt") != victim,
        "a replacement stt worker",
    )
    gw.run_turn(sessions, frames=2)
    assert "was stopped (SIGSTOP or a debugger)" in node.log()
    stop_cleanly(node, [gw], signal.SIGINT)
