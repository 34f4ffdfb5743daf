"""``voicegate models import whisper``: CTranslate2 Whisper directories of any size and
dtype into the STT stage, written by ``ct2_files`` in CTranslate2's binary format;
damaged files get a message naming the file and the variable."""

from __future__ import annotations

import shutil
from pathlib import Path

import ct2_files
import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicegate.models import melspec, stt
from voicegate.models.bundle import load_bundle
from voicegate.models.errors import BundleError
from voicegate.models.graphs import stt as stt_graph
from voicegate.models.graphs.builder import make_model
from voicegate.models.importers import ct2
from voicegate.models.importers.whisper import import_whisper
from voicegate.models.runtime import ExecutionConfig
from voicegate.server.cli.main import main

DIMS = stt_graph.WhisperDims(vocab_size=1024)
# large-v3's 128 mel bins and an odd shape everywhere else
WIDE = stt_graph.WhisperDims(n_mels=128, d_model=48, n_heads=3, encoder_layers=3,
                             decoder_layers=1, ffn_dim=96, vocab_size=1100)


@pytest.fixture(scope="module")
def ct2_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, stt_graph.Weights]:
    src = tmp_path_factory.mktemp("ct2") / "whisper-test"
    return src, ct2_files.write_whisper_dir(src, DIMS)


def run_graph(graph: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    model = make_model(graph, producer="test")  # type: ignore[arg-type]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)  # type: ignore[no-any-return]


def features(frames: int, n_mels: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((2, n_mels, frames)).astype(np.float32)


def test_reader_round_trips_every_dtype(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((6, 5)).astype(np.float32)
    variables = {
        "a/weight": weight,
        "b/half": weight.astype(np.float16),
        "c/bf16": (weight.view(np.uint32) >> 16).astype(np.uint16),
        "d/heads": np.array(6, dtype=np.int16),
        **ct2_files.quantize_int8({"e/weight": weight}),
    }
    path = tmp_path / "model.bin"
    path.write_bytes(ct2_files.model_bytes(variables, aliases={"alias": "a/weight"},
                                           spec="TestSpec", revision=7))
    model = ct2.read_model(tmp_path)
    assert (model.version, model.spec, model.revision) == (6, "TestSpec", 7)
    np.testing.assert_array_equal(model.float32("alias", (6, 5)), weight)
    np.testing.assert_array_equal(model.float32("b/half"), weight.astype(np.float16))
    np.testing.assert_allclose(model.float32("c/bf16"), weight, rtol=1e-2)
    assert model.scalar("d/heads") == 6
    step = np.abs(weight).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(model.float32("e/weight") - weight) <= step / 2 + 1e-7)
    with pytest.raises(BundleError, match=r"model\.bin.*wrong shape.*'a/weight'"):
        model.float32("a/weight", (5, 6))
    with pytest.raises(BundleError, match=r"model\.bin.*missing variable.*'nope'"):
        model.float32("nope")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=400), flips=st.lists(
    st.tuples(st.integers(min_value=0, max_value=399), st.integers(min_value=1, max_value=255)),
    max_size=4))
def test_reader_damaged_bytes_give_bundle_errors(cut: int, flips: list[tuple[int, int]]) -> None:
    variables = {"x/w": np.arange(12, dtype=np.float32).reshape(3, 4),
                 "x/h": np.array(2, dtype=np.int16)}
    data = bytearray(ct2_files.model_bytes(variables, aliases={"y": "x/w"}))
    for at, value in flips:
        if at < len(data):
            data[at] ^= value
    damaged = bytes(data[: len(data) - cut])
    try:
        model = ct2.parse_model(damaged, Path("m/model.bin"))
    except BundleError as exc:
        assert str(exc).startswith("m/model.bin: ")
    else:
        for name in model.variables:
            assert model.raw(name).size >= 0


