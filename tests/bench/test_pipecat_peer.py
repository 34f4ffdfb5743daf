"""The Pipecat peer answers a spoken turn with the scripted bundle, through the real
``voicegate talk`` client, and stops cleanly: its process and anything it started are
gone, and it leaves nothing in /dev/shm."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bench._e2e_procs import descendants, is_running
from bench.baselines import BaselineError, start_pipecat
from voicegate.models.graphs.synth import Scripted, synth_bundle
from voicegate.server.cli.talk import ExitCode, TalkOptions, talk

ROOT = Path(__file__).resolve().parents[2]
SPEECH = Path(os.environ.get("VOICEGATE_SPEECH_DIR") or ROOT.parent / "shared" / "speech")
TRANSCRIPT = "What time does the store open?"
REPLY = "We open at nine, and close at eight. Anything else?"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipecat-bundle")
    synth_bundle(root, seed=5, scripted=Scripted(reply=REPLY, transcript=TRANSCRIPT, tts=True))
    return root


def _shm_in_use(pids: list[int]) -> set[str]:
    """/dev/shm objects the processes have open or mapped."""
    found: set[str] = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
            fds = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        for line in maps.splitlines():
            if "/dev/shm/" in line:
                found.add(line.split("/dev/shm/", 1)[1].split()[0])
        found |= {f.split("/dev/shm/", 1)[1] for f in fds if f.startswith("/dev/shm/")}
    return found


def test_pipecat_peer_answers_one_spoken_turn(bundle: Path) -> None:
    with start_pipecat(bundle) as url:
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/v1/stream")
        options = TalkOptions(SPEECH / "00_store_hours.wav", url=url, out=None, timeout_s=60)
        report = asyncio.run(talk(options))
        processes = descendants(url.pid)
        shm = _shm_in_use(processes)
    assert not any(is_running(pid) for pid in processes), "the peer outlived its context"
    assert not any((Path("/dev/shm") / name).exists() for name in shm)
    assert report.exit_code is ExitCode.OK, report.message
    assert report.transcript == TRANSCRIPT
    assert report.answer_text == REPLY
    assert report.answer_bytes > 0
    assert report.voice_to_voice_ms is not None
    done = report.response_done
    assert done is not None and done.text == REPLY
    assert done.speculative is False  # Pipecat answers once the VAD has ended the turn
    latency = done.latency_ms
    assert latency.end_of_turn_silence > 0
    assert latency.voice_to_voice == pytest.approx(
        latency.end_of_turn_silence + latency.after_end_of_turn
    )
    kinds = [event["type"] for _, event in report.events]
    expected = ["session.started", "speech.started", "speech.stopped", "transcript.final",
                "response.started", "response.text.delta", "response.audio.started",
                "response.done"]  # fmt: skip
    assert [k for k in kinds if k in expected and k != "response.text.delta"] == [
        k for k in expected if k != "response.text.delta"
    ]
    assert "response.text.delta" in kinds


def test_pipecat_peer_refuses_a_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match="not a directory"), start_pipecat(tmp_path / "no"):
        pass
