"""The baseline servers answer a spoken turn end to end with the scripted bundle, each in
its own subprocess, driven by the real ``voicegate talk`` client; and a smoke run of
``python -m bench gateway --quick``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from bench.baselines import ServerURL, start_sequential, start_single_process
from voicegate.models.graphs.synth import Scripted, synth_bundle
from voicegate.server.cli.talk import ExitCode, TalkOptions, talk

ROOT = Path(__file__).resolve().parents[2]
SPEECH = Path(os.environ.get("VOICEGATE_SPEECH_DIR") or ROOT.parent / "shared" / "speech")
TRANSCRIPT = "What time does the store open?"  # one scripted token per 160 ms of its audio
REPLY = "We open at nine, and close at eight. Anything else?"

Starter = Callable[[Path], AbstractContextManager[ServerURL]]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("baseline-bundle")
    synth_bundle(root, seed=5, scripted=Scripted(reply=REPLY, transcript=TRANSCRIPT, tts=True))
    return root


@pytest.mark.parametrize(
    ("start", "speculative"),
    [(start_sequential, False), (start_single_process, True)],
    ids=["sequential", "single_process"],
)
def test_baseline_answers_one_spoken_turn(
    bundle: Path, start: Starter, speculative: bool
) -> None:
    with start(bundle) as url:
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/v1/stream")
        assert Path(f"/proc/{url.pid}").exists()
        options = TalkOptions(SPEECH / "00_store_hours.wav", url=url, out=None, timeout_s=60)
        report = asyncio.run(talk(options))
        pid = url.pid
    assert not Path(f"/proc/{pid}").exists(), "the server outlived its context"
    assert report.exit_code is ExitCode.OK, report.message
    assert report.transcript == TRANSCRIPT
    assert report.answer_text == REPLY
    assert report.answer_bytes > 0
    assert report.voice_to_voice_ms is not None
    done = report.response_done
    assert done is not None and done.text == REPLY
    # The request-response design never starts before the end of the turn; the
    # single-process one runs voicegate's speculation unchanged.
    assert done.speculative is speculative
    kinds = [event["type"] for _, event in report.events]
    for kind in ("session.started", "speech.started", "speech.stopped", "transcript.final",
                 "response.text.delta", "response.done"):
        assert kind in kinds


def test_bench_gateway_quick(tmp_path: Path) -> None:
    before = _node_objects()
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "gateway", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "gateway / echo sessions held" in proc.stdout
    result = json.loads((tmp_path / "gateway.json").read_text())
    assert set(result["sessions_held"]) == {"echo", "voicegate"}
    for steps in result["steps"].values():
        assert [s["sessions"] for s in steps] == [2, 4]
        # Every frame of the measured window came back through the server.
        assert all(s["errors"] == 0 and s["frames_back"] == s["frames_sent"] > 0 for s in steps)
    assert (tmp_path / "gateway.md").read_text().startswith("| server")
    for chart in result["charts"]:
        assert (tmp_path / chart).stat().st_size > 0
    assert not _node_objects() - before, "the bench left shared memory behind"


def _node_objects() -> set[str]:
    return {e for e in os.listdir("/dev/shm") if e.startswith(("vg-bgw", "sem.vg-bgw"))}


def test_baseline_refuses_a_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not a directory"), start_sequential(tmp_path / "no"):
        pass
