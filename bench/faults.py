"""``python -m bench faults``: kill -9 and SIGSTOP of each process kind of a node under
8 sessions taking text turns, one fault per fresh node.

Per fault it reports

- turns lost: turns that ended in ``error``/``response.cancelled``, or whose connection
  died, from the fault on;
- recovery: seconds from the fault until the first answer audio of a turn started after
  it (for the supervisor's kill -9: of a node restarted on the same port);
- leftovers: for the supervisor's kill -9, the node's processes and /dev/shm objects
  still there 2 s after the fault; for the others, what is left 2 s after the node's
  stop returned.

SIGSTOPped processes are resumed after ``--stop-s`` seconds (a stopped supervisor is not
on the data path: nothing detects it but the systemd watchdog). Results go to
``bench/results/faults.json`` and stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import websockets

from bench._node_under_test import BenchNode, demo_bundle, one_turn, wait_for

KINDS = ("vad", "stt", "llm", "tts", "gateway 0", "supervisor")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Turn:
    session: int
    start: float
    end: float
    ok: bool
    first_audio: float = 0.0


@dataclass
class FaultResult:
    kind: str
    fault: str
    turns_before: int = 0
    turns_lost: int = 0
    turns_after_ok: int = 0
    recovery_s: float | None = None
    leftover_processes: list[str] = field(default_factory=list)
    leftover_shm: int = 0
    note: str = ""


async def _session(url_of: object, index: int, turns: list[Turn], stop: asyncio.Event) -> None:
    while not stop.is_set():
        asked = 0.0  # when the turn in progress was asked for; 0: none is
        try:
            async with websockets.connect(url_of(), open_timeout=5) as ws:  # type: ignore[operator]
                await ws.send(json.dumps({"type": "session.start"}))
                await ws.recv()
                while not stop.is_set():
                    asked = time.monotonic()
                    ok, first_audio = await one_turn(ws, f"turn of session {index}")
                    turns.append(Turn(index, asked, time.monotonic(), ok, first_audio))
                    asked = 0.0
        except (OSError, TimeoutError, websockets.WebSocketException):
            # A turn lost with its connection; a refused connection is no turn.
            if asked:
                turns.append(Turn(index, asked, time.monotonic(), False))
            await asyncio.sleep(0.2)


async def _drive(
    node: BenchNode, kind: str, fault: str, *, args: argparse.Namespace, bundle: Path, log: Path
) -> FaultResult:
    result = FaultResult(kind, fault)
    turns: list[Turn] = []
    stop = asyncio.Event()
    current = {"node": node}
    tasks = [
        asyncio.create_task(_session(lambda: current["node"].url, i, turns, stop))
        for i in range(args.sessions)
    ]
    await asyncio.sleep(args.warmup_s)
    pid = node.processes().get(kind)
    if pid is None:
        result.note = f"no {kind} process found"
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return result
    fault_at = time.monotonic()
    result.turns_before = sum(t.ok for t in turns)
    os.kill(pid, signal.SIGKILL if fault == "kill -9" else signal.SIGSTOP)
    if kind == "supervisor" and fault == "kill -9":
        gone = await asyncio.to_thread(
            wait_for, lambda: not node.processes() and not node.shm(), 2.0
        )
        result.leftover_processes = sorted(node.processes())
        result.leftover_shm = len(node.shm())
        result.note = f"node gone in {gone:.2f} s" if gone is not None else "not gone in 2 s"
        node.kill_group()
        current["node"] = await asyncio.to_thread(
            BenchNode, bundle, log, node.name + "b", node.port
        )
    elif fault == "SIGSTOP":
        await asyncio.sleep(args.stop_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    await asyncio.sleep(args.observe_s)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    after = [t for t in turns if t.end >= fault_at]
    result.turns_lost = sum(not t.ok for t in after)
    answered = sorted(t.first_audio for t in after if t.ok and t.start >= fault_at)
    result.recovery_s = round(answered[0] - fault_at, 3) if answered else None
    result.turns_after_ok = sum(t.ok for t in after)
    if current["node"] is not node:
        node = current["node"]
    node.stop()
    if not (kind == "supervisor" and fault == "kill -9"):
        # Processes still exiting when the supervisor returned get the target's 2 s.
        await asyncio.to_thread(wait_for, lambda: not node.processes(), 2.0)
        left = node.processes()
        result.leftover_processes = sorted(left)
        result.leftover_shm = len(node.shm())
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench faults", description=__doc__)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--warmup-s", type=float, default=4.0)
    parser.add_argument("--observe-s", type=float, default=8.0)
    parser.add_argument("--stop-s", type=float, default=3.0)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--faults", default="kill -9,SIGSTOP")
    args = parser.parse_args(argv)
    results: list[FaultResult] = []
    with tempfile.TemporaryDirectory(prefix="vg-faults-") as tmp:
        bundle = demo_bundle(Path(tmp) / "bundle")
        log = Path(tmp) / "node.log"
        for n, (kind, fault) in enumerate(
            (k, f) for k in args.kinds.split(",") for f in args.faults.split(",")
        ):
            node = BenchNode(bundle, log, f"flt{os.getpid() % 10000}x{n}")
            try:
                result = asyncio.run(_drive(node, kind, fault, args=args, bundle=bundle, log=log))
            finally:
                with contextlib.suppress(Exception):
                    node.kill_group()
            results.append(result)
            print(_row(result), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "faults.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


def _row(r: FaultResult) -> str:
    recovery = f"{r.recovery_s:.2f} s" if r.recovery_s is not None else "-"
    left = ",".join(r.leftover_processes) or "none"
    return (
        f"{r.kind:<11} {r.fault:<8} lost {r.turns_lost:>3}  recovery {recovery:>8}  "
        f"ok after {r.turns_after_ok:>3}  leftovers: processes {left}, shm {r.leftover_shm}"
        + (f"  ({r.note})" if r.note else "")
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
