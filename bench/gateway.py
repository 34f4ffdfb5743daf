"""``python -m bench gateway``: the voicegate front end alone against a bare Starlette
echo endpoint on the same uvicorn.

Sessions stream 20 ms PCM16 frames at real time and get every frame back. Each frame
carries its send time, so the client measures the round trip of every frame. The number
of sessions rises until the p99 round trip passes the budget (5 ms) or frames get lost;
the sessions held within it are reported for each server and as a ratio.

What runs where, on a machine with CPUs c0 < c1 < ... (this process's affinity):

- the server under test alone on c0: the echo app's process, or the voicegate gateway
  process (the node's supervisor is pinned there too, it is idle while serving; its CPU
  is reported apart and not counted as the gateway's);
- the load generator (this process) on c1...: a raw-protocol client that costs a few
  microseconds per frame (``bench._gateway_load``), so that one core drives more
  sessions than one server core can serve;
- voicegate's worker processes on c1... as well, through ``[workers.*] cpus``. They
  stand in for the pipeline with no model: by default the first stage answers each
  frame straight back on its event path to the gateway (``bench._echo_stage``, one
  worker hop), the other three stages see only session control; ``--path pipeline``
  makes every frame cross all four stages instead. The workers' CPU is reported per
  step; it is taken from the client's core, so the client CPU column plus the workers'
  column shows how close that core is to full. ``[rings] spin_us = 0``: a spinning
  worker would burn the client's core between frames.

On 2 cores a saturated client would make the echo floor the client's own limit and
flatter the ratio: the client CPU% and the pacing timer's worst lateness per step show
whether the client kept up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import report
from bench._gateway_load import FRAME_MS, Pacer, Tally, close_sessions, open_sessions
from bench._stop import stop_server
from voicegate.core.config import PASSTHROUGH_STAGE, NodeConfig, load_config
from voicegate.workers.metrics import read_node_status

ROOT = Path(__file__).resolve().parents[1]
_READY = re.compile(r"serving on (?:http|ws)://([^\s/:]+):(\d+)")
_START_TIMEOUT_S = 120.0
_STAGES = ("vad", "stt", "llm", "tts")


@dataclass
class Step:
    sessions: int
    frames_sent: int = 0
    frames_back: int = 0
    errors: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    server_cpu_pct: float = 0.0  # the echo process, or the gateway process alone
    workers_cpu_pct: float = 0.0  # voicegate's stage workers (on the client's core)
    supervisor_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0
    pacer_late_ms: float = 0.0  # how late the client's timer fired at worst
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def lost(self) -> float:
        return 1.0 - self.frames_back / self.frames_sent if self.frames_sent else 1.0

    def held(self, budget_ms: float) -> bool:
        return self.errors == 0 and self.lost <= 0.01 and self.p99_ms <= budget_ms

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["latencies_ms"]
        data["lost"] = self.lost
        return data


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    pid: int  # the process that serves the WebSocket
    workers: tuple[int, ...] = ()
    supervisor: int = 0


# -- servers -------------------------------------------------------------------------


def _pin(cpus: set[int]) -> None:
    os.sched_setaffinity(0, cpus)


@contextlib.contextmanager
def _process(
    argv: list[str], env: dict[str, str], cpus: set[int]
) -> Iterator[tuple[str, int, int]]:
    """Start a server pinned to ``cpus``; yield (host, port, pid), stop it with SIGTERM."""
    own = os.sched_getaffinity(0)
    _pin(cpus)  # inherited at fork by the server and what it starts unpinned
    try:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, start_new_session=True,
        )  # fmt: skip
    finally:
        _pin(own)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        address = None
        for line in proc.stdout:
            address = _READY.search(line)
            if address or time.monotonic() > deadline:
                break
        if address is None:
            raise RuntimeError(f"{' '.join(argv[2:4])} did not start (exit {proc.poll()})")
        yield address.group(1), int(address.group(2)), proc.pid
    finally:
        stop_server(proc, 30.0)


def _node_config(
    path: Path, name: str, *, direct: bool, gateway_cpus: set[int], worker_cpus: set[int]
) -> Path:
    def cpus(ids: set[int]) -> str:
        return f"cpus = [{', '.join(map(str, sorted(ids)))}]\n"

    lines = [f'[node]\nname = "{name}"\n', "[rings]\nspin_us = 0\n"]
    lines.append("[gateway]\n" + cpus(gateway_cpus))
    echo_at = "vad" if direct else "tts"
    for stage in _STAGES:
        if stage == echo_at:
            lines.append(f'[workers.{stage}]\nstage = "bench._echo_stage:EchoStage"\n'
                         + cpus(worker_cpus))
            lines.append(f"[workers.{stage}.options]\ndirect = {str(direct).lower()}\n")
        else:
            lines.append(f'[workers.{stage}]\nstage = "{PASSTHROUGH_STAGE}"\n' + cpus(worker_cpus))
            lines.append(f'[workers.{stage}.options]\ntag = ""\n')
    path.write_text("\n".join(lines))
    return path


@contextlib.contextmanager
def _voicegate(
    config: Path, node: NodeConfig, bundle: Path, env: dict[str, str], *,
    gateway_cpus: set[int], worker_cpus: set[int],
) -> Iterator[Server]:  # fmt: skip
    argv = [
        sys.executable, "-m", "voicegate", "serve", "--port", "0", "--config", str(config),
        "--bundle", str(bundle), "--max-sessions", "100000", "--log-level", "WARNING",
        # Every load session comes from this one address.
        "--max-connections-per-address", "100000",
    ]  # fmt: skip
    # Started on every CPU, so that the node accepts ``cpus`` lists naming any of them;
    # the workers pin themselves to ``[workers.*] cpus``.
    with _process(argv, env, set(os.sched_getaffinity(0))) as (host, port, supervisor):
        status = read_node_status(node)
        gateway = status["gw0"].pid
        if os.sched_getaffinity(gateway) != gateway_cpus:
            raise RuntimeError(f"gateway {gateway} runs on CPUs {os.sched_getaffinity(gateway)}")
        # The supervisor is idle while serving; keep it off the gateway's core all the same.
        _pin_process(supervisor, worker_cpus)
        workers = tuple(status[s].pid for s in _STAGES)
        for pid in workers:
            if os.sched_getaffinity(pid) != worker_cpus:
                raise RuntimeError(f"worker {pid} runs on CPUs {os.sched_getaffinity(pid)}")
        yield Server(host, port, gateway, workers, supervisor)


def _pin_process(pid: int, cpus: set[int]) -> None:
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), cpus)


@contextlib.contextmanager
def _echo(env: dict[str, str], cpus: set[int]) -> Iterator[Server]:
    argv = [sys.executable, "-m", "bench._echo_app", "--port", "0"]
    with _process(argv, env, cpus) as (host, port, pid):
        yield Server(host, port, pid)


def _cpu_s(pids: Sequence[int]) -> float:
    """User + system CPU seconds of ``pids`` (threads included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


# -- load ----------------------------------------------------------------------------


async def run_step(
    server: Server, sessions: int, *, duration_s: float, warmup_s: float, handshake: bool
) -> Step:
    step = Step(sessions)
    tally = Tally()
    loop = asyncio.get_running_loop()
    clients = await open_sessions(
        server.host, server.port, "/v1/stream", sessions, handshake=handshake, tally=tally
    )
    try:
        if not clients:
            raise RuntimeError(f"no session of {sessions} connected")
        begin = loop.time() + 0.1
        measure_from = begin + warmup_s
        stop_at = measure_from + duration_s
        pacer = Pacer(clients, begin=begin, stop_at=stop_at, measure_from=measure_from)
        pacer.start()
        await asyncio.sleep(max(0.0, measure_from - loop.time()))
        mark = (_cpu_s([server.pid]), _cpu_s(server.workers), _cpu_s([server.supervisor]),
                time.process_time(), time.monotonic())  # fmt: skip
        await pacer.done
        elapsed = time.monotonic() - mark[4]
        step.server_cpu_pct = 100 * (_cpu_s([server.pid]) - mark[0]) / elapsed
        if server.workers:
            step.workers_cpu_pct = 100 * (_cpu_s(server.workers) - mark[1]) / elapsed
            step.supervisor_cpu_pct = 100 * (_cpu_s([server.supervisor]) - mark[2]) / elapsed
        step.client_cpu_pct = 100 * (time.process_time() - mark[3]) / elapsed
        step.pacer_late_ms = pacer.late_ms_max
        await asyncio.sleep(0.3)  # the last frames' way back
    finally:
        await close_sessions(clients)
    step.frames_sent, step.frames_back, step.errors = tally.sent, tally.back, tally.errors
    values = sorted(ns / 1e6 for ns in tally.latencies_ns)
    step.latencies_ms = values
    step.p50_ms = report.percentile(values, 50)
    step.p99_ms = report.percentile(values, 99)
    step.max_ms = values[-1] if values else float("nan")
    return step


def _print(label: str, step: Step, note: str = "") -> None:
    print(
        f"  {label:9} {step.sessions:4d} sessions: p50 {step.p50_ms:5.2f} ms  p99 "
        f"{step.p99_ms:6.2f} ms  lost {step.lost:5.1%}  errors {step.errors}  server cpu "
        f"{step.server_cpu_pct:5.1f}%  workers {step.workers_cpu_pct:5.1f}%  client cpu "
        f"{step.client_cpu_pct:5.1f}%  timer late {step.pacer_late_ms:5.1f} ms{note}",
        flush=True,
    )


def ramp(
    measure: Callable[[int], Step], *, start: int, coarse: int, fine: int, max_sessions: int,
    budget_ms: float, label: str,
) -> list[Step]:  # fmt: skip
    """Sessions rise by ``coarse`` until a step fails, then by ``fine`` from the last
    step held up to that failure."""
    steps: dict[int, Step] = {}

    def attempt(count: int) -> bool:
        step = measure(count)
        if not step.held(budget_ms):
            # The machine is shared: a failed step is measured once more before it
            # counts, so one burst of someone else's work does not end the ramp.
            _print(label, step, ", measured again")
            step = measure(count)
        _print(label, step)
        steps[count] = step
        return step.held(budget_ms)

    count, held = start, 0
    while count <= max_sessions and attempt(count):
        held, count = count, count + coarse
    failed = count
    count = held + fine
    while held and count < min(failed, max_sessions + 1) and attempt(count):
        count += fine
    return [steps[c] for c in sorted(steps)]


def sessions_held(steps: Sequence[Step], budget_ms: float) -> int:
    """The largest load held below the smallest load that failed."""
    held = 0
    for step in sorted(steps, key=lambda s: s.sessions):
        if not step.held(budget_ms):
            break
        held = step.sessions
    return held


# -- output --------------------------------------------------------------------------


def _charts(out: Path, results: dict[str, list[Step]], budget_ms: float) -> list[Path]:
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, steps in results.items():
        ax.plot([s.sessions for s in steps], [s.p99_ms for s in steps], marker="o", label=label)
    ax.axhline(budget_ms, color="grey", linestyle="--", label=f"{budget_ms:g} ms budget")
    ax.set_xlabel("concurrent sessions (20 ms frames both ways)")
    ax.set_ylabel("p99 round trip (ms)")
    ax.set_title("gateway vs bare echo: capacity curve")
    ax.legend()
    curve = out / "gateway_capacity.png"
    fig.tight_layout()
    fig.savefig(curve)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, steps in results.items():
        held = [s for s in steps if s.held(budget_ms)] or steps[:1]
        values = sorted(held[-1].latencies_ms)
        if values:
            ys = [i / len(values) for i in range(len(values))]
            ax.plot(values, ys, label=f"{label} @ {held[-1].sessions} sessions")
    ax.set_xlabel("round trip (ms)")
    ax.set_ylabel("fraction of frames")
    ax.set_title("round-trip distribution at the largest load held")
    ax.legend()
    dist = out / "gateway_latency.png"
    fig.tight_layout()
    fig.savefig(dist)
    plt.close(fig)
    return [curve, dist]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run")
    parser.add_argument("--start", type=int, default=100, help="sessions of the first step")
    parser.add_argument("--coarse", type=int, default=100,
                        help="sessions added per step until one fails")
    parser.add_argument("--step", type=int, default=25,
                        help="sessions added per step after that, from the last step held")
    parser.add_argument("--max-sessions", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per step")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--budget-ms", type=float, default=5.0, help="p99 round trip allowed")
    parser.add_argument("--path", choices=("direct", "pipeline"), default="direct",
                        help="voicegate's frames: echoed by the first stage (default) or "
                             "through all four stages")
    parser.add_argument("--servers", default="echo,voicegate",
                        help="which servers to measure, in order")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    labels = [label for label in args.servers.split(",") if label]
    if not set(labels) <= {"echo", "voicegate"}:
        parser.error(f"--servers: unknown server in {args.servers!r}")
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, client_cpus = {cpus[0]}, set(cpus[1:]) or {cpus[0]}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    ))
    out = report.results_dir(args.out)
    results: dict[str, list[Step]] = {}
    with tempfile.TemporaryDirectory(prefix="vg-bench-gateway-") as tmp:
        config = _node_config(
            Path(tmp) / "node.toml", f"bgw{os.getpid() % 100000}", direct=args.path == "direct",
            gateway_cpus=server_cpus, worker_cpus=client_cpus,
        )
        node = load_config(config, env={})
        bundle = Path(tmp) / "bundle"  # no model runs: the stages need none
        bundle.mkdir()
        for label in labels:
            server_cm = (
                _echo(env, server_cpus) if label == "echo"
                else _voicegate(config, node, bundle, env, gateway_cpus=server_cpus,
                                worker_cpus=client_cpus)
            )  # fmt: skip
            with server_cm as server:
                _pin(client_cpus)
                try:
                    def measure(count: int, server: Server = server, label: str = label) -> Step:
                        # asyncio's loop for the load: see bench._e2e_client.client_main
                        return asyncio.run(run_step(
                            server, count, duration_s=args.duration, warmup_s=args.warmup,
                            handshake=label == "voicegate",
                        ))

                    if args.quick:
                        results[label] = [measure(2), measure(4)]
                        for step in results[label]:
                            _print(label, step)
                    else:
                        results[label] = ramp(
                            measure, start=args.start, coarse=args.coarse, fine=args.step,
                            max_sessions=args.max_sessions, budget_ms=args.budget_ms,
                            label=label,
                        )
                finally:
                    _pin(set(cpus))
    held = {label: sessions_held(steps, args.budget_ms) for label, steps in results.items()}
    ratio = (
        held["voicegate"] / held["echo"]
        if held.get("echo") and "voicegate" in held else float("nan")
    )
    # CPU per session is the figure the neighbours' noise moves least: it says how many
    # sessions one core could carry even when a latency step was spoiled by a stall.
    per_session = {
        label: report.percentile(sorted(s.server_cpu_pct / s.sessions for s in steps), 50)
        for label, steps in results.items()
    }
    rows = []
    for label, steps in results.items():
        at = next((s for s in steps if s.sessions == held[label]), steps[0])
        rows.append([
            label, held[label], at.p50_ms, at.p99_ms, at.server_cpu_pct, at.workers_cpu_pct,
            at.client_cpu_pct, per_session[label],
        ])
    headers = [
        "server", f"sessions held (p99 <= {args.budget_ms:g} ms)", "p50 (ms)", "p99 (ms)",
        "server cpu %", "workers cpu %", "client cpu %", "server cpu % per session",
    ]
    table = report.format_table(headers, rows)
    print(table)
    print("(figures at the largest load held; server: the echo process or the gateway "
          "process alone)")
    print(f"gateway / echo sessions held: {ratio:.2f} (target >= 0.90)")
    markdown = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n" + "".join(
        "| " + " | ".join(str(v if not isinstance(v, float) else f"{v:.3g}") for v in r) + " |\n"
        for r in rows
    ) + f"\ngateway / echo sessions held: {ratio:.2f} (target >= 0.90)\n"
    (out / "gateway.md").write_text(markdown)
    charts = _charts(out, results, args.budget_ms)
    report.write_json(out / "gateway.json", {
        "bench": "gateway",
        "environment": report.environment(),
        "budget_ms": args.budget_ms,
        "frame_ms": FRAME_MS,
        "path": args.path,
        "server_cpus": sorted(server_cpus),
        "client_cpus": sorted(client_cpus),
        "worker_cpus": sorted(client_cpus),
        "sessions_held": held,
        "server_cpu_pct_per_session": per_session,
        "ratio": ratio,
        "steps": {label: [s.summary() for s in steps] for label, steps in results.items()},
        "charts": [c.name for c in charts],
    })
    print(f"wrote {out / 'gateway.json'}, {out / 'gateway.md'} and {len(charts)} charts")
    errors = sum(s.errors for steps in results.values() for s in steps[:1])
    return 1 if errors else 0
