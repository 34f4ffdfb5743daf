"""ONNX graphs in the layout optimum exports for decoder-only models.

Inputs: ``input_ids`` [B, S], ``attention_mask`` [B, P+S], ``position_ids`` [B, S] and
``past_key_values.{i}.key/value`` [B, H, P, D]; outputs: ``logits`` [B, S, V] and
``present.{i}.key/value`` [B, H, P+S, D] (the past with the new positions appended).

Two models are built in that layout:

- ``build_random_llm``: a small Llama-style transformer (RMSNorm, rotary positions,
  causal attention with the attention mask, SiLU-gated MLP) with seeded random weights.
- ``build_scripted_llm``: a model whose logits spell a fixed reply. What it writes into
  the KV cache is the position of each assistant-start marker (values) and of every
  token (keys); at each step it finds the last marker it is allowed to attend to and
  predicts reply token number ``position - marker_position``. A cache that is truncated,
  shifted, mixed up between sessions or badly masked therefore changes the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from voicegate.models.graphs.builder import (
    GraphBuilder,
    attention,
    make_model,
    merge_heads,
    split_heads,
)

PRODUCER = "voicegate.models.graphs.synth"
MASKED = -1.0e9  # additive bias of masked positions: finite, so no row is all -inf


@dataclass(frozen=True)
class LlmDims:
    vocab: int
    hidden: int
    layers: int
    heads: int
    head_dim: int
    ffn: int

    def __post_init__(self) -> None:
        for name in ("vocab", "hidden", "layers", "heads", "head_dim", "ffn"):
            if getattr(self, name) < 1:
                raise ValueError(f"LLM dimension {name} must be >= 1")
        if self.head_dim % 2:
            raise ValueError("LLM head_dim must be even for rotary positions")


# Dimensions without the vocabulary, which comes from the tokenizer.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden": 64, "layers": 2, "heads": 4, "head_dim": 16, "ffn": 128},
    # About 25M parameters: realistic cost per token on a GPU box.
    "base": {"hidden": 512, "layers": 8, "heads": 8, "head_dim": 64, "ffn": 1408},
}

_B, _S, _P = "batch_size", "sequence_length", "past_sequence_length"
_T = "past_sequence_length + sequence_length"


def _declare_io(g: GraphBuilder, layers: int, heads: int, head_dim: int, vocab: int) -> None:
    g.input("input_ids", "int64", [_B, _S])
    g.input("attention_mask", "int64", [_B, _T])
    g.input("position_ids", "int64", [_B, _S])
    for i in range(layers):
        for kind in ("key", "value"):
            g.input(f"past_key_values.{i}.{kind}", "float32", [_B, heads, _P, head_dim])
    # Every output is written under its own name (``out=``), so no Identity is needed.
    g.output("logits", "logits", "float32", [_B, _S, vocab])
    for i in range(layers):
        for kind in ("key", "value"):
            name = f"present.{i}.{kind}"
            g.output(name, name, "float32", [_B, heads, _T, head_dim])


def _dim(g: GraphBuilder, tensor: str, axis: int) -> str:
    """A scalar int64 holding one dimension of a tensor."""
    one = g.op("Shape", tensor, start=axis, end=axis + 1)
    return g.op("Squeeze", one, g.const([0], "axis0", np.int64))


def _allowed_mask(g: GraphBuilder) -> str:
    """Bool [B, 1, S, T]: query s (absolute column P+s) may attend key column t."""
    zero = g.const(0, "zero", np.int64)
    one = g.const(1, "one", np.int64)
    past_len = _dim(g, "past_key_values.0.key", 2)
    new_len = _dim(g, "input_ids", 1)
    total = _dim(g, "attention_mask", 1)
    key_col = g.op("Range", zero, total, one)
    query_col = g.op("Add", g.op("Range", zero, new_len, one), past_len)
    causal = g.op(
        "LessOrEqual",
        g.op("Unsqueeze", key_col, g.const([0], "axis0", np.int64)),
        g.op("Unsqueeze", query_col, g.const([1], "axis1", np.int64)),
    )  # [S, T]
    attend = g.op("Cast", "attention_mask", to=TensorProto.BOOL)
    attend = g.op("Unsqueeze", attend, g.const([1, 2], "axes12", np.int64))  # [B, 1, 1, T]
    return g.op("And", causal, attend)


def _rms_norm(g: GraphBuilder, x: str, hidden: int) -> str:
    mean_sq = g.op("ReduceMean", g.op("Mul", x, x), axes=[-1], keepdims=1)
    rms = g.op("Sqrt", g.op("Add", mean_sq, g.const(np.float32(1e-5), "eps")))
    return g.op("Mul", g.op("Div", x, rms), g.const(np.ones(hidden, np.float32), "norm"))


def _rotary(g: GraphBuilder, x: str, cos: str, sin: str, head_dim: int) -> str:
    half = head_dim // 2
    axis = g.const([3], "axis3", np.int64)
    first = g.op("Slice", x, g.const([0], "s", np.int64), g.const([half], "e", np.int64), axis)
    second = g.op(
        "Slice", x, g.const([half], "s", np.int64), g.const([head_dim], "e", np.int64), axis
    )
    rotated_first = g.op("Sub", g.op("Mul", first, cos), g.op("Mul", second, sin))
    rotated_second = g.op("Add", g.op("Mul", second, cos), g.op("Mul", first, sin))
    return g.op("Concat", rotated_first, rotated_second, axis=3)


def build_random_llm(dims: LlmDims, seed: int) -> onnx.ModelProto:
    """A Llama-style decoder with seeded random weights."""
    rng = np.random.default_rng(seed)

    def weight(rows: int, cols: int, scale: float = 1.0) -> str:
        w = rng.standard_normal((rows, cols)).astype(np.float32) * np.float32(
            scale / np.sqrt(rows)
        )
        return g.const(w, "w")

    g = GraphBuilder("voicegate_random_llm")
    _declare_io(g, dims.layers, dims.heads, dims.head_dim, dims.vocab)
    width = dims.heads * dims.head_dim

    embed = rng.standard_normal((dims.vocab, dims.hidden)).astype(np.float32)
    x = g.op("Gather", g.const(embed, "embed"), "input_ids")  # [B, S, C]
    positions = g.op("Cast", "position_ids", to=TensorProto.FLOAT)  # [B, S]
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, dims.head_dim, 2) / dims.head_dim))
    angles = g.op(
        "Mul",
        g.op("Unsqueeze", positions, g.const([2], "axis2", np.int64)),
        g.const(inv_freq.astype(np.float32), "inv_freq"),
    )  # [B, S, D/2]
    axis1 = g.const([1], "axis1", np.int64)
    cos = g.op("Unsqueeze", g.op("Cos", angles), axis1)  # [B, 1, S, D/2]
    sin = g.op("Unsqueeze", g.op("Sin", angles), axis1)
    bias = g.op(
        "Where",
        _allowed_mask(g),
        g.const(np.float32(0.0), "zero_f"),
        g.const(np.float32(MASKED), "masked"),
    )  # [B, 1, S, T]

    for i in range(dims.layers):
        h = _rms_norm(g, x, dims.hidden)
        q = _rotary(g, split_heads(g, g.op("MatMul", h, weight(dims.hidden, width)),
                                   dims.heads, dims.head_dim), cos, sin, dims.head_dim)
        k = _rotary(g, split_heads(g, g.op("MatMul", h, weight(dims.hidden, width)),
                                   dims.heads, dims.head_dim), cos, sin, dims.head_dim)
        v = split_heads(g, g.op("MatMul", h, weight(dims.hidden, width)), dims.heads,
                        dims.head_dim)
        keys = g.op("Concat", f"past_key_values.{i}.key", k, axis=2, out=f"present.{i}.key")
        values = g.op(
            "Concat", f"past_key_values.{i}.value", v, axis=2, out=f"present.{i}.value"
        )
        attended = attention(g, q, keys, values, head_dim=dims.head_dim, mask=bias)
        merged = merge_heads(g, attended, dims.heads, dims.head_dim)
        x = g.op("Add", x, g.op("MatMul", merged, weight(width, dims.hidden)))
        h = _rms_norm(g, x, dims.hidden)
        gate = g.op("MatMul", h, weight(dims.hidden, dims.ffn))
        gate = g.op("Mul", gate, g.op("Sigmoid", gate))
        up = g.op("MatMul", h, weight(dims.hidden, dims.ffn))
        x = g.op("Add", x, g.op("MatMul", g.op("Mul", gate, up), weight(dims.ffn, dims.hidden)))

    # Scaled so that greedy choices have clear margins, as a trained model's usually do.
    lm_head = weight(dims.hidden, dims.vocab, scale=4.0)
    g.op("MatMul", _rms_norm(g, x, dims.hidden), lm_head, out="logits")
    return make_model(g.graph("voicegate synthetic decoder-only LLM with seeded random weights"),
                      producer=PRODUCER)


def build_scripted_llm(
    *,
    vocab: int,
    layers: int,
    heads: int,
    head_dim: int,
    start_id: int,
    reply_ids: Sequence[int],
    end_id: int,
) -> onnx.ModelProto:
    """A model that answers every prompt ending in ``start_id`` with ``reply_ids`` and
    then ``end_id``, reading its place in the reply from its KV cache."""
    for token in (start_id, end_id, *reply_ids):
        if not 0 <= token < vocab:
            raise ValueError(f"scripted LLM token id {token} outside vocabulary of {vocab}")
    g = GraphBuilder("voicegate_scripted_llm")
    _declare_io(g, layers, heads, head_dim, vocab)

    is_start = np.zeros(vocab, np.float32)
    is_start[start_id] = 1.0
    flag = g.op("Gather", g.const(is_start, "is_start"), "input_ids")  # [B, S]
    position = g.op("Cast", "position_ids", to=TensorProto.FLOAT)  # [B, S]
    # Values: position + 1 at a marker, 0 elsewhere; keys: every token's position.
    marker = g.op("Mul", flag, g.op("Add", position, g.const(np.float32(1.0), "one_f")))
    axes = g.const([1, 3], "axes13", np.int64)
    fill = g.const(np.ones((1, heads, 1, head_dim), np.float32), "fill")
    new_values = g.op("Mul", g.op("Unsqueeze", marker, axes), fill)  # [B, H, S, D]
    new_keys = g.op("Mul", g.op("Unsqueeze", position, axes), fill)

    attend = g.op("Cast", "attention_mask", to=TensorProto.BOOL)
    attend = g.op("Unsqueeze", attend, g.const([1], "axis1", np.int64))  # [B, 1, T]
    query_pos = g.op("Unsqueeze", position, g.const([2], "axis2", np.int64))  # [B, S, 1]
    found: str | None = None
    for i in range(layers):
        keys = g.op("Concat", f"past_key_values.{i}.key", new_keys, axis=2,
                    out=f"present.{i}.key")
        values = g.op("Concat", f"past_key_values.{i}.value", new_values, axis=2,
                      out=f"present.{i}.value")
        # Averaging over heads and channels makes every cached element count.
        key_pos = g.op("ReduceMean", keys, axes=[1, 3], keepdims=0)  # [B, T]
        key_val = g.op("ReduceMean", values, axes=[1, 3], keepdims=0)
        visible = g.op(
            "And",
            g.op("LessOrEqual",
                 g.op("Unsqueeze", key_pos, g.const([1], "axis1", np.int64)), query_pos),
            attend,
        )  # [B, S, T]
        picked = g.op(
            "Where", visible,
            g.op("Unsqueeze", key_val, g.const([1], "axis1", np.int64)),
            g.const(np.float32(0.0), "zero_f"),
        )
        last_marker = g.op("ReduceMax", picked, axes=[2], keepdims=0)  # [B, S]
        found = last_marker if found is None else g.op("Add", found, last_marker)
    assert found is not None
    marker_pos = g.op("Div", found, g.const(np.float32(layers), "layers"))
    # Index into the reply: 0 at the marker itself; past the reply, or with no marker
    # in sight, the end token.
    last = len(reply_ids)
    step = g.op("Sub", g.op("Add", position, g.const(np.float32(1.0), "one_f")), marker_pos)
    step = g.op(
        "Where",
        g.op("Greater", marker_pos, g.const(np.float32(0.5), "half")),
        step,
        g.const(np.float32(last), "last"),
    )
    step = g.op("Clip", step, g.const(np.float32(0.0), "lo"), g.const(np.float32(last), "hi"))
    table = np.zeros((last + 1, vocab), np.float32)
    for row, token in enumerate([*reply_ids, end_id]):
        table[row, token] = 20.0
    g.op("Gather", g.const(table, "reply"), g.op("Cast", step, to=TensorProto.INT64),
         out="logits")
    return make_model(
        g.graph("voicegate scripted LLM: spells a fixed reply, counting from its KV cache"),
        producer=PRODUCER,
    )
