"""``voicegate models check``: a good bundle is described; each kind of damage gets its own
message naming the file and the tensor."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from voicegate.models.check import check_bundle, format_reports
from voicegate.models.errors import BundleError
from voicegate.server.cli.main import main

STAGES = ("vad", "llm")


@pytest.fixture
def bundle(random_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the random bundle to damage."""
    copy = tmp_path / "bundle"
    shutil.copytree(random_bundle, copy)
    return copy


def test_check_reports_every_model(random_bundle: Path) -> None:
    bundle, reports = check_bundle(random_bundle, stages=STAGES)
    assert [(r.stage, r.file.name) for r in reports] == [
        ("vad", "silero_vad.onnx"), ("llm", "model.onnx"), ("llm", "tokenizer.model")
    ]
    assert all(r.call_ms is not None and r.call_ms > 0 for r in reports[:2])
    text = format_reports(bundle, reports)
    for expected in ("input  state", "output stateN", "input  past_key_values.1.value",
                     "output present.0.key", "layers = 2", "threshold = 0.5", "one call:"):
        assert expected in text


def test_cli_check_ok(random_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "check", str(random_bundle), "--stage", "vad", "--stage", "llm"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("ok") and "[llm] llm/model.onnx" in out


def rename_input(path: Path, old: str, new: str) -> None:
    model = onnx.load(str(path))
    for value in model.graph.input:
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
    onnx.save(model, str(path))


def retype_input_ids(path: Path) -> None:
    """input_ids becomes int32, cast to int64 inside: a valid model with the wrong dtype."""
    model = onnx.load(str(path))
    graph = model.graph
    for node in graph.node:
        node.input[:] = ["input_ids_64" if n == "input_ids" else n for n in node.input]
    graph.node.insert(0, helper.make_node("Cast", ["input_ids"], ["input_ids_64"],
                                          to=TensorProto.INT64))
    for value in graph.input:
        if value.name == "input_ids":
            value.type.tensor_type.elem_type = TensorProto.INT32
    onnx.save(model, str(path))


def failure(bundle: Path) -> BundleError:
    with pytest.raises(BundleError) as caught:
        check_bundle(bundle, stages=STAGES)
    return caught.value


def test_each_damage_has_its_own_message(bundle: Path) -> None:
    model = bundle / "llm" / "model.onnx"
    saved = model.read_bytes()

    rename_input(model, "attention_mask", "attn_mask")
    renamed = failure(bundle)
    assert renamed.file == str(model) and renamed.tensor == "attention_mask"
    assert "missing input" in str(renamed) and "attn_mask" in str(renamed)

    model.write_bytes(saved)
    retype_input_ids(model)
    retyped = failure(bundle)
    assert retyped.file == str(model) and retyped.tensor == "input_ids"
    assert "wrong dtype of input" in str(retyped)
    assert "expected tensor(int64), found tensor(int32)" in str(retyped)

    model.write_bytes(saved)
    (bundle / "llm" / "tokenizer.model").unlink()
    missing = failure(bundle)
    assert missing.file == str(bundle / "llm" / "tokenizer.model")
    assert "file not found" in str(missing) and "[llm] tokenizer" in str(missing)

    messages = {str(renamed), str(retyped), str(missing)}
    assert len(messages) == 3


def test_missing_layer_value_is_named(bundle: Path) -> None:
    model = bundle / "llm" / "model.onnx"
    rename_input(model, "past_key_values.1.value", "past_values.1")
    error = failure(bundle)
    assert error.tensor == "past_key_values.1.value" and "missing input" in str(error)


def test_vad_checksum_and_cli_error(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vad = bundle / "vad" / "silero_vad.onnx"
    vad.write_bytes(vad.read_bytes() + b"\0")
    error = failure(bundle)
    assert error.file == str(vad) and "checksum mismatch" in str(error)
    assert main(["models", "check", str(bundle), "--stage", "vad"]) == 1
    assert "checksum mismatch" in capsys.readouterr().err


def test_vad_wrong_model(bundle: Path) -> None:
    shutil.copyfile(bundle / "llm" / "model.onnx", bundle / "vad" / "silero_vad.onnx")
    text = (bundle / "bundle.toml").read_text()
    (bundle / "bundle.toml").write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("sha256"))
    )
    error = failure(bundle)
    assert error.tensor == "input" and "missing input" in str(error)
