"""Bundles shared by the model tests: written once per test session."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from voicegate.models.graphs.synth import Scripted, synth_bundle

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTED_REPLY = "Sure! The store opens at nine tomorrow, and closes at eight. Anything else?"

BundleFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    """The speech samples with their manifest (``VOICEGATE_SPEECH_DIR`` overrides)."""
    override = os.environ.get("VOICEGATE_SPEECH_DIR")
    path = Path(override) if override else REPO_ROOT.parent / "shared" / "speech"
    if not (path / "manifest.json").is_file():
        pytest.fail(f"speech samples not found at {path} (set VOICEGATE_SPEECH_DIR)")
    return path


@pytest.fixture(scope="session")
def make_bundle(tmp_path_factory: pytest.TempPathFactory) -> BundleFactory:
    """Write a bundle once per distinct set of arguments and return its directory."""
    made: dict[tuple[object, ...], Path] = {}

    def make(
        stages: Sequence[str] = ("vad", "llm"),
        *,
        seed: int = 7,
        size: str = "tiny",
        reply: str | None = None,
        transcript: str | None = None,
        tts: bool = False,
    ) -> Path:
        key = (tuple(stages), seed, size, reply, transcript, tts)
        if key not in made:
            root = tmp_path_factory.mktemp("bundle")
            synth_bundle(root, seed=seed, size=size, stages=stages,
                         scripted=Scripted(reply=reply, transcript=transcript, tts=tts))
            made[key] = root
        return made[key]

    return make


@pytest.fixture(scope="session")
def random_bundle(make_bundle: BundleFactory) -> Path:
    return make_bundle()


@pytest.fixture(scope="session")
def scripted_bundle(make_bundle: BundleFactory) -> Path:
    return make_bundle(reply=SCRIPTED_REPLY)


@pytest.fixture(scope="session")
def scripted_reply() -> str:
    return SCRIPTED_REPLY
