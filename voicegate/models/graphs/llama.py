"""ONNX decoder graphs for Llama-family weights (llama, qwen2), in the optimum layout the
LLM engine runs (``llm_graph`` describes the inputs and outputs).

The weights come as float32 arrays in the layout of the original checkpoints: matrices
[out, in], query and key rows ordered for the rotate-half form of rotary positions. They
are written either as float32 ``MatMul`` initializers or as 4-bit blocks of 32 for
onnxruntime's ``com.microsoft.MatMulNBits``; every other op is a standard ONNX op, so the
graph runs on the CPU and CUDA execution providers alike.

Beside the optimum inputs, the graph takes ``logits_to_keep`` [1]: logits are computed
for the last that many positions only (the engine asks for 1; a prompt's other positions
would cost a vocabulary-wide matrix product each).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper

from voicegate.models.graphs.builder import IR_VERSION, OPSET, GraphBuilder
from voicegate.models.graphs.llm import MASKED, _allowed_mask

PRODUCER: Final[str] = "voicegate.models.importers.gguf_llm"
BLOCK: Final[int] = 32  # MatMulNBits block size
WEIGHT_FORMATS: Final[tuple[str, ...]] = ("int4", "fp32")

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class LlamaDims:
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    rope_base: float
    rms_eps: float
    qkv_bias: bool
    tied_head: bool

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads:
            raise ValueError(f"{self.heads} query heads do not group over "
                             f"{self.kv_heads} key/value heads")
        if self.head_dim % 2:
            raise ValueError(f"head dimension {self.head_dim} is odd")


def quantize_int4(weight: FloatArray) -> tuple[npt.NDArray[np.uint8], FloatArray, FloatArray]:
    """[N, K] float32 (K a multiple of 32) -> MatMulNBits blocks: B [N, K/32, 16] uint8
    (two 4-bit levels a byte, low nibble first), scales [N * K/32], and the offsets
    [N, K/32] that make each block affine: w = (q - 8) * scale + offset.

    Each block of 32 maps its minimum to level 0 and its maximum to level 15, so an affine
    4-bit source block (GGUF Q4_0, Q4_1, Q4_K) whose values span its 16 levels comes out
    exactly as the file holds it. MatMulNBits is used without zero points (its fast
    path, level 8 is zero); the offsets are applied by ``_Linear`` as one small product
    with the sums of the input over each block."""
    n, k = weight.shape
    if k % BLOCK:
        raise ValueError(f"input width {k} is not a multiple of {BLOCK}")
    grouped = weight.reshape(n, k // BLOCK, BLOCK)
    low = grouped.min(axis=2)
    high = grouped.max(axis=2)
    scale = ((high - low) / np.float32(15.0)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    levels = np.rint((grouped - low[:, :, None]) / safe[:, :, None])
    q = np.clip(levels, 0, 15).astype(np.uint8)
    packed = (q[:, :, 0::2] | (q[:, :, 1::2] << 4)).astype(np.uint8)
    offset = (low + np.float32(8.0) * scale).astype(np.float32)
    return packed, scale.reshape(-1), offset


def dequantize_int4(packed: npt.NDArray[np.uint8], scale: FloatArray,
                    offset: FloatArray) -> FloatArray:
    """The float32 [N, K] that the int4 linear computes with (for tests and reports)."""
    n, blocks, _ = packed.shape
    q = np.empty((n, blocks, BLOCK), np.float32)
    q[:, :, 0::2] = packed & 0x0F
    q[:, :, 1::2] = packed >> 4
    values = (q - 8.0) * scale.reshape(n, blocks, 1) + offset.reshape(n, blocks, 1)
    return values.reshape(n, blocks * BLOCK).astype(np.float32)


class _Linear:
    """x [.., K] @ W.T for a weight W [N, K], in the chosen weight format."""

    def __init__(self, g: GraphBuilder, weights: str) -> None:
        if weights not in WEIGHT_FORMATS:
            raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
        self.g = g
        self.weights = weights

    def __call__(self, x: str, weight: FloatArray, hint: str, *, exact: bool = False) -> str:
        g = self.g
        if self.weights == "fp32" or exact:
            return g.op("MatMul", x, g.const(np.ascontiguousarray(weight.T), f"{hint}_w"))
        n, k = weight.shape
        if k % BLOCK:  # no whole blocks: this matrix stays float32
            return g.op("MatMul", x, g.const(np.ascontiguousarray(weight.T), f"{hint}_w"))
        packed, scale, offset = quantize_int4(weight)
        y = g.op(
            "MatMulNBits", x, g.const(packed, f"{hint}_q"), g.const(scale, f"{hint}_s"),
            domain="com.microsoft", K=k, N=n, bits=4, block_size=BLOCK, hint=hint,
        )
        sums = g.op("ReduceSum", g.op("Reshape", x, g.ints([0, 0, k // BLOCK, BLOCK])),
                    g.ints([-1]), keepdims=0)  # [B, S, K/32]
        return g.op("Add", y, g.op("MatMul", sums, g.const(
            np.ascontiguousarray(offset.T), f"{hint}_o")))


_B, _S, _P = "batch_size", "sequence_length", "past_sequence_length"
_T = "past_sequence_length + sequence_length"


def _rms_norm(g: GraphBuilder, x: str, weight: FloatArray, eps: float) -> str:
    mean_sq = g.op("ReduceMean", g.op("Mul", x, x), axes=[-1], keepdims=1)
    rms = g.op("Sqrt", g.op("Add", mean_sq, g.const(np.float32(eps), "eps")))
    return g.op("Mul", g.op("Div", x, rms), g.const(weight.astype(np.float32), "norm"))


def build_llama(
    dims: LlamaDims,
    tensor: Callable[[str], FloatArray],
    *,
    weights: str = "int4",
    rope_factors: FloatArray | None = None,
    float_head: bool = False,
) -> onnx.ModelProto:
    """The decoder for weights looked up by their GGUF names through ``tensor`` (float32,
    [out, in] for matrices), one tensor at a time so that only the graph holds them all.
    ``float_head`` keeps the output projection in float32 whatever ``weights`` says."""
    g = GraphBuilder("voicegate_llama")
    linear = _Linear(g, weights)
    hd, kvh = dims.head_dim, dims.kv_heads
    group = dims.heads // kvh
    g.input("input_ids", "int64", [_B, _S])
    g.input("attention_mask", "int64", [_B, _T])
    g.input("position_ids", "int64", [_B, _S])
    for i in range(dims.layers):
        for kind in ("key", "value"):
            g.input(f"past_key_values.{i}.{kind}", "float32", [_B, kvh, _P, hd])
    g.input("logits_to_keep", "int64", [1])

    embed = tensor("token_embd.weight")
    x = g.op("Gather", g.const(embed, "embed"), "input_ids")  # [B, S, C]
    positions = g.op("Cast", "position_ids", to=TensorProto.FLOAT)
    inv_freq = 1.0 / (dims.rope_base ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    if rope_factors is not None:
        inv_freq = inv_freq / rope_factors.astype(np.float64)
    angles = g.op("Mul", g.op("Unsqueeze", positions, g.ints([2])),
                  g.const(inv_freq.astype(np.float32), "inv_freq"))  # [B, S, D/2]
    angles = g.op("Concat", angles, angles, axis=2)  # [B, S, D]: rotate-half layout
    cos = g.op("Unsqueeze", g.op("Cos", angles), g.ints([1]))  # [B, 1, S, D]
    sin = g.op("Unsqueeze", g.op("Sin", angles), g.ints([1]))
    bias = g.op("Where", _allowed_mask(g), g.const(np.float32(0.0), "zero_f"),
                g.const(np.float32(MASKED), "masked"))  # [B, 1, S, T]
    bias = g.op("Unsqueeze", bias, g.ints([2]))  # [B, 1, 1, S, T]: over the head groups
    scale = g.const(np.float32(1.0 / np.sqrt(hd)), "scale")

    def project(h: str, name: str, heads: int) -> str:
        y = linear(h, tensor(f"{name}.weight"), name)
        if dims.qkv_bias:
            y = g.op("Add", y, g.const(tensor(f"{name}.bias"), f"{name}_b"))
        shaped = g.op("Reshape", y, g.ints([0, 0, heads, hd]))
        return g.op("Transpose", shaped, perm=[0, 2, 1, 3])  # [B, heads, S, D]

    for i in range(dims.layers):
        p = f"blk.{i}"
        h = _rms_norm(g, x, tensor(f"{p}.attn_norm.weight"), dims.rms_eps)
        q = _rotary_full(g, project(h, f"{p}.attn_q", dims.heads), cos, sin, hd)
        k = _rotary_full(g, project(h, f"{p}.attn_k", kvh), cos, sin, hd)
        v = project(h, f"{p}.attn_v", kvh)
        keys = g.op("Concat", f"past_key_values.{i}.key", k, axis=2, out=f"present.{i}.key")
        values = g.op("Concat", f"past_key_values.{i}.value", v, axis=2,
                      out=f"present.{i}.value")
        # Grouped-query attention without repeating the cache: the query heads of a group
        # share one key/value head, [B, Hkv, G, S, D] against [B, Hkv, 1, T, D].
        qg = g.op("Reshape", q, g.ints([0, kvh, group, -1, hd]))
        kt = g.op("Unsqueeze", g.op("Transpose", keys, perm=[0, 1, 3, 2]), g.ints([2]))
        scores = g.op("Add", g.op("Mul", g.op("MatMul", qg, kt), scale), bias)
        attended = g.op("MatMul", g.op("Softmax", scores, axis=-1),
                        g.op("Unsqueeze", values, g.ints([2])))  # [B, Hkv, G, S, D]
        merged = g.op("Reshape", g.op("Transpose", g.op(
            "Reshape", attended, g.ints([0, dims.heads, -1, hd])), perm=[0, 2, 1, 3]),
            g.ints([0, 0, dims.heads * hd]))
        x = g.op("Add", x, linear(merged, tensor(f"{p}.attn_output.weight"), f"{p}.attn_o"))
        h = _rms_norm(g, x, tensor(f"{p}.ffn_norm.weight"), dims.rms_eps)
        gate = linear(h, tensor(f"{p}.ffn_gate.weight"), f"{p}.ffn_gate")
        gate = g.op("Mul", gate, g.op("Sigmoid", gate))
        up = linear(h, tensor(f"{p}.ffn_up.weight"), f"{p}.ffn_up")
        x = g.op("Add", x, linear(g.op("Mul", gate, up), tensor(f"{p}.ffn_down.weight"),
                                  f"{p}.ffn_down"))

    h = _rms_norm(g, x, tensor("output_norm.weight"), dims.rms_eps)
    keep = g.op("Neg", "logits_to_keep")
    big = g.ints([np.iinfo(np.int64).max])
    h = g.op("Slice", h, keep, big, g.ints([1]))  # the last logits_to_keep positions
    head = embed if dims.tied_head else tensor("output.weight")
    g.op("Identity", linear(h, head, "lm_head", exact=float_head), out="logits")

    g.output("logits", "logits", "float32", [_B, "logits_length", dims.vocab])
    for i in range(dims.layers):
        for kind in ("key", "value"):
            name = f"present.{i}.{kind}"
            g.output(name, name, "float32", [_B, kvh, _T, hd])
    model = helper.make_model(
        g.graph("voicegate decoder imported from GGUF"),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name=PRODUCER,
        ir_version=IR_VERSION,
    )
    return model


def _rotary_full(g: GraphBuilder, x: str, cos: str, sin: str, head_dim: int) -> str:
    """Rotate-half rotary positions with cos/sin over the whole head dimension."""
    half = head_dim // 2
    axis = g.ints([3])
    first = g.op("Slice", x, g.ints([0]), g.ints([half]), axis)
    second = g.op("Slice", x, g.ints([half]), g.ints([head_dim]), axis)
    rotated = g.op("Concat", g.op("Neg", second), first, axis=3)
    return g.op("Add", g.op("Mul", x, cos), g.op("Mul", rotated, sin))


def unpermute_llama(weight: FloatArray, heads: int) -> FloatArray:
    """Undo llama.cpp's reordering of query/key rows (its converter interleaves each
    head's two rotary halves for the GPT-J form); back to the rotate-half layout."""
    rows = weight.shape[0]
    return np.ascontiguousarray(
        weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)

