"""``python -m bench soak --minutes N``: a node under 8 sessions that stream the demo
utterance at real time, over and over, for N minutes; every ``--interval-s`` it samples
per process RSS and open file descriptors, and the node's /dev/shm objects (count and
bytes). Writes ``bench/results/soak.json`` and ``bench/results/soak.png`` and prints,
per process, the RSS growth after the first ``--settle-min`` minutes (the target: under
2% over a 30-minute soak).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from bench._node_under_test import BenchNode, demo_bundle
from voicegate.core.wav import read_wav

RESULTS = Path(__file__).resolve().parent / "results"
DEMO = Path(__file__).resolve().parent.parent / "voicegate" / "data" / "demo" / "order_status.wav"
FRAME = 640  # 20 ms of 16 kHz pcm16


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


async def _stream(url: str, audio: bytes, stop: asyncio.Event, answers: list[int]) -> None:
    silence = bytes(FRAME * 50)
    while not stop.is_set():
        try:
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"type": "session.start"}))
                await ws.recv()

                async def read() -> None:
                    async for m in ws:
                        if isinstance(m, str) and json.loads(m)["type"] == "response.done":
                            answers.append(1)

                reader = asyncio.create_task(read())
                start = time.monotonic()
                sent = 0
                while not stop.is_set():
                    for chunk in (audio, silence):
                        for i in range(0, len(chunk) - FRAME + 1, FRAME):
                            await ws.send(chunk[i : i + FRAME])
                            sent += 1
                            # Real time: never ahead of the clock.
                            delay = start + sent * 0.02 - time.monotonic()
                            if delay > 0:
                                await asyncio.sleep(delay)
                            if stop.is_set():
                                break
                reader.cancel()
        except (OSError, websockets.WebSocketException):
            await asyncio.sleep(0.5)


async def _run(node: BenchNode, args: argparse.Namespace) -> list[dict[str, Any]]:
    wav = read_wav(DEMO)
    audio = wav.samples.astype("<i2").tobytes()
    stop = asyncio.Event()
    answers: list[int] = []
    tasks = [
        asyncio.create_task(_stream(node.url, audio, stop, answers)) for _ in range(args.sessions)
    ]
    samples: list[dict[str, Any]] = []
    start = time.monotonic()
    while time.monotonic() - start < args.minutes * 60:
        procs = node.processes()
        samples.append(
            {
                "t_s": round(time.monotonic() - start, 1),
                "rss_kb": {role: _rss_kb(pid) for role, pid in procs.items()},
                "fds": {role: _fds(pid) for role, pid in procs.items()},
                "shm_objects": len(node.shm()),
                "shm_bytes": node.shm_bytes(),
                "answers": len(answers),
            }
        )
        await asyncio.sleep(args.interval_s)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return samples


def _growth(samples: list[dict[str, Any]], settle_s: float) -> dict[str, float]:
    settled = [s for s in samples if s["t_s"] >= settle_s] or samples[-1:]
    first, last = settled[0]["rss_kb"], samples[-1]["rss_kb"]
    return {
        role: round(100.0 * (last[role] - first[role]) / first[role], 2)
        for role in first
        if role in last and first[role]
    }


def _plot(samples: list[dict[str, Any]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - bench extra, only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (rss, fds, shm) = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    t = [s["t_s"] / 60 for s in samples]
    for role in samples[-1]["rss_kb"]:
        rss.plot(t, [s["rss_kb"].get(role, 0) / 1024 for s in samples], label=role)
        fds.plot(t, [s["fds"].get(role, 0) for s in samples], label=role)
    shm.plot(t, [s["shm_bytes"] / 2**20 for s in samples], label="bytes (MiB)")
    shm.plot(t, [s["shm_objects"] for s in samples], label="objects")
    rss.set_ylabel("RSS (MiB)")
    fds.set_ylabel("open fds")
    shm.set_ylabel("/dev/shm")
    shm.set_xlabel("minutes")
    for ax in (rss, fds, shm):
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--interval-s", type=float, default=5.0)
    parser.add_argument("--settle-min", type=float, default=2.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vg-soak-") as tmp:
        bundle = demo_bundle(Path(tmp) / "bundle")
        node = BenchNode(bundle, Path(tmp) / "node.log", f"soak{os.getpid() % 100000}")
        try:
            samples = asyncio.run(_run(node, args))
        finally:
            node.stop()
        left = {"processes": sorted(node.processes()), "shm": node.shm()}
    growth = _growth(samples, args.settle_min * 60)
    RESULTS.mkdir(exist_ok=True)
    report = {"args": vars(args), "growth_pct": growth, "after_stop": left, "samples": samples}
    (RESULTS / "soak.json").write_text(json.dumps(report, indent=1))
    _plot(samples, RESULTS / "soak.png")
    last = samples[-1]
    print(f"soak {args.minutes:g} min, {args.sessions} sessions, {last['answers']} answers")
    for role, pct in sorted(growth.items()):
        print(
            f"  {role:<17} RSS {last['rss_kb'][role] / 1024:7.1f} MiB  growth after "
            f"{args.settle_min:g} min {pct:+.2f}%  fds {last['fds'].get(role, 0)}"
        )
    print(f"  /dev/shm: {last['shm_objects']} objects, {last['shm_bytes'] / 2**20:.1f} MiB")
    print(f"  after stop: processes {left['processes'] or 'none'}, shm {len(left['shm'])}")
    return 0