@pytest.mark.parametrize("window", ["30s", "utterance"])
def test_imported_graphs_compute_what_the_weights_say(
    ct2_dir: tuple[Path, stt_graph.Weights], tmp_path: Path, window: str
) -> None:
    """The import (fused projections split, weights transposed) computes what graphs
    built from the same weights compute; the utterance encoder on a full window is the
    30 s encoder, and on a cut one runs the same decoder."""
    src, weights = ct2_dir
    table = import_whisper(src, tmp_path, window=window)
    assert table["window"] == window and table["mel_padding"] == "zeros"
    model = stt.load_model(table, tmp_path, ExecutionConfig())
    feats = features(melspec.N_FRAMES)
    reference = run_graph(stt_graph.build_encoder(DIMS, weights), {"input_features": feats})[0]
    hidden = model.encode(feats)
    np.testing.assert_allclose(hidden, reference, atol=1e-4)
    ref_decoder = make_model(stt_graph.build_decoder(DIMS, weights), producer="test")
    ref_session = ort.InferenceSession(ref_decoder.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
    logits, _ = model.decode_start(hidden)
    feeds = {"input_ids": np.tile(np.asarray(model.prompt, np.int64), (2, 1)),
             "encoder_hidden_states": hidden, "use_cache_branch": np.zeros(1, bool),
             **model._empty_past(2)}
    np.testing.assert_allclose(logits, ref_session.run(["logits"], feeds)[0][:, -1], atol=1e-4)
    if window == "utterance":
        cut = model.encode(features(400))
        assert cut.shape == (2, 200, DIMS.d_model)
        assert len(model.generate(cut)) == 2
        assert model.features([np.ones(16000, np.float32)]).shape == (1, 80, 200)


def test_float16_and_int8_models_convert(tmp_path: Path) -> None:
    for dtype in ("float16", "int8"):
        src = tmp_path / dtype
        weights = ct2_files.write_whisper_dir(src, DIMS, dtype=dtype)
        table = import_whisper(src, tmp_path / f"out-{dtype}", window="30s")
        model = stt.load_model(table, tmp_path / f"out-{dtype}", ExecutionConfig())
        feats = features(melspec.N_FRAMES)[:1]
        reference = run_graph(stt_graph.build_encoder(DIMS, weights),
                              {"input_features": feats})[0]
        tolerance = 1e-4 if dtype == "float16" else 0.15  # int8: rounding of every weight
        np.testing.assert_allclose(model.encode(feats), reference, atol=tolerance)


def test_cli_imports_any_size_and_check_validates_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "wide"
    ct2_files.write_whisper_dir(src, WIDE, dtype="float16")
    out = tmp_path / "bundle"
    assert main(["models", "import", "whisper", str(src), str(out)]) == 0
    assert main(["models", "check", str(out), "--stage", "stt"]) == 0
    text = capsys.readouterr().out
    assert "n_mels = 128" in text and "layers = 1" in text and "window = utterance" in text
    table = load_bundle(out, require=("stt",)).table("stt")
    model = stt.load_model(table, out, ExecutionConfig())
    assert (model.n_mels, model.n_heads, model.head_dim) == (128, 3, 16)
    # re-importing is deterministic, file for file
    first = {p.name: p.read_bytes() for p in (out / "stt").iterdir()}
    assert main(["models", "import", "whisper", str(src), str(out), "--window", "utterance"]) == 0
    assert first == {p.name: p.read_bytes() for p in (out / "stt").iterdir()}


def _variables() -> ct2_files.Variables:
    weights = stt_graph.random_weights(DIMS, np.random.default_rng(0))
    return ct2_files.whisper_variables(DIMS, weights)


def _damage(src: Path, kind: str) -> str:
    """Damage the model directory ``src``; return what the message must name."""
    model = src / "model.bin"
    variables = _variables()
    if kind == "truncated":
        data = model.read_bytes()
        model.write_bytes(data[: len(data) // 2])
        return "truncated"
    if kind == "version":
        model.write_bytes(ct2_files.model_bytes(variables, version=99))
        return "binary version"
    if kind == "spec":
        model.write_bytes(ct2_files.model_bytes(variables, spec="TransformerSpec"))
        return "TransformerSpec"
    if kind == "shape":
        variables["encoder/layer_1/ffn/linear_1/bias"] = np.zeros(7, np.float32)
        model.write_bytes(ct2_files.model_bytes(variables))
        return "'encoder/layer_1/ffn/linear_1/bias'"
    if kind == "missing":
        del variables["decoder/layer_norm/gamma"]
        model.write_bytes(ct2_files.model_bytes(variables))
        return "'decoder/layer_norm/gamma'"
    if kind == "dtype":
        model.write_bytes(ct2_files.model_bytes(
            variables, dtype_of={"encoder/conv2/bias": "float8"}))
        return "'encoder/conv2/bias'"
    if kind == "unscaled_int8":
        quantized = ct2_files.quantize_int8(variables)
        del quantized["encoder/layer_0/ffn/linear_0/weight_scale"]
        model.write_bytes(ct2_files.model_bytes(quantized))
        return "'encoder/layer_0/ffn/linear_0/weight'"
    if kind == "tokenizer":
        (src / "tokenizer.json").unlink()
        return "tokenizer.json"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated", "version", "spec", "shape", "missing", "dtype",
                                  "unscaled_int8", "tokenizer"])
def test_bad_model_files_exit_non_zero_naming_file_and_variable(
    ct2_dir: tuple[Path, stt_graph.Weights], tmp_path: Path, kind: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "src"
    shutil.copytree(ct2_dir[0], src)
    named = _damage(src, kind)
    assert main(["models", "import", "whisper", str(src), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert named in err
    assert str(src / ("tokenizer.json" if kind == "tokenizer" else "model.bin")) in err


def test_check_rejects_damaged_import_naming_the_file(
    ct2_dir: tuple[Path, stt_graph.Weights], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    assert main(["models", "import", "whisper", str(ct2_dir[0]), str(out),
                 "--window", "30s"]) == 0
    toml = out / "bundle.toml"
    # the 30 s encoder takes a fixed 3000 frames: it cannot serve the utterance window
    toml.write_text(toml.read_text().replace('window = "30s"', 'window = "utterance"'))
    assert main(["models", "check", str(out), "--stage", "stt"]) == 1
    err = capsys.readouterr().err
    assert "encoder_model.onnx" in err and "input_features" in err
    toml.write_text(toml.read_text().replace('window = "utterance"', 'window = "1m"'))
    assert main(["models", "check", str(out), "--stage", "stt"]) == 1
    assert "[stt] window" in capsys.readouterr().err
    toml.write_text(toml.read_text().replace('window = "1m"', 'window = "30s"'))
    (out / "stt" / "tokenizer.json").unlink()
    assert main(["models", "check", str(out), "--stage", "stt"]) == 1
    assert "tokenizer.json" in capsys.readouterr().err


def test_frames_follow_the_utterance(ct2_dir: tuple[Path, stt_graph.Weights],
                                     tmp_path: Path) -> None:
    table = import_whisper(ct2_dir[0], tmp_path)
    model = stt.load_model(table, tmp_path, ExecutionConfig())
    second = melspec.SAMPLE_RATE
    # audio frames + 100 frames of padding, rounded up to 100
    assert [model.frames_for(n) for n in (0, second, 3 * second - 1, 29 * second)] == [
        100, 200, 400, 3000]
    wide = stt.load_model({**table, "frame_step": 50, "frame_margin": 0}, tmp_path,
                          ExecutionConfig())
    assert wide.frames_for(second) == 100
    assert stt.load_model({**table, "window": "30s"}, tmp_path,
                          ExecutionConfig()).frames_for(second) == melspec.N_FRAMES
