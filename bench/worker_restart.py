"""Worker replacement: how long from kill -9 of a worker until the node serves again.

A node of pass-through stages is started as the service manager would start it
(``python -m voicegate.workers``) and one session is kept open through a gateway link.
Each round kills every stage's worker in turn with SIGKILL and measures

- kill -> ready: until the replacement reports ready in its status block;
- detect -> ready: the supervisor's own figure, from noticing the death to ready;
- kill -> turn: until a complete turn of the session went through the whole pipeline
  again (the gateway re-opened the session on WORKER_RESTARTED, as the runtime asks).

Peers in the same run: the cold start of the whole node and a turn on the healthy node;
the table gives replacement over cold start as a ratio, because absolute times drift with
the box. The restart backoff is 0 here (``--backoff`` to change it): with the default
configuration a replacement also waits ``health.restart_backoff_s`` (0.2 s), doubled for
each earlier failure of the same worker within ``health.restart_window_s``.

    python -m bench worker_restart [--rounds 10] [--quick] [--impl native|reference]
                                   [--backoff 0] [--out DIR]

Writes bench/results/worker_restart.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.report import environment, format_table, percentile, results_dir, write_json
from voicegate.core.clock import NS_PER_MS, monotonic_ns
from voicegate.core.codec import PCM16_16K
from voicegate.core.config import PASSTHROUGH_STAGE, STAGES, NodeConfig, load_config
from voicegate.core.kinds import Flag, Kind, session_id
from voicegate.core.payloads import SessionParams
from voicegate.ext import Record
from voicegate.workers.gateway_link import GatewayLink
from voicegate.workers.status import Field, State, StatusBlock
from voicegate.workers.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 120.0
_PARAMS = SessionParams(PCM16_16K, PCM16_16K, None).pack()


@dataclass(frozen=True)
class Kill:
    stage: str
    kill_to_ready_ms: float
    detect_to_ready_ms: float
    kill_to_turn_ms: float


class Probe:
    """One session on gateway 0 that can run a turn and follow worker restarts."""

    def __init__(self, config: NodeConfig) -> None:
        self.link = GatewayLink(config, 0)
        self.session = session_id(0, 1)
        self.turn = 1
        self._send(Kind.SESSION_OPEN, 0, _PARAMS)

    def _send(self, kind: int, seq: int, payload: bytes, flags: int = 0) -> None:
        now = monotonic_ns()
        if not self.link.send_wait(
            Record(
                kind=kind,
                session=self.session,
                turn=self.turn,
                seq=seq,
                origin_ns=now,
                payload=payload,
                flags=flags,
            ),
            timeout=TIMEOUT_S,
        ):
            raise RuntimeError("the ring to vad stayed full")

    def reopen(self) -> None:
        """The gateway's answer to WORKER_RESTARTED."""
        deadline = time.monotonic() + TIMEOUT_S
        while not any(r.kind == Kind.WORKER_RESTARTED for r in self.link.control(timeout=0.05)):
            if time.monotonic() > deadline:
                raise RuntimeError("no WORKER_RESTARTED")
        self.turn += 1
        self._send(Kind.SESSION_OPEN, 0, _PARAMS, Flag.REOPEN)

    def run_turn(self) -> None:
        self._send(Kind.AUDIO_IN, 1, bytes(640))
        self._send(Kind.COMMIT, 2, b"")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            for record in self.link.receive(timeout=0.05):
                if record.kind == Kind.COMMIT and record.turn == self.turn:
                    self.turn += 1
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("the turn did not come back")

    def close(self) -> None:
        self.link.close()


def write_config(directory: Path, args: argparse.Namespace) -> Path:
    path = directory / "node.toml"
    path.write_text(
        f"""[node]
name = "bench{os.getpid()}"
gateways = 1
[rings]
impl = "{args.impl}"
[health]
heartbeat_interval_s = 0.05
restart_backoff_s = {args.backoff}
restart_backoff_max_s = {max(args.backoff, 5.0)}
max_restarts = 1000
"""
        # Pass-through stages: the bench measures the runtime's replacement, not model loads.
        + "".join(f'[workers.{stage}]\nstage = "{PASSTHROUGH_STAGE}"\n' for stage in STAGES)
    )
    return path


