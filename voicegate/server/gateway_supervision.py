"""The node's gateway processes, supervised like its workers.

``voicegate serve`` starts them once every worker is ready (``start``); from then on the
supervisor's loop calls ``check`` on every pass and waits on ``sentinels`` too, so a
gateway's death wakes it at once. A gateway whose process ended (``kill -9``, a crash) or
that the kernel shows stopped for ``health.stopped_timeout_s`` is

- reaped (no zombie stays behind) and logged with how it ended;
- counted in its status block's ``RESTARTS`` (``voicegate_worker_restarts_total`` with
  ``process="gw<i>"``);
- replaced by a new process on the same port and index after the workers' backoff,
  which doubles per failure; more than ``health.max_restarts`` failures within
  ``health.restart_window_s`` end the node, as for a worker.

Its sessions' connections died with it; the replacement's first record tells every
stage to close whatever sessions of its index they still hold (``Gateway.start``). The
node is whole (``whole``: the supervisor pings the systemd watchdog only then) while
every gateway process runs.

Every gateway dies with the supervisor: it asks the kernel for SIGKILL on its parent's
death (``gateway_process``), so none is left accepting calls that nobody answers.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections import deque
from multiprocessing.process import BaseProcess

from voicegate.core.clock import NS_PER_S
from voicegate.core.config import GatewayOptions, NodeConfig
from voicegate.ext.procinfo import process_state
from voicegate.server.auth import GatewaySecurity
from voicegate.server.gateway_process import GatewaySpec, gateway_main
from voicegate.workers.status import Field, State, StatusBlock
from voicegate.workers.topology import Topology

log = logging.getLogger("voicegate.serve")

_GATEWAY_READY_S = 60.0


class GatewayFailureError(Exception):
    """The gateways cannot be kept running; the message is the reason."""


class GatewayPool:
    def __init__(
        self,
        config: NodeConfig,
        options: GatewayOptions,
        host: str,
        port: int,
        security: GatewaySecurity | None = None,
    ) -> None:
        self.config = config
        self.security = security
        self.options = options
        self.host = host
        self.port = port
        count = config.node.gateways
        self.processes: list[BaseProcess | None] = [None] * count
        self._topology = Topology(config)
        self._blocks: list[StatusBlock] = []
        self._failures: list[deque[int]] = [deque() for _ in range(count)]
        self._restart_at: list[int] = [0] * count
        self._stopped_since: list[int] = [0] * count
        self._ctx = multiprocessing.get_context("spawn")

    # -- start and stop -------------------------------------------------------------

    def start(self) -> None:
        """Start every gateway and wait until each one serves the port."""
        for index in range(len(self.processes)):
            self._spawn(index)
        deadline = time.monotonic() + _GATEWAY_READY_S
        for index, block in enumerate(self._status_blocks()):
            while block.state is not State.READY or not _port_open(self.host, self.port):
                process = self.processes[index]
                if process is None or process.exitcode is not None:
                    raise GatewayFailureError(f"gateway {index} exited during start")
                if time.monotonic() > deadline:
                    raise GatewayFailureError(f"gateway {index} not ready in {_GATEWAY_READY_S} s")
                time.sleep(0.02)

    def reload(self) -> None:
        """SIGHUP to every running gateway: each reloads its TLS certificate for new
        handshakes while open calls keep theirs."""
        for process in self.processes:
            if process is not None and process.exitcode is None and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)

    def stop(self) -> None:
        deadline = time.monotonic() + self.config.node.stop_timeout_s
        live = [p for p in self.processes if p is not None]
        for process in live:
            if process.exitcode is None and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
                    os.kill(process.pid, signal.SIGCONT)  # a stopped one must run to exit
        for process in live:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join(timeout=5)
            process.close()
        self.processes = [None] * len(self.processes)
        for block in self._blocks:
            block.close()
        self._blocks.clear()

    # -- supervision ------------------------------------------------------------------

    def sentinels(self) -> list[int]:
        return [p.sentinel for p in self.processes if p is not None]

    def whole(self) -> bool:
        """Every gateway process is running."""
        return all(p is not None and p.exitcode is None for p in self.processes)

    def check(self, now: int) -> None:
        """Replace the gateways that died or hang stopped; start those whose backoff is
        over. Raises GatewayFailureError when one fails too often."""
        for index, process in enumerate(self.processes):
            if process is None:
                if now >= self._restart_at[index]:
                    self._spawn(index)
                continue
            stopped = self._stopped_too_long(index, process, now)
            if process.exitcode is None and not stopped:
                continue
            if stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid or 0, signal.SIGKILL)
                process.join(timeout=10)
            self._failed(index, process, now, stopped)

    def _stopped_too_long(self, index: int, process: BaseProcess, now: int) -> bool:
        state = process_state(process.pid or 0)
        if state is None or state.state not in ("T", "t"):
            self._stopped_since[index] = 0
            return False
        if not self._stopped_since[index]:
            self._stopped_since[index] = now
        return now - self._stopped_since[index] >= self.config.health.stopped_timeout_s * NS_PER_S

    def _failed(self, index: int, process: BaseProcess, now: int, stopped: bool) -> None:
        pid = process.pid or 0
        code = process.exitcode if process.exitcode is not None else -signal.SIGKILL
        process.close()  # reaped already (exitcode waited for it): nothing is left behind
        self.processes[index] = None
        self._stopped_since[index] = 0
        if stopped:
            what = "was stopped (SIGSTOP or a debugger)"
        elif code < 0:
            what = f"was killed by {_signal_name(-code)}"
        else:
            what = f"exited with status {code}"
        log.warning("gateway %d (pid %d) %s; replacing it", index, pid, what)
        block = self._status_blocks()[index]
        block.add(Field.RESTARTS, 1)
        block.state = State.FAILED
        health = self.config.health
        failures = self._failures[index]
        failures.append(now)
        while failures and now - failures[0] > health.restart_window_s * NS_PER_S:
            failures.popleft()
        if len(failures) > health.max_restarts:
            raise GatewayFailureError(
                f"gateway {index} failed {len(failures)} times within "
                f"{health.restart_window_s:g} s (limit {health.max_restarts}); last: {what}"
            )
        backoff = min(
            health.restart_backoff_max_s, health.restart_backoff_s * 2 ** (len(failures) - 1)
        )
        self._restart_at[index] = now + int(backoff * NS_PER_S)
        if backoff <= 0:
            self._spawn(index)

    # -- helpers ----------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        spec = GatewaySpec(
            self.config, index, self.options, self.host, self.port,
            parent_pid=os.getpid(), security=self.security,
        )  # fmt: skip
        process = self._ctx.Process(target=gateway_main, args=(spec,), name=f"voicegate-gw{index}")
        process.start()
        self.processes[index] = process
        block = self._status_blocks()[index]
        block.set(Field.GENERATION, block.get(Field.GENERATION) + 1)
        if block.get(Field.RESTARTS):
            log.info("gateway %d replaced (pid %s)", index, process.pid)

    def _status_blocks(self) -> list[StatusBlock]:
        if not self._blocks:
            self._blocks = [
                StatusBlock.attach(self._topology.status_block(name))
                for name in self._topology.gateways
            ]
        return self._blocks


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
