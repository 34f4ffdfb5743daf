"""A real node (supervisor, the four model-backed stages, real rings) on a scripted
bundle, shared by the pipeline tests; each test plays the gateway with its own sessions."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workers"))

from pipeline_gateway import PlayingGateway
from pipeline_script import REPLY, TRANSCRIPT
from runtime_helpers import NodeProcess, group_members, wait_until

from voicegate.core.config import DEFAULT_STAGES, STAGES
from voicegate.core.wav import read_wav
from voicegate.models.graphs.synth import Scripted, synth_bundle

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def speech() -> dict[str, np.ndarray]:
    """The shipped utterances as 16 kHz PCM16, with only their speech (from the manifest)."""
    override = os.environ.get("VOICEGATE_SPEECH_DIR")
    root = Path(override) if override else REPO_ROOT.parent / "shared" / "speech"
    if not (root / "manifest.json").is_file():
        pytest.fail(f"speech samples not found at {root} (set VOICEGATE_SPEECH_DIR)")
    clips: dict[str, np.ndarray] = {}
    for item in json.loads((root / "manifest.json").read_text())["utterances"]:
        wav = read_wav(root / item["file"])
        assert wav.sample_rate == 16000
        start = int(item["speech_start_s"] * 16000)
        end = int(item["speech_end_s"] * 16000)
        clips[item["file"]] = wav.samples[start:end].copy()
    return clips


@pytest.fixture(scope="session")
def scripted_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline-bundle")
    synth_bundle(root, seed=3, scripted=Scripted(reply=REPLY, transcript=TRANSCRIPT, tts=True))
    return root


@contextmanager
def running_node(
    tmp: Path, config: Mapping[str, Mapping[str, object]], ready_timeout_s: float
) -> Iterator[NodeProcess]:
    """A node started from ``config``, ready; on exit it must stop cleanly: exit status 0,
    no process and no shared memory left."""
    node = NodeProcess(tmp, config)
    node.start()
    try:
        node.wait_ready(ready_timeout_s)
        yield node
        os.kill(node.pid, signal.SIGTERM)
        assert node.wait_exit() == 0, node.log()
        wait_until(lambda: not group_members(node.pid), "every process of the node to exit")
        assert node.leftovers() == []
    finally:
        node.kill_group()
        node.remove_leftovers()


@pytest.fixture(scope="session")
def node(
    scripted_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("pipeline-node")
    workers: dict[str, object] = {name: {"stage": DEFAULT_STAGES[name]} for name in STAGES}
    workers["stt"] = {"stage": DEFAULT_STAGES["stt"], "options": {"partial_interval_ms": 400}}
    config: dict[str, dict[str, object]] = {
        "node": {"bundle": str(scripted_bundle), "gateways": 1},
        # 20 sessions' answers at once, read by a test between its own sends.
        "rings": {"gateway_capacity": 1 << 23},
        "health": {"heartbeat_timeout_s": 20.0, "ready_timeout_s": 120.0},
        "workers": workers,
    }
    with running_node(tmp, config, 120.0) as node:
        yield node


@pytest.fixture
def gateway(node: NodeProcess) -> Iterator[PlayingGateway]:
    gw = PlayingGateway(node.config, 0)
    try:
        yield gw
    finally:
        gw.close_all()
        gw.link.close()


@pytest.fixture(scope="session")
def real_node(real_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node on the real bundle (Whisper, SmolLM2, Piper, Silero), one gateway."""
    config: dict[str, dict[str, object]] = {
        "node": {"bundle": str(real_bundle), "gateways": 1},
        "rings": {"gateway_capacity": 1 << 23},
        # Real models load slowly on a busy 2-core machine.
        "health": {"heartbeat_timeout_s": 30.0, "ready_timeout_s": 300.0},
        "workers": {name: {"stage": DEFAULT_STAGES[name]} for name in STAGES},
    }
    with running_node(tmp_path_factory.mktemp("real-node"), config, 300.0) as node:
        yield node


@pytest.fixture
def real_gateway(real_node: NodeProcess) -> Iterator[PlayingGateway]:
    gw = PlayingGateway(real_node.config, 0)
    try:
        yield gw
    finally:
        gw.close_all()
        gw.link.close()