def wait_ready(block_name: str, proc: subprocess.Popen[bytes], min_generation: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    block: StatusBlock | None = None
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the supervisor exited with {proc.returncode}")
            if block is None:
                with contextlib.suppress(FileNotFoundError, ValueError):
                    block = StatusBlock.attach(block_name)
            if (
                block is not None
                and block.state is State.READY
                and block.get(Field.GENERATION) >= min_generation
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{block_name} not ready in {TIMEOUT_S} s")
            time.sleep(0.001)
    finally:
        if block is not None:
            block.close()


def measure(args: argparse.Namespace, log: Path, config_path: Path) -> dict[str, Any]:
    config = load_config(config_path, env={})
    topology = Topology(config)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    started = monotonic_ns()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicegate.workers", "--config", str(config_path)],
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
        )
    probe: Probe | None = None
    try:
        wait_ready(topology.node_block, proc, min_generation=0)
        cold_start_ms = (monotonic_ns() - started) / NS_PER_MS
        probe = Probe(config)
        probe.run_turn()
        healthy = []
        for _ in range(args.rounds):
            start = monotonic_ns()
            probe.run_turn()
            healthy.append((monotonic_ns() - start) / NS_PER_MS)
        kills: list[Kill] = []
        for _ in range(args.rounds):
            for stage in args.stages:
                block = StatusBlock.attach(topology.status_block(stage))
                try:
                    generation, pid = block.get(Field.GENERATION), block.get(Field.PID)
                    killed = monotonic_ns()
                    os.kill(pid, signal.SIGKILL)
                    wait_ready(block.name, proc, generation + 1)
                    ready = monotonic_ns()
                    detect_to_ready = block.get(Field.LAST_REPLACE_NS) / NS_PER_MS
                finally:
                    block.close()
                probe.reopen()
                probe.run_turn()
                kills.append(
                    Kill(
                        stage,
                        (ready - killed) / NS_PER_MS,
                        detect_to_ready,
                        (monotonic_ns() - killed) / NS_PER_MS,
                    )
                )
    finally:
        if probe is not None:
            probe.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return {
        "cold_start_ms": cold_start_ms,
        "healthy_turn_ms": healthy,
        "kills": [asdict(k) for k in kills],
    }


def summarise(results: dict[str, Any], stages: list[str]) -> list[list[Any]]:
    kills = results["kills"]
    cold = float(results["cold_start_ms"])
    rows: list[list[Any]] = []
    for stage in [*stages, "all"]:
        mine = [k for k in kills if stage in ("all", k["stage"])]
        ready = sorted(k["kill_to_ready_ms"] for k in mine)
        rows.append(
            [
                stage,
                len(mine),
                statistics.median(ready),
                percentile(ready, 90),
                ready[-1],
                statistics.median(k["detect_to_ready_ms"] for k in mine),
                statistics.median(k["kill_to_turn_ms"] for k in mine),
                statistics.median(ready) / cold,
            ]
        )
    return rows


HEADERS = [
    "stage",
    "n",
    "kill->ready ms",
    "p90",
    "max",
    "detect->ready ms",
    "kill->turn ms",
    "ready/cold start",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench worker_restart", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10, help="kills per stage")
    parser.add_argument("--quick", action="store_true", help="2 kills per stage")
    parser.add_argument("--impl", choices=["native", "reference"], default="native")
    parser.add_argument("--backoff", type=float, default=0.0, help="health.restart_backoff_s")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 2
    args.stages = [s for s in args.stages.split(",") if s]
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; stages are {', '.join(STAGES)}")
    with tempfile.TemporaryDirectory() as tmp:
        config_path = write_config(Path(tmp), args)
        log = Path(tmp) / "node.log"
        try:
            results = measure(args, log, config_path)
        except RuntimeError as exc:
            print(f"worker_restart: {exc}\n{log.read_text(errors='replace')}", file=sys.stderr)
            return 1
    rows = summarise(results, args.stages)
    healthy = statistics.median(results["healthy_turn_ms"])
    print(f"cold start of the node: {results['cold_start_ms']:.0f} ms")
    print(f"turn on the healthy node: median {healthy:.2f} ms")
    print(format_table(HEADERS, rows))
    path = write_json(
        results_dir(args.out) / "worker_restart.json",
        {
            "bench": "worker_restart",
            "environment": environment(),
            "impl": args.impl,
            "backoff_s": args.backoff,
            "summary": [dict(zip(HEADERS, row, strict=True)) for row in rows],
            **results,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
