"""`python -m bench e2e --spawn --bundle real` runs end to end and reports: a small run
against a spawned node with the real stages on the real bundle (Whisper, SmolLM2, Piper).
Only that it runs and what it reports are checked, never how fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _speech_dir() -> Path:
    override = os.environ.get("VOICEGATE_SPEECH_DIR")
    return Path(override) if override else REPO.parent / "shared" / "speech"


def test_bench_e2e_smoke_on_the_real_bundle(tmp_path: Path, real_bundle: Path) -> None:
    speech = _speech_dir()
    assert (speech / "manifest.json").is_file(), f"no speech samples at {speech}"
    # The cache the real bundle was built into: `--bundle real` finds it there.
    env = dict(os.environ, VOICEGATE_CACHE=str(real_bundle.parent), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "bench", "e2e", "--spawn", "--bundle", "real", "--sessions", "2",
         "--duration", "6", "--pause", "0.5", "--timeout", "30", "--speech", str(speech),
         "--quick", "--out", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "v2v p95 ms" in result.stdout
    data = json.loads((tmp_path / "out" / "e2e.json").read_text())
    assert data["bundle"] == {"name": "real", "path": str(real_bundle)}
    level = data["results"]["voicegate"]["levels"][0]
    assert level["sessions"] == 2
    assert level["turns"] >= 2
    answered = [t for t in level["turn_records"] if t["voice_to_voice_ms"] is not None]
    assert answered, level["turn_records"]
    assert all(t["server_ms"] is not None for t in answered)
    for q in ("p50", "p95", "p99"):
        assert level["v2v_ms"][q] > 0
    roles = {row["role"] for row in level["cpu"]}
    assert roles == {"server", "client"}
    assert any("voicegate: stt" in row["name"] for row in level["cpu"])
    assert level["cpu_pct_server_per_session"] > 0
    assert "| voicegate | 2 |" in (tmp_path / "out" / "e2e.md").read_text()
