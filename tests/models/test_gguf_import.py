"""``voicegate models import gguf``: small GGUF files written with gguf's own writer,
imported and checked against a numpy forward pass of the same weights; bad files get a
message naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from gguf import GGMLQuantizationType as Q
from gguf_files import TinyLlama

from voicegate.models.errors import BundleError
from voicegate.models.importers.gguf_llm import import_gguf
from voicegate.models.llm import LlmEngine, Message, Sampling
from voicegate.server.cli.main import main

IDS = [1, 40, 72, 69, 263, 3, 76, 80, 12, 99, 261, 50, 2, 7, 33, 41]


def run_graph(model: Path, ids: list[int], layers: int, kv_heads: int, head_dim: int
              ) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    past = np.zeros((1, kv_heads, 0, head_dim), np.float32)
    feeds = {
        "input_ids": np.array([ids], np.int64),
        "attention_mask": np.ones((1, len(ids)), np.int64),
        "position_ids": np.arange(len(ids))[None].astype(np.int64),
        "logits_to_keep": np.array([len(ids)], np.int64),
    }
    for i in range(layers):
        feeds[f"past_key_values.{i}.key"] = past
        feeds[f"past_key_values.{i}.value"] = past
    logits: np.ndarray = session.run(["logits"], feeds)[0][0]
    return logits


@pytest.mark.parametrize(("arch", "tied"), [("llama", True), ("qwen2", False)])
def test_float32_graph_matches_the_reference_forward(tmp_path: Path, arch: str,
                                                     tied: bool) -> None:
    tiny = TinyLlama(arch=arch, tied=tied, seed=3)
    table = import_gguf(tiny.write(tmp_path / "tiny.gguf"), tmp_path, weights="fp32")
    assert table["architecture"] == arch
    got = run_graph(tmp_path / table["model"], IDS, tiny.layers, tiny.kv_heads, tiny.head_dim)
    want = tiny.forward(IDS)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_every_tensor_type_imports_as_the_file_holds_it(tmp_path: Path) -> None:
    types = {"attn_q.weight": Q.F16, "attn_k.weight": Q.BF16, "attn_v.weight": Q.Q8_0,
             "attn_output.weight": Q.Q4_0, "ffn_gate.weight": Q.Q4_1,
             "ffn_up.weight": Q.Q4_K, "ffn_down.weight": Q.Q6_K, "token_embd.weight": Q.Q8_0}
    tiny = TinyLlama(types=types, seed=5)
    file = tiny.write(tmp_path / "types.gguf")
    want = tiny.forward(IDS)
    fp32 = import_gguf(file, tmp_path / "fp32", weights="fp32")
    got = run_graph(tmp_path / "fp32" / fp32["model"], IDS, 2, 2, 64)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    # int4: 4-bit sources come through exactly, the others are requantized in blocks
    # of 32; the logits stay close.
    int4 = import_gguf(file, tmp_path / "int4")
    got4 = run_graph(tmp_path / "int4" / int4["model"], IDS, 2, 2, 64)
    assert np.corrcoef(got4.ravel(), want.ravel())[0, 1] > 0.97
    size = lambda root: (root / "llm" / "model.onnx").stat().st_size  # noqa: E731
    assert size(tmp_path / "int4") < 0.5 * size(tmp_path / "fp32")


def test_engine_on_an_imported_model_decodes_as_the_reference(tmp_path: Path) -> None:
    """KV cache, grouped-query attention and batching through the engine: its greedy
    tokens are the reference forward's argmax, step by step."""
    tiny = TinyLlama(arch="qwen2", seed=11)
    table = import_gguf(tiny.write(tmp_path / "q.gguf"), tmp_path, weights="fp32")
    engine = LlmEngine.from_table(table, tmp_path)
    # A chat prompt renders through the file's template, markers as special tokens.
    prompt = engine.render([Message("user", "the thin <|im_end|>")])
    start, end = engine.tokenizer.piece_id("<|im_start|>"), engine.tokenizer.piece_id(
        "<|im_end|>")
    assert prompt[0] == start and prompt.count(end) == 2  # system's and user's, not text's
    for sid in (0, 1):
        engine.open_session(sid)
    engine.start(0, [Message("user", "the thin")], Sampling(max_tokens=12))
    engine.start(1, [Message("user", "in a hat")], Sampling(max_tokens=9))
    while engine.running:
        engine.step()
    assert engine.counters.decode_tokens > engine.counters.decode_calls  # batched
    for sid, text in ((0, "the thin"), (1, "in a hat")):
        ids = engine.render([Message("user", text)])
        sequence = engine.cached_tokens(sid)
        assert sequence[: len(ids)] == ids
        generated = sequence[len(ids):]
        assert generated
        logits = tiny.forward(sequence)
        expected = [int(i) for i in logits[len(ids) - 1 : -1].argmax(axis=1)]
        assert generated == expected[: len(generated)]


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(argv)
    return status, capsys.readouterr().err


def test_cli_imports_into_a_bundle_that_checks(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    file = TinyLlama().write(tmp_path / "tiny.gguf")
    out = tmp_path / "bundle"
    assert main(["models", "import", "gguf", str(file), str(out), "--weights", "int4"]) == 0
    assert "[llm]" in capsys.readouterr().out
    assert main(["models", "check", str(out), "--stage", "llm"]) == 0
    assert "layers = 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("magic", "magic"),
        ("truncated", "truncated"),
        ("arch", "'gptneox'"),
        ("type", "Q5_0"),
        ("tokenizer.ggml.merges", "tokenizer.ggml.merges"),
        ("tokenizer.ggml.tokens", "tokenizer.ggml.tokens"),
        ("tokenizer.chat_template", "tokenizer.chat_template"),
        ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eos_token_id"),
        ("block_count", "llama.block_count"),
    ],
)
def test_bad_files_are_refused_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, named: str
) -> None:
    file = tmp_path / "bad.gguf"
    tiny = TinyLlama(layers=1, types={"ffn_up.weight": Q.Q5_0} if damage == "type" else {})
    if damage in ("magic", "truncated"):
        tiny.write(file)
        data = file.read_bytes()
        file.write_bytes(b"GGUX" + data[4:] if damage == "magic" else data[: len(data) // 3])
    elif damage == "arch":
        tiny.write(file, arch_name="gptneox")
    else:
        tiny.write(file, skip_keys=(damage,))
    with pytest.raises(BundleError) as exc:
        import_gguf(file, tmp_path / "out")
    assert str(file) in str(exc.value) and named in str(exc.value)
    status, err = _cli(["models", "import", "gguf", str(file), str(tmp_path / "out")], capsys)
    assert status == 1 and str(file) in err and named in err
    assert "Traceback" not in err
