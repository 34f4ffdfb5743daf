"""`python -m bench e2e --peers pipecat` runs the Pipecat peer beside voicegate on the same
bundle and reports it in the same table and JSON. Only that it runs and what it reports
are checked, never how fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from voicegate.models.graphs.synth import Scripted, synth_bundle

REPO = Path(__file__).resolve().parents[2]
SPEECH = Path(os.environ.get("VOICEGATE_SPEECH_DIR") or REPO.parent / "shared" / "speech")


def test_bench_e2e_with_the_pipecat_peer(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    scripted = Scripted(reply="We open at nine.", transcript="What time does the store open?",
                        tts=True)  # fmt: skip
    synth_bundle(bundle, seed=5, scripted=scripted)
    env = dict(os.environ, VOICEGATE_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "bench", "e2e", "--spawn", "--bundle", str(bundle),
         "--sessions", "1", "--duration", "5", "--pause", "0.5", "--speech", str(SPEECH),
         "--peers", "pipecat", "--quick", "--out", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "peer pipecat at ws://127.0.0.1:" in result.stdout
    data = json.loads((tmp_path / "out" / "e2e.json").read_text())
    assert set(data["results"]) == {"voicegate", "pipecat"}
    level = data["results"]["pipecat"]["levels"][0]
    assert level["sessions"] == 1 and level["turns"] >= 1
    answered = [t for t in level["turn_records"] if t["voice_to_voice_ms"] is not None]
    assert answered and all(t["server_ms"] is not None for t in answered), level["turn_records"]
    assert all(t["speculative"] is False for t in answered)
    # The peer's one process is measured as a server, like the baselines'.
    assert [row["role"] for row in level["cpu"]].count("server") >= 1
    assert data["comparisons"]["pipecat"]["sessions"] == 1
    assert "| pipecat | 1 |" in (tmp_path / "out" / "e2e.md").read_text()


def test_bench_e2e_refuses_an_unknown_peer() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "e2e", "--peers", "livekit"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown peer 'livekit' (peers: pipecat)" in result.stderr
