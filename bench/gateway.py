"""``python -m bench gateway``: the voicegate front end alone against a bare Starlette
echo endpoint on the same uvicorn.

Sessions stream 20 ms PCM16 frames at real time and get every frame back: from the
voicegate node through the gateway, the rings and four model-free stages (pass-through,
then ``bench._echo_stage``); from the floor straight from its handler. Each frame carries
its send time, so the client measures the round trip of every frame. The number of
sessions rises until the p99 round trip passes the budget (5 ms) or frames get lost;
the sessions held within it are reported for each server and as a ratio.

On 2 cores the load generator competes with the server: each server (and every process
it starts) is pinned to the first CPU of this process's set, the load generator (this
process) to the others, so the client never takes the server's core; the CPU time of
both sides is reported per step so a saturated load generator shows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench import report
from voicegate.core.config import PASSTHROUGH_STAGE

ROOT = Path(__file__).resolve().parents[1]
FRAME_MS = 20
FRAME_BYTES = 640  # 20 ms of PCM16 at 16 kHz
_STAMP = struct.Struct("<qB")  # send time (monotonic ns), 1 if inside the measured window
_READY = re.compile(r"serving on (?:http|ws)://([^\s/]+)")
_START_TIMEOUT_S = 120.0


@dataclass
class Step:
    sessions: int
    frames_sent: int = 0
    frames_back: int = 0
    errors: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    server_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0
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


# -- servers -------------------------------------------------------------------------


def _pin(cpus: set[int]) -> None:
    os.sched_setaffinity(0, cpus)


@contextlib.contextmanager
def _server(argv: list[str], env: dict[str, str], cpus: set[int]) -> Iterator[tuple[str, int]]:
    """Start a server pinned to ``cpus``; yield (ws URL, pid), stop it with SIGTERM."""
    own = os.sched_getaffinity(0)
    _pin(cpus)  # inherited at fork by the server and everything it starts
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
            found = _READY.search(line)
            if found:
                address = found.group(1)
                break
            if time.monotonic() > deadline:
                break
        if address is None:
            raise RuntimeError(f"{' '.join(argv[2:4])} did not start (exit {proc.poll()})")
        yield f"ws://{address}/v1/stream", proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _node_config(path: Path, name: str) -> Path:
    lines = [f'[node]\nname = "{name}"\n']
    for stage in ("vad", "stt", "llm"):
        lines.append(f'[workers.{stage}]\nstage = "{PASSTHROUGH_STAGE}"\n')
        lines.append(f'[workers.{stage}.options]\ntag = ""\n')
    lines.append('[workers.tts]\nstage = "bench._echo_stage:EchoStage"\n')
    path.write_text("\n".join(lines))
    return path


def _tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of ``root`` and every live descendant."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        pid = int(entry)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for pid, cpu in times.items():
        walk = pid
        while walk > 1 and walk != root:
            walk = parents.get(walk, 0)
        if walk == root:
            total += cpu
    return total


# -- load ----------------------------------------------------------------------------


async def _session(
    url: str, handshake: bool, *, start_at: float, stop_at: float, measure_from: float,
    step: Step,
) -> None:
    async with connect(url, max_size=None, compression=None, open_timeout=30) as ws:
        if handshake:
            await ws.send(json.dumps({"type": "session.start"}))
            started = json.loads(await ws.recv())
            if started.get("type") != "session.started":
                raise RuntimeError(f"no session.started: {started.get('type')}")
        receiver = asyncio.create_task(_receive(ws, step))
        frame = bytearray(FRAME_BYTES)
        loop = asyncio.get_running_loop()
        due = start_at
        while due < stop_at:
            await asyncio.sleep(max(0.0, due - loop.time()))
            measured = loop.time() >= measure_from
            _STAMP.pack_into(frame, 0, time.monotonic_ns(), measured)
            await ws.send(bytes(frame))
            step.frames_sent += measured
            due += FRAME_MS / 1000
        await asyncio.sleep(0.2)  # the last frames' way back
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver


async def _receive(ws: ClientConnection, step: Step) -> None:
    async for message in ws:
        if isinstance(message, bytes) and len(message) >= _STAMP.size:
            sent_ns, measured = _STAMP.unpack_from(message)
            if measured:
                step.latencies_ms.append((time.monotonic_ns() - sent_ns) / 1e6)
                step.frames_back += 1


async def run_step(
    url: str, sessions: int, *, duration_s: float, warmup_s: float, handshake: bool,
    server_pid: int,
) -> Step:
    step = Step(sessions)
    loop = asyncio.get_running_loop()
    begin = loop.time() + 1.0 + sessions * 0.004  # time to connect them all first
    stop_at = begin + warmup_s + duration_s
    rng = random.Random(sessions)
    tasks = [
        asyncio.create_task(
            _session(url, handshake, start_at=begin + rng.random() * FRAME_MS / 1000,
                     stop_at=stop_at, measure_from=begin + warmup_s, step=step)
        )
        for _ in range(sessions)
    ]
    await asyncio.sleep(max(0.0, begin + warmup_s - loop.time()))
    cpu_server, cpu_client, wall = _tree_cpu_s(server_pid), time.process_time(), time.monotonic()
    await asyncio.sleep(max(0.0, stop_at - loop.time()))
    elapsed = time.monotonic() - wall
    step.server_cpu_pct = 100 * (_tree_cpu_s(server_pid) - cpu_server) / elapsed
    step.client_cpu_pct = 100 * (time.process_time() - cpu_client) / elapsed
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, BaseException):
            step.errors += 1
    values = sorted(step.latencies_ms)
    step.p50_ms = report.percentile(values, 50)
    step.p99_ms = report.percentile(values, 99)
    step.max_ms = values[-1] if values else float("nan")
    return step


def ramp(
    url: str, server_pid: int, *, counts: Sequence[int], duration_s: float, warmup_s: float,
    handshake: bool, budget_ms: float, label: str, stop_when_failed: bool = True,
) -> list[Step]:
    steps: list[Step] = []
    for count in counts:
        for attempt in range(2):
            step = asyncio.run(run_step(
                url, count, duration_s=duration_s, warmup_s=warmup_s, handshake=handshake,
                server_pid=server_pid,
            ))
            # The machine is shared: a failed step is measured once more before it counts,
            # so one burst of someone else's work does not end the ramp.
            if step.held(budget_ms) or not stop_when_failed or attempt:
                break
            print(f"  {label:9} {count:4d} sessions: p99 {step.p99_ms:.2f} ms, measured again")
        steps.append(step)
        print(
            f"  {label:9} {count:4d} sessions: p50 {step.p50_ms:6.2f} ms  p99 "
            f"{step.p99_ms:6.2f} ms  lost {step.lost:.1%}  errors {step.errors}  "
            f"server cpu {step.server_cpu_pct:5.1f}%  client cpu {step.client_cpu_pct:5.1f}%",
            flush=True,
        )
        if stop_when_failed and not step.held(budget_ms):
            break
    return steps


def sessions_held(steps: Sequence[Step], budget_ms: float) -> int:
    held = 0
    for step in steps:
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
    parser = argparse.ArgumentParser(prog="python -m bench gateway", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run")
    parser.add_argument("--start", type=int, default=50, help="sessions of the first step")
    parser.add_argument("--step", type=int, default=50, help="sessions added per step")
    parser.add_argument("--max-sessions", type=int, default=600)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per step")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--budget-ms", type=float, default=5.0, help="p99 round trip allowed")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    if args.quick:
        counts = [2, 4]
        args.duration, args.warmup = 1.0, 0.5
    else:
        counts = list(range(args.start, args.max_sessions + 1, args.step))
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, client_cpus = {cpus[0]}, set(cpus[1:]) or {cpus[0]}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    ))
    out = report.results_dir(args.out)
    results: dict[str, list[Step]] = {}
    with tempfile.TemporaryDirectory(prefix="vg-bench-gateway-") as tmp:
        config = _node_config(Path(tmp) / "node.toml", f"bgw{os.getpid() % 100000}")
        bundle = Path(tmp) / "bundle"  # no model runs: the stages need none
        bundle.mkdir()
        servers = {
            "echo": [sys.executable, "-m", "bench._echo_app", "--port", "0"],
            "voicegate": [
                sys.executable, "-m", "voicegate", "serve", "--port", "0", "--config",
                str(config), "--bundle", str(bundle), "--max-sessions", "100000",
                "--log-level", "WARNING",
            ],
        }
        _pin(client_cpus)
        try:
            for label, command in servers.items():
                with _server(command, env, server_cpus) as (url, pid):
                    results[label] = ramp(
                        url, pid, counts=counts, duration_s=args.duration,
                        warmup_s=args.warmup, handshake=label == "voicegate",
                        budget_ms=args.budget_ms, label=label, stop_when_failed=not args.quick,
                    )
        finally:
            _pin(set(cpus))
    held = {label: sessions_held(steps, args.budget_ms) for label, steps in results.items()}
    ratio = held["voicegate"] / held["echo"] if held["echo"] else float("nan")
    # CPU per session is the figure the neighbours' noise moves least: it says how many
    # sessions one core could carry even when a latency step was spoiled by a stall.
    per_session = {
        label: report.percentile(sorted(s.server_cpu_pct / s.sessions for s in steps), 50)
        for label, steps in results.items()
    }
    rows = [
        [label, held[label], steps[-1].sessions, steps[-1].p99_ms, per_session[label],
         max(s.server_cpu_pct for s in steps), max(s.client_cpu_pct for s in steps)]
        for label, steps in results.items()
    ]
    headers = ["server", f"sessions held (p99 <= {args.budget_ms:g} ms)", "last step",
               "p99 last (ms)", "server cpu % per session", "server cpu max %",
               "client cpu max %"]
    table = report.format_table(headers, rows)
    print(table)
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
        "server_cpus": sorted(server_cpus),
        "client_cpus": sorted(client_cpus),
        "sessions_held": held,
        "server_cpu_pct_per_session": per_session,
        "ratio": ratio,
        "steps": {label: [s.summary() for s in steps] for label, steps in results.items()},
        "charts": [c.name for c in charts],
    })
    print(f"wrote {out / 'gateway.json'}, {out / 'gateway.md'} and {len(charts)} charts")
    errors = sum(s.errors for steps in results.values() for s in steps[:1])
    return 1 if errors else 0
