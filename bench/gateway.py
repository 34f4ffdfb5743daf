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

``--against REV`` measures this tree's gateway beside the gateway of git revision REV
instead of the echo, in the same run: REV is checked out in a temporary ``git worktree``
(its Cython ring built in place with this Python; removed afterwards) and served from
there (that tree first on PYTHONPATH, and its working directory). Both nodes run at once
on the same CPUs; every load step is measured on both, one after the other, their order
alternating from step to step, so that the neighbours' noise falls on both alike. It
reports each one's sessions held within the budget and gateway CPU per session, and
the ratios new / old. Both revisions must share the node status block's layout (the
bench reads the processes' ids from it).
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
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    argv: list[str], env: dict[str, str], cpus: set[int], cwd: Path = ROOT
) -> Iterator[tuple[str, int, int]]:
    """Start a server pinned to ``cpus``; yield (host, port, pid), stop it with SIGTERM."""
    own = os.sched_getaffinity(0)
    _pin(cpus)  # inherited at fork by the server and what it starts unpinned
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
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
    gateway_cpus: set[int], worker_cpus: set[int], tree: Path = ROOT,
) -> Iterator[Server]:  # fmt: skip
    """A node served from the source ``tree`` (``env`` puts it first on PYTHONPATH)."""
    argv = [
        sys.executable, "-m", "voicegate", "serve", "--port", "0", "--config", str(config),
        "--bundle", str(bundle), "--max-sessions", "100000", "--log-level", "WARNING",
        # Every load session comes from this one address.
        "--max-connections-per-address", "100000",
    ]  # fmt: skip
    # Started on every CPU, so that the node accepts ``cpus`` lists naming any of them;
    # the workers pin themselves to ``[workers.*] cpus``.
    with _process(argv, env, set(os.sched_getaffinity(0)), tree) as (host, port, supervisor):
        status = read_node_status(node)
        if not {"gw0", *_STAGES} <= set(status):
            raise RuntimeError(f"cannot read the status of node {node.node.name} from {tree}")
        gateway = status["gw0"].pid
        # Its native core is the one built in ``tree``: the revision under test runs.
        if str(tree / "voicegate") not in Path(f"/proc/{gateway}/maps").read_text():
            raise RuntimeError(f"gateway {gateway} does not run the extension of {tree}")
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


def _tree_env(tree: Path) -> dict[str, str]:
    """The environment of a server run from the source ``tree``: that tree first."""
    path = (str(tree), os.environ.get("PYTHONPATH", ""))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))


