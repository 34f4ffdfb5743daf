"""The bundles known by name: 'synthetic' generated once, 'real' assembled once from the
installed weight packages (atomic, keyed), what `voicegate models build-default` and
`voicegate serve --bundle` make of a name."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voicegate.models import named_bundles
from voicegate.models.bundle import STAGES, load_bundle
from voicegate.models.errors import BundleError
from voicegate.models.tts import VoiceConfig
from voicegate.models.weights import PIPER_JOE_MEDIUM

REPO = Path(__file__).resolve().parents[2]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_synthetic_is_generated_once_into_the_cache(tmp_path: Path) -> None:
    first = named_bundles.synthetic_bundle(tmp_path)
    stamp = (first / "bundle.toml").stat().st_mtime_ns
    assert named_bundles.synthetic_bundle(tmp_path) == first
    assert (first / "bundle.toml").stat().st_mtime_ns == stamp
    bundle = load_bundle(first)
    assert bundle.name == named_bundles.SYNTHETIC and bundle.stages == STAGES
    # Nothing of the build is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        first.name
    ]


def test_resolve_names_directories_and_refuses_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICEGATE_CACHE", str(tmp_path / "cache"))
    assert named_bundles.cache_root() == tmp_path / "cache"
    synthetic = named_bundles.resolve("synthetic")
    assert synthetic == tmp_path / "cache" / "bundle-synthetic"
    assert named_bundles.resolve(str(synthetic)) == synthetic
    with pytest.raises(BundleError, match="real, synthetic"):
        named_bundles.resolve(tmp_path / "nowhere")


def test_a_failed_build_leaves_nothing_and_a_later_one_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "bundle-x"

    def broken(tmp: Path) -> None:
        (tmp / "half-written").write_text("x")
        raise RuntimeError("converter failed")

    with pytest.raises(RuntimeError, match="converter failed"):
        named_bundles._build_once(target, broken)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".bundle-x.lock"]

    def whole(tmp: Path) -> None:
        (tmp / "bundle.toml").write_text("")

    assert named_bundles._build_once(target, whole) == target
    assert (target / "bundle.toml").is_file()
    # Built: a second call does not run the build.
    assert named_bundles._build_once(target, broken) == target


def test_progress_bar_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    bar = named_bundles.ProgressBar(2, out)
    bar.start("first")
    bar.start("second")
    bar.done()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("[" + "-" * 24 + "] 0/2") and lines[0].endswith("first")
    assert lines[1].startswith("[" + "#" * 12 + "-" * 12 + "] 1/2")
    assert lines[2].startswith("[" + "#" * 24 + "] 2/2") and lines[2].endswith("done")


def test_real_bundle_holds_every_stage_and_the_voice_as_it_is(real_bundle: Path) -> None:
    bundle = load_bundle(real_bundle)
    assert bundle.name == named_bundles.REAL and bundle.stages == STAGES
    assert real_bundle.name == f"bundle-real-{named_bundles.real_bundle_key()}"
    voice = PIPER_JOE_MEDIUM.path()
    tts = bundle.table("tts")
    assert _sha256(real_bundle / tts["model"]) == _sha256(voice)
    config = real_bundle / tts["config"]
    assert config.read_bytes() == voice.with_name(voice.name + ".json").read_bytes()
    assert VoiceConfig.load(config).sample_rate == 22050


def test_build_default_finds_the_built_bundle(real_bundle: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "voicegate", "models", "build-default", "--cache",
         str(real_bundle.parent)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(real_bundle)
    assert result.stderr == ""  # nothing was built, so no progress bar
