"""``voicegate models synth``: complete, deterministic bundles, through the CLI too."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from voicegate.models.bundle import load_bundle
from voicegate.models.graphs.synth import Scripted, stage_module, synth_bundle
from voicegate.server.cli.main import main


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_same_seed_same_bytes(tmp_path: Path, random_bundle: Path) -> None:
    again = tmp_path / "again"
    synth_bundle(again, seed=7, stages=("vad", "llm"))
    assert files(again) == files(random_bundle)
    other = tmp_path / "other"
    synth_bundle(other, seed=8, stages=("vad", "llm"))
    differ = {k for k, v in files(other).items() if files(random_bundle)[k] != v}
    assert differ == {"llm/model.onnx", "bundle.toml"}


def test_bundle_is_self_contained(random_bundle: Path, tmp_path: Path) -> None:
    bundle = load_bundle(random_bundle, require=("vad", "llm"))
    assert bundle.name == "synthetic-tiny" and bundle.seed == 7
    for stage in bundle.stages:
        for value in bundle.table(stage).values():
            if isinstance(value, str) and value.startswith(f"{stage}/"):
                assert (random_bundle / value).is_file()
    assert sum(len(v) for v in files(random_bundle).values()) < 8_000_000


def test_cli_synth_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "demo"
    args = ["models", "synth", str(target), "--stage", "vad", "--stage", "llm",
            "--scripted-reply", "Hello there."]
    assert main(args) == 0
    assert main(args) == 1
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--force", "--seed", "4"]) == 0
    assert main(["models", "check", str(target), "--stage", "llm"]) == 0
    bundle = load_bundle(target, require=("vad", "llm"))
    assert (bundle.name, bundle.seed, bundle.table("llm")["kind"]) == ("scripted-tiny", 4,
                                                                       "scripted")


def test_missing_stage_module_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "voicegate.models.tts", None)
    with pytest.raises(RuntimeError, match=r"voicegate\.models\.tts is not available"):
        stage_module("tts")
    with pytest.raises(RuntimeError, match=r"voicegate\.models\.tts is not available"):
        synth_bundle(tmp_path / "b", stages=("vad", "tts"))
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="unknown stage 'asr'"):
        stage_module("asr")


def test_scripted_reply_must_survive_tokenization(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not survive tokenization"):
        synth_bundle(tmp_path, stages=("llm",), scripted=Scripted(reply="a\u2581b"))
    with pytest.raises(ValueError, match="no scripted variant"):
        stage_module("vad").synth(tmp_path, seed=0, scripted=True)
