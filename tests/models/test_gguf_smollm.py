"""The default LLM imported from its GGUF file agrees with llama.cpp, an independent
implementation of the same file (tests/data/llm_reference.json, recorded by
tests/data/make_llm_reference.py): same tokens, and the same next-token choice at
>= 97% of the positions of real text and of llama.cpp's own greedy answers (float32),
the int4 graph within 2 points of the float32 graph."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from smollm import imported_bundle

from voicegate.models.llm import LlmEngine, Message
from voicegate.models.weights import SMOLLM2_135M

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "llm_reference.json"


@cache
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
    assert data["model"] == SMOLLM2_135M.path().name
    return data


@pytest.fixture(scope="session")
def fp32_bundle() -> Path:
    return imported_bundle("fp32")


@pytest.fixture(scope="session")
def int4_bundle() -> Path:
    return imported_bundle("int4")


def engine(root: Path) -> LlmEngine:
    import tomllib  # noqa: PLC0415

    table = tomllib.loads((root / "bundle.toml").read_text())["llm"]
    return LlmEngine.from_table(table, root)


def next_tokens(root: Path, ids: list[int]) -> list[int]:
    """The graph's argmax after every position, in one call."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(root / "llm" / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    kv = inputs["past_key_values.0.key"].shape
    feeds: dict[str, np.ndarray] = {
        "input_ids": np.array([ids], np.int64),
        "attention_mask": np.ones((1, len(ids)), np.int64),
        "position_ids": np.arange(len(ids), dtype=np.int64)[None],
        "logits_to_keep": np.array([len(ids)], np.int64),
    }
    for name in inputs:
        if name.startswith("past_key_values."):
            feeds[name] = np.zeros((1, kv[1], 0, kv[3]), np.float32)
    logits = session.run(["logits"], feeds)[0][0]
    return [int(i) for i in logits.argmax(axis=1)]


@cache
def agreement(root: Path) -> tuple[float, int]:
    """Share of positions where the graph picks llama.cpp's token, and their count."""
    data = reference()
    hits = total = 0
    corpus = data["corpus"]
    got = next_tokens(root, corpus["tokens"])
    hits += sum(a == b for a, b in zip(got, corpus["next"], strict=True))
    total += len(got)
    for dialogue in data["dialogues"]:
        # Teacher-forced on llama.cpp's greedy answer: each of its tokens was llama.cpp's
        # argmax after the tokens before it.
        sequence = dialogue["prompt"] + dialogue["greedy"]
        got = next_tokens(root, sequence)[len(dialogue["prompt"]) - 1 : -1]
        hits += sum(a == b for a, b in zip(got, dialogue["greedy"], strict=True))
        total += len(got)
    return hits / total, total


def test_tokenizer_and_chat_template_match_llama_cpp(int4_bundle: Path) -> None:
    data = reference()
    llm = engine(int4_bundle)
    tokens = data["corpus"]["tokens"]
    assert llm.tokenizer.encode(data["corpus"]["text"])[: len(tokens)] == tokens
    assert llm.system_prompt == data["system_prompt"]
    for dialogue in data["dialogues"]:
        assert llm.render([Message("user", dialogue["question"])]) == dialogue["prompt"]
        assert llm.tokenizer.decode(dialogue["greedy"]) == dialogue["answer"]


def test_float32_graph_agrees_with_llama_cpp(fp32_bundle: Path) -> None:
    share, positions = agreement(fp32_bundle)
    assert positions >= 500
    assert share >= 0.97, f"float32 top-1 agreement {share:.2%} over {positions} positions"


def test_int4_graph_within_two_points_of_float32(fp32_bundle: Path, int4_bundle: Path) -> None:
    fp32, _ = agreement(fp32_bundle)
    int4, positions = agreement(int4_bundle)
    assert int4 >= fp32 - 0.02, f"int4 {int4:.2%} vs float32 {fp32:.2%} ({positions})"