@contextlib.contextmanager
def revision_tree(rev: str, where: Path, *, build: bool = True) -> Iterator[Path]:
    """A checkout of git revision ``rev`` under ``where`` (a ``git worktree`` of this
    repository) with its Cython extension built in place by this Python; removed, with
    its build, afterwards."""
    tree = where / "against"
    git = ["git", "-C", str(ROOT)]
    added = subprocess.run(
        [*git, "worktree", "add", "--detach", "--quiet", str(tree), rev],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if added.returncode:
        raise RuntimeError(f"git worktree add {rev}: {added.stderr.strip()}")
    try:
        if build:
            built = subprocess.run(
                [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                cwd=tree, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if built.returncode:
                raise RuntimeError(f"building {rev}'s extension failed:\n{built.stderr[-2000:]}")
        yield tree
    finally:
        subprocess.run(
            [*git, "worktree", "remove", "--force", str(tree)], capture_output=True, check=False
        )
        subprocess.run([*git, "worktree", "prune"], capture_output=True, check=False)


def revision_name(rev: str, tree: Path = ROOT) -> str:
    """``rev`` as "REV (abbreviated commit)", or the tree's HEAD with local changes noted."""
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", rev],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return f"{rev} ({commit})" if commit and commit != rev else rev


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
    measures: Mapping[str, Callable[[int], Step]], *, start: int, coarse: int, fine: int,
    max_sessions: int, budget_ms: float,
) -> dict[str, list[Step]]:  # fmt: skip
    """Sessions rise by ``coarse`` until a step fails, then by ``fine`` from the last
    step held up to that failure, for each server of ``measures``. The servers are
    measured in turns: each step of the coarse phase on every server still holding, the
    fine phase in rounds of one step per server; the order alternates per round."""
    steps: dict[str, dict[int, Step]] = {label: {} for label in measures}

    def attempt(label: str, count: int) -> bool:
        step = measures[label](count)
        if not step.held(budget_ms):
            # The machine is shared: a failed step is measured once more before it
            # counts, so one burst of someone else's work does not end the ramp.
            _print(label, step, ", measured again")
            step = measures[label](count)
        _print(label, step)
        steps[label][count] = step
        return step.held(budget_ms)

    rounds = 0

    def in_turns(plan: dict[str, int]) -> dict[str, bool]:
        nonlocal rounds
        labels = list(plan)[:: -1 if rounds % 2 else 1]
        rounds += 1
        return {label: attempt(label, plan[label]) for label in labels}

    held = dict.fromkeys(measures, 0)
    failed = dict.fromkeys(measures, max_sessions + 1)
    running, count = list(measures), start
    while running and count <= max_sessions:
        for label, ok in in_turns(dict.fromkeys(running, count)).items():
            if ok:
                held[label] = count
            else:
                failed[label] = count
                running.remove(label)
        count += coarse
    fine_plan = {label: held[label] + fine for label in measures if held[label]}
    while fine_plan := {label: c for label, c in fine_plan.items() if c < failed[label]}:
        for label, ok in in_turns(fine_plan).items():
            if ok:
                fine_plan[label] += fine
            else:
                failed[label] = fine_plan[label]
    return {label: [by_count[c] for c in sorted(by_count)] for label, by_count in steps.items()}


def sessions_held(steps: Sequence[Step], budget_ms: float) -> int:
    """The largest load held below the smallest load that failed."""
    held = 0
    for step in sorted(steps, key=lambda s: s.sessions):
        if not step.held(budget_ms):
            break
        held = step.sessions
    return held


# -- output --------------------------------------------------------------------------


def _charts(
    out: Path, results: dict[str, list[Step]], budget_ms: float, name: str
) -> list[Path]:
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, steps in results.items():
        ax.plot([s.sessions for s in steps], [s.p99_ms for s in steps], marker="o", label=label)
    ax.axhline(budget_ms, color="grey", linestyle="--", label=f"{budget_ms:g} ms budget")
    ax.set_xlabel("concurrent sessions (20 ms frames both ways)")
    ax.set_ylabel("p99 round trip (ms)")
    ax.set_title(f"{' vs '.join(results)}: capacity curve")
    ax.legend()
    curve = out / f"{name}_capacity.png"
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
    dist = out / f"{name}_latency.png"
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
    parser.add_argument("--against", metavar="REV",
                        help="measure this tree's gateway (new) beside git revision REV's "
                             "(old) instead of --servers, steps interleaved")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    labels = [label for label in args.servers.split(",") if label]
    if args.against is not None:
        labels = ["old", "new"]
    elif not set(labels) <= {"echo", "voicegate"}:
        parser.error(f"--servers: unknown server in {args.servers!r}")
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, client_cpus = {cpus[0]}, set(cpus[1:]) or {cpus[0]}
    env = _tree_env(ROOT)
    out = report.results_dir(args.out)
    revisions: dict[str, str] = {}

    def run(label: str, server: Server) -> Callable[[int], Step]:
        def measure(count: int) -> Step:
            # asyncio's loop for the load: see bench._e2e_client.client_main
            return asyncio.run(run_step(
                server, count, duration_s=args.duration, warmup_s=args.warmup,
                handshake=label != "echo",
            ))
        return measure

    def measure_all(measures: dict[str, Callable[[int], Step]]) -> dict[str, list[Step]]:
        _pin(client_cpus)
        try:
            if args.quick:
                quick: dict[str, list[Step]] = {label: [] for label in measures}
                for count in (2, 4):
                    for label, measure in measures.items():
                        quick[label].append(measure(count))
                        _print(label, quick[label][-1])
                return quick
            return ramp(
                measures, start=args.start, coarse=args.coarse, fine=args.step,
                max_sessions=args.max_sessions, budget_ms=args.budget_ms,
            )
        finally:
            _pin(set(cpus))

    results: dict[str, list[Step]] = {}
    with tempfile.TemporaryDirectory(prefix="vg-bench-gateway-") as tmp:
        bundle = Path(tmp) / "bundle"  # no model runs: the stages need none
        bundle.mkdir()

        def node(label: str, tree: Path = ROOT) -> contextlib.AbstractContextManager[Server]:
            config = _node_config(
                Path(tmp) / f"{label}.toml", f"bgw{label[0]}{os.getpid() % 100000}",
                direct=args.path == "direct", gateway_cpus=server_cpus, worker_cpus=client_cpus,
            )  # fmt: skip
            return _voicegate(
                config, load_config(config, env={}), bundle, _tree_env(tree),
                gateway_cpus=server_cpus, worker_cpus=client_cpus, tree=tree,
            )

        if args.against is not None:
            head = revision_name("HEAD").removeprefix("HEAD ")
            revisions = {"old": revision_name(args.against), "new": f"this tree {head}"}
            print(f"building {revisions['old']} in a temporary worktree", flush=True)
            with contextlib.ExitStack() as stack:
                tree = stack.enter_context(revision_tree(args.against, Path(tmp)))
                servers = {"old": stack.enter_context(node("old", tree)),
                           "new": stack.enter_context(node("new"))}  # fmt: skip
                results = measure_all({label: run(label, s) for label, s in servers.items()})
        else:
            for label in labels:
                server_cm = _echo(env, server_cpus) if label == "echo" else node(label)
                with server_cm as server:
                    results.update(measure_all({label: run(label, server)}))
    held = {label: sessions_held(steps, args.budget_ms) for label, steps in results.items()}
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
            revisions.get(label, label), held[label], at.p50_ms, at.p99_ms, at.server_cpu_pct,
            at.workers_cpu_pct, at.client_cpu_pct, per_session[label],
        ])  # fmt: skip
    headers = [
        "server", f"sessions held (p99 <= {args.budget_ms:g} ms)", "p50 (ms)", "p99 (ms)",
        "server cpu %", "workers cpu %", "client cpu %", "server cpu % per session",
    ]
    print(report.format_table(headers, rows))
    print("(figures at the largest load held; server: the echo process or the gateway "
          "process alone)")
    name = "gateway"
    summary: dict[str, Any]
    if args.against is not None:
        name = "gateway_against"
        summary = {
            "revisions": revisions,
            "sessions_held_new_over_old": _ratio(held["new"], held["old"]),
            "cpu_per_session_new_over_old": _ratio(per_session["new"], per_session["old"]),
        }
        verdict = (
            f"new / old sessions held: {summary['sessions_held_new_over_old']:.2f}; "
            f"new / old gateway cpu per session: {summary['cpu_per_session_new_over_old']:.2f}"
            " (below 1: cheaper)"
        )
    else:
        ratio = _ratio(held["voicegate"], held["echo"]) if len(held) == 2 else float("nan")
        summary = {"ratio": ratio}
        verdict = f"gateway / echo sessions held: {ratio:.2f} (target >= 0.90)"
    print(verdict)
    markdown = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n" + "".join(
        "| " + " | ".join(str(v if not isinstance(v, float) else f"{v:.3g}") for v in r) + " |\n"
        for r in rows
    ) + f"\n{verdict}\n"
    (out / f"{name}.md").write_text(markdown)
    charts = _charts(out, results, args.budget_ms, name)
    report.write_json(out / f"{name}.json", {
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
        **summary,
        "steps": {label: [s.summary() for s in steps] for label, steps in results.items()},
        "charts": [c.name for c in charts],
    })
    print(f"wrote {out / (name + '.json')}, {out / (name + '.md')} and {len(charts)} charts")
    errors = sum(s.errors for steps in results.values() for s in steps[:1])
    return 1 if errors else 0


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")
