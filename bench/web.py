"""The talk page's voice-to-voice against `voicegate talk`'s, same file, same node, one run.

    python -m bench web [--file WAV] [--repeats 3] [--out bench/results/web.json]

Starts `voicegate serve` on loopback (the page is on there by default), then for each
repeat streams the file once with `voicegate talk --json` and once through the page in
Chromium (the file as its fake microphone, with a long silence after it), alternating
which goes first. Each figure is the client's own: `talk` from the frame holding the end
of speech (the manifest's) being sent to the first answer audio received; the page from
its own end of speech (the last frame loud enough to be speech, else the node's
audio_end_ms) to the first answer audio received, and to that audio played (jitter
buffer and audio output included). The node's own figure for the same turn is beside
each. Writes the table as JSON and a screenshot of the page after its first turn.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

from bench._browser import (
    answered_turn,
    chromium,
    find_browser,
    speech_dir,
    wait_for,
    write_mic_wav,
)
from bench._e2e_procs import spawn_node
from voicegate.models import named_bundles

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _talk(url: str, wav: Path, out: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "voicegate", "talk", str(wav), "--json", "--url", url,
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    report: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.strip() else {}
    if proc.returncode != 0:
        raise RuntimeError(f"voicegate talk exited {proc.returncode}: {proc.stderr.strip()}")
    latency = report.get("server_latency_ms") or {}
    return {
        "v2v_ms": report["voice_to_voice_ms"],
        "speech_end_source": report["speech_end_source"],
        "node_v2v_ms": latency.get("voice_to_voice"),
    }


def _page(base: str, mic: Path, screenshot: Path | None) -> dict[str, Any]:
    browser = find_browser()
    if browser is None:
        raise RuntimeError("chromium and chromedriver are not installed")
    with chromium(browser, mic) as driver:
        driver.get(base + "/talk")
        wait_for(driver, lambda s: bool(s.get("ready")), 30, "the page's script")
        driver.find_element("id", "connect").click()
        stats = wait_for(
            driver,
            lambda s: answered_turn(s).get("playback") == "done" and "segments" in answered_turn(s),
            120,
            "the answer played",
        )
        if screenshot is not None:
            driver.save_screenshot(str(screenshot))
        turn = answered_turn(stats)
        return {
            "v2v_received_ms": turn["v2vReceivedMs"],
            "v2v_played_ms": turn["v2vPlayedMs"],
            "speech_end_source": turn["speechEndSource"],
            # where the page put the end of speech against the node's audio_end_ms
            "speech_end_vs_node_ms": turn["speechEndMs"] - turn["audioEndMs"],
            "node_v2v_ms": turn["latency"]["voice_to_voice"],
            "turn": turn["turn"],
        }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench web", description=__doc__)
    parser.add_argument("--file", type=Path, default=speech_dir() / "00_store_hours.wav")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bundle", default="real",
                        help="'real' (default), 'synthetic' or a bundle directory")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "web.json")
    parser.add_argument("--screenshot", type=Path, default=RESULTS / "web_talk_page.png")
    args = parser.parse_args(argv)
    if find_browser() is None:
        print("bench web: chromium and chromedriver are not installed", file=sys.stderr)
        return 1
    with wave.open(str(args.file)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp_name:
        tmp = Path(tmp_name)
        mic = tmp / "mic.wav"
        # The file as talk streams it, then silence: Chromium loops its fake microphone.
        write_mic_wav(mic, [pcm])
        node = f"benchweb{os.getpid() % 100000}"
        bundle = named_bundles.resolve(args.bundle, progress=sys.stderr)
        with spawn_node(bundle, (), node, tmp / "node.log") as (url, _):
            base = url.replace("ws://", "http://").removesuffix("/v1/stream")
            for i in range(args.repeats):
                order = ("talk", "page") if i % 2 == 0 else ("page", "talk")
                row: dict[str, Any] = {"repeat": i + 1}
                for who in order:
                    if who == "talk":
                        row["talk"] = _talk(url, args.file, tmp / "answer.wav")
                    else:
                        shot = args.screenshot if i == 0 else None
                        row["page"] = _page(base, mic, shot)
                rows.append(row)
                print(_line(row), flush=True)
    summary = {
        "file": str(args.file),
        "rows": rows,
        "median_talk_v2v_ms": statistics.median(r["talk"]["v2v_ms"] for r in rows),
        "median_page_v2v_received_ms": statistics.median(
            r["page"]["v2v_received_ms"] for r in rows
        ),
        "median_page_v2v_played_ms": statistics.median(r["page"]["v2v_played_ms"] for r in rows),
        "screenshot": str(args.screenshot),
    }
    print(
        f"median  talk {summary['median_talk_v2v_ms']:.1f} ms | page received "
        f"{summary['median_page_v2v_received_ms']:.1f} ms, played "
        f"{summary['median_page_v2v_played_ms']:.1f} ms"
    )
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.out} and {args.screenshot}")
    return 0


def _line(row: dict[str, Any]) -> str:
    t, p = row["talk"], row["page"]
    return (
        f"run {row['repeat']}: talk v2v {t['v2v_ms']:.1f} ms (node {t['node_v2v_ms']:.1f}) | "
        f"page v2v received {p['v2v_received_ms']:.1f} ms, played {p['v2v_played_ms']:.1f} ms "
        f"(node {p['node_v2v_ms']:.1f}; end of speech by {p['speech_end_source']}, "
        f"{p['speech_end_vs_node_ms']:+.0f} ms from the node's)"
    )
