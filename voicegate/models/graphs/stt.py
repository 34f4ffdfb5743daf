"""ONNX graphs in the layout Hugging Face optimum exports Whisper to.

``encoder_model.onnx``: input_features [B, n_mels, 3000] -> last_hidden_state [B, 1500, d]
(or, built for the utterance-length window, [B, n_mels, F] -> [B, F/2, d] for any even F
up to 3000). ``decoder_model_merged.onnx``: input_ids [B, S], encoder_hidden_states
[B, 1500 (or F/2), d],
past_key_values.{i}.decoder.key/value [B, H, P, hd], past_key_values.{i}.encoder.key/value
[B, H, 1500, hd], use_cache_branch bool [1] -> logits [B, S, V],
present.{i}.decoder.key/value, present.{i}.encoder.key/value. As in optimum's merge, one
``If`` on use_cache_branch selects the first-step graph (which ignores the past inputs and
computes the cross-attention keys from the encoder states) or the with-past graph (which
appends to the self-attention cache and reads the cross-attention cache from its past
inputs, returning empty tensors [0, H, 1, hd] in its place).

Whisper's architecture takes its weights as arrays (``Weights``): seeded random ones for
generated bundles, or real ones read by an importer (``importers.whisper``). Scripted
graphs have outputs known in advance (see ``build_scripted_decoder``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import onnx
from onnx import helper

from voicegate.models.graphs.builder import (
    Dim,
    GraphBuilder,
    attention,
    merge_heads,
    split_heads,
)
from voicegate.models.melspec import N_FRAMES
from voicegate.models.whisper_tokenizer import MAX_SOURCE_POSITIONS, MAX_TARGET_POSITIONS

_NEG: Final[float] = -1e9


@dataclass(frozen=True)
class WhisperDims:
    n_mels: int = 80
    d_model: int = 64
    n_heads: int = 2
    encoder_layers: int = 2
    decoder_layers: int = 2
    ffn_dim: int = 256
    vocab_size: int = 1024  # logits width; at least the tokenizer's size

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")


SIZES: Final[dict[str, WhisperDims]] = {
    # Cheap on two CPU cores: the encoder still sees the full [B, 80, 3000] window.
    "tiny": WhisperDims(),
    # whisper-tiny's dimensions.
    "base": WhisperDims(d_model=384, n_heads=6, encoder_layers=4, decoder_layers=4,
                        ffn_dim=1536, vocab_size=51865),
}


def dims_for(size: str, vocab_size: int) -> WhisperDims:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")
    base = SIZES[size]
    return replace(base, vocab_size=max(base.vocab_size, vocab_size))


def _sinusoids(length: int, channels: int) -> np.ndarray:
    # Whisper's fixed encoder position embedding.
    increment = np.log(10000.0) / (channels // 2 - 1)
    inv = np.exp(-increment * np.arange(channels // 2))
    scaled = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def past_names(layer: int) -> list[str]:
    return [f"past_key_values.{layer}.{part}.{kv}"
            for part in ("decoder", "encoder") for kv in ("key", "value")]


def present_names(layer: int) -> list[str]:
    return [f"present.{layer}.{part}.{kv}"
            for part in ("decoder", "encoder") for kv in ("key", "value")]


# ---------------------------------------------------------------------------- weights

Weights = dict[str, np.ndarray]
"""Whisper's weights as float32 arrays by the names below, linear weights as [in, out]
(MatMul's layout). Encoder: conv1_w [d, n_mels, 3], conv1_b, conv2_w [d, d, 3], conv2_b,
enc_positions [1500, d], enc{i}_{ln1,ln2}_{g,b}, enc{i}_{q,k,v,o,fc1,fc2}_w and _b (no
enc{i}_k_b: Whisper's key projections have no bias), enc_ln_post_{g,b}. Decoder:
embed_tokens [V, d] (also the output projection), embed_positions [448, d],
dec{i}_{self,cross}_{q,k,v,o}_w and _b (no _k_b), dec{i}_{ln1,ln2,ln3}_{g,b},
dec{i}_{fc1,fc2}_w and _b, dec_ln_{g,b}. ``random_weights`` draws them; the CTranslate2
importer reads them from a model.bin."""


def random_weights(dims: WhisperDims, rng: np.random.Generator) -> Weights:
    d, f = dims.d_model, dims.ffn_dim

    def normal(shape: tuple[int, ...], scale: float | None = None) -> np.ndarray:
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else int(shape[0])
        std = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w: Weights = {
        "conv1_w": normal((d, dims.n_mels, 3), 1.0 / np.sqrt(dims.n_mels * 3)),
        "conv1_b": np.zeros(d, np.float32),
        "conv2_w": normal((d, d, 3), 1.0 / np.sqrt(d * 3)),
        "conv2_b": np.zeros(d, np.float32),
        "enc_positions": _sinusoids(MAX_SOURCE_POSITIONS, d),
    }

    def block(prefix: str, names: tuple[str, ...], norms: tuple[str, ...]) -> None:
        for name in names:
            w[f"{prefix}_{name}_w"] = normal((d, d))
            if not name.endswith("k"):
                w[f"{prefix}_{name}_b"] = np.zeros(d, np.float32)
        for ln in norms:
            w[f"{prefix}_{ln}_g"] = np.ones(d, np.float32)
            w[f"{prefix}_{ln}_b"] = np.zeros(d, np.float32)
        w[f"{prefix}_fc1_w"] = normal((d, f))
        w[f"{prefix}_fc1_b"] = np.zeros(f, np.float32)
        w[f"{prefix}_fc2_w"] = normal((f, d))
        w[f"{prefix}_fc2_b"] = np.zeros(d, np.float32)

    for i in range(dims.encoder_layers):
        block(f"enc{i}", ("q", "k", "v", "o"), ("ln1", "ln2"))
    w["enc_ln_post_g"], w["enc_ln_post_b"] = np.ones(d, np.float32), np.zeros(d, np.float32)
    for i in range(dims.decoder_layers):
        block(f"dec{i}", tuple(f"{a}_{n}" for a in ("self", "cross") for n in "qkvo"),
              ("ln1", "ln2", "ln3"))
    w["embed_tokens"] = normal((dims.vocab_size, d), 1.0)
    w["embed_positions"] = normal((MAX_TARGET_POSITIONS, d), 0.1)
    w["dec_ln_g"], w["dec_ln_b"] = np.ones(d, np.float32), np.zeros(d, np.float32)
    return w


def _weight(w: Weights, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in w:
        raise ValueError(f"Whisper weights lack {name!r}")
    if tuple(w[name].shape) != shape:
        raise ValueError(f"Whisper weight {name!r} has shape {list(w[name].shape)}, "
                         f"expected {list(shape)}")
    return w[name]


# ---------------------------------------------------------------------------- encoder


def _linear(g: GraphBuilder, x: str, w: Weights, name: str, shape: tuple[int, int]) -> str:
    d_out = shape[1]
    y = g.op("MatMul", x, g.const(_weight(w, f"{name}_w", shape), f"{name}_w"))
    if f"{name}_b" in w:
        y = g.op("Add", y, g.const(_weight(w, f"{name}_b", (d_out,)), f"{name}_b"))
    return y


def _layer_norm(g: GraphBuilder, x: str, w: Weights, name: str, d: int) -> str:
    return g.op("LayerNormalization", x, g.const(_weight(w, f"{name}_g", (d,)), f"{name}_g"),
                g.const(_weight(w, f"{name}_b", (d,)), f"{name}_b"), axis=-1, epsilon=1e-5)


def _encoder_block(
    g: GraphBuilder, x: str, dims: WhisperDims, w: Weights, i: int, *, tail: _Tail | None
) -> str:
    d, h, hd, f = dims.d_model, dims.n_heads, dims.head_dim, dims.ffn_dim
    p = f"enc{i}"
    y = _layer_norm(g, x, w, f"{p}_ln1", d)
    q = split_heads(g, _linear(g, y, w, f"{p}_q", (d, d)), h, hd)
    k = _linear(g, y, w, f"{p}_k", (d, d))
    v = _linear(g, y, w, f"{p}_v", (d, d))
    if tail is not None:
        tail.expose(g, k, v, i)
        k, v = tail.append(g, k, v, i)
    k, v = split_heads(g, k, h, hd), split_heads(g, v, h, hd)
    a = merge_heads(g, attention(g, q, k, v, head_dim=hd), h, hd)
    x = g.op("Add", x, _linear(g, a, w, f"{p}_o", (d, d)))
    y = _layer_norm(g, x, w, f"{p}_ln2", d)
    y = _linear(g, g.gelu(_linear(g, y, w, f"{p}_fc1", (d, f))), w, f"{p}_fc2", (f, d))
    return g.op("Add", x, y)


@dataclass
class _Tail:
    """The keys and values of the padding positions a cut window leaves out.

    ``silence`` holds, per layer, the keys and values [1500, d] the full 30 s encoder
    computes for a window of padding only; a cut window of T positions appends rows
    T..1499 of them to its own, so that its queries spread their attention over the
    same keys as in the full window (the padding positions' own states, computed once,
    are what the full window would compute for them with no audio in front). With
    ``export`` the graph instead outputs its keys and values, to compute ``silence``."""

    silence: list[tuple[np.ndarray, np.ndarray]] | None = None
    export: bool = False
    length: str = ""  # the window's positions [1], set by build_encoder

    def expose(self, g: GraphBuilder, k: str, v: str, i: int) -> None:
        if self.export:
            g.output(g.op("Identity", k), f"key.{i}", "float32", ["batch_size", "positions", "d"])
            g.output(g.op("Identity", v), f"value.{i}", "float32", ["batch_size", "positions", "d"])

    def append(self, g: GraphBuilder, k: str, v: str, i: int) -> tuple[str, str]:
        if self.silence is None:
            return k, v
        batch = g.op("Gather", g.op("Shape", k), g.ints([0]), axis=0)
        out = []
        for name, own, rows in (("key", k, self.silence[i][0]), ("value", v, self.silence[i][1])):
            rest = g.op("Slice", g.const(rows[None], f"silence_{name}_{i}"), self.length,
                        g.ints([MAX_SOURCE_POSITIONS]), g.ints([1]))
            shape = g.op("Concat", batch, g.ints([-1, rows.shape[1]]), axis=0)
            rest = g.op("Expand", rest, g.op("Max", shape, g.ints([1, 1, 1])))
            out.append(g.op("Concat", own, rest, axis=1))
        return out[0], out[1]


def build_encoder(
    dims: WhisperDims,
    weights: Weights,
    *,
    frames: int | None = N_FRAMES,
    silence: list[tuple[np.ndarray, np.ndarray]] | None = None,
    export_kv: bool = False,
) -> onnx.GraphProto:
    """The encoder; with ``frames=None`` it takes any even number of mel frames up to
    3000 (the utterance-length window) and adds the first frames/2 position embeddings;
    ``silence`` (per layer keys and values, see ``_Tail``) lets the cut window attend to
    the padding it leaves out."""
    g = GraphBuilder("whisper_encoder")
    tail = _Tail(silence, export_kv) if silence is not None or export_kv else None
    w, d = weights, dims.d_model
    feats = g.input("input_features", "float32",
                    ["batch_size", dims.n_mels, frames if frames is not None else "frames"])
    c1 = g.op("Conv", feats, g.const(_weight(w, "conv1_w", (d, dims.n_mels, 3)), "conv1_w"),
              g.const(_weight(w, "conv1_b", (d,)), "conv1_b"), pads=[1, 1], kernel_shape=[3])
    c2 = g.op("Conv", g.gelu(c1), g.const(_weight(w, "conv2_w", (d, d, 3)), "conv2_w"),
              g.const(_weight(w, "conv2_b", (d,)), "conv2_b"), pads=[1, 1], strides=[2],
              kernel_shape=[3])
    x = g.op("Transpose", g.gelu(c2), perm=[0, 2, 1])
    positions = g.const(_weight(w, "enc_positions", (MAX_SOURCE_POSITIONS, d)), "embed_positions")
    if frames is None:
        length = g.op("Gather", g.op("Shape", x), g.ints([1]), axis=0)  # [1]
        positions = g.op("Slice", positions, g.ints([0]), length, g.ints([0]))
    x = g.op("Add", x, positions)
    if tail is not None:
        tail.length = g.op("Gather", g.op("Shape", x), g.ints([1]), axis=0)
    for i in range(dims.encoder_layers):
        x = _encoder_block(g, x, dims, w, i, tail=tail)
    x = _layer_norm(g, x, w, "enc_ln_post", d)
    out_len: Dim = MAX_SOURCE_POSITIONS if frames is not None else "frames / 2"
    g.output(x, "last_hidden_state", "float32", ["batch_size", out_len, d])
    return g.graph()


def build_scripted_encoder(dims: WhisperDims, rng: np.random.Generator) -> onnx.GraphProto:
    """An encoder whose state says where the window holds audio: channel 0 of position
    j is 1 when mel frame 2j or 2j+1 rises above the window's floor (zero padding sits
    exactly on the floor), else 0; the other channels are 0."""
    g = GraphBuilder("scripted_whisper_encoder", rng)
    feats = g.input("input_features", "float32", ["batch_size", dims.n_mels, N_FRAMES])
    floor = g.op("ReduceMin", feats, axes=[1, 2], keepdims=1)
    above = g.op("Greater", feats, g.op("Add", floor, g.const(np.float32(1e-4))))
    frame_live = g.op("ReduceMax", g.op("Cast", above, to=onnx.TensorProto.FLOAT),
                      axes=[1], keepdims=0)  # [B, 3000]
    pairs = g.op("Reshape", frame_live, g.ints([0, MAX_SOURCE_POSITIONS, 2]))
    live = g.op("ReduceMax", pairs, axes=[2], keepdims=1)  # [B, 1500, 1]
    channel0 = np.zeros(dims.d_model, dtype=np.float32)
    channel0[0] = 1.0
    state = g.op("Mul", live, g.const(channel0, "channel0"))
    g.output(state, "last_hidden_state", "float32",
             ["batch_size", MAX_SOURCE_POSITIONS, dims.d_model])
    return g.graph()


# ---------------------------------------------------------------------------- decoder


@dataclass
class _DecoderWeights:
    embed_tokens: str
    embed_positions: str
    layers: list[dict[str, str]]
    ln_f: tuple[str, str]


def _decoder_weights(g: GraphBuilder, dims: WhisperDims, weights: Weights) -> _DecoderWeights:
    d, f = dims.d_model, dims.ffn_dim
    shapes = {"fc1_w": (d, f), "fc1_b": (f,), "fc2_w": (f, d)}
    layers = []
    for i in range(dims.decoder_layers):
        names = [f"{att}_{n}_{kind}" for att in ("self", "cross") for n in "qkvo"
                 for kind in ("w", "b") if (n, kind) != ("k", "b")]
        names += [f"{ln}_{kind}" for ln in ("ln1", "ln2", "ln3") for kind in ("g", "b")]
        names += ["fc1_w", "fc1_b", "fc2_w", "fc2_b"]
        layer: dict[str, str] = {}
        for name in names:
            shape = shapes.get(name, (d, d) if name.endswith("_w") else (d,))
            layer[name] = g.const(_weight(weights, f"dec{i}_{name}", shape), f"dec{i}_{name}")
        for att in ("self", "cross"):  # a key bias only where the weights have one
            if f"dec{i}_{att}_k_b" in weights:
                layer[f"{att}_k_b"] = g.const(_weight(weights, f"dec{i}_{att}_k_b", (d,)),
                                              f"dec{i}_{att}_k_b")
        layers.append(layer)
    return _DecoderWeights(
        embed_tokens=g.const(_weight(weights, "embed_tokens", (dims.vocab_size, d)),
                             "embed_tokens"),
        embed_positions=g.const(_weight(weights, "embed_positions", (MAX_TARGET_POSITIONS, d)),
                                "embed_positions"),
        layers=layers,
        ln_f=(g.const(_weight(weights, "dec_ln_g", (d,)), "dec_ln_g"),
              g.const(_weight(weights, "dec_ln_b", (d,)), "dec_ln_b")),
    )


def _proj(b: GraphBuilder, x: str, w: dict[str, str], name: str) -> str:
    y = b.op("MatMul", x, w[f"{name}_w"])
    return b.op("Add", y, w[f"{name}_b"]) if f"{name}_b" in w else y


def _ln(b: GraphBuilder, x: str, w: dict[str, str], name: str) -> str:
    return b.op("LayerNormalization", x, w[f"{name}_g"], w[f"{name}_b"], axis=-1, epsilon=1e-5)


def _decoder_branch(
    b: GraphBuilder, dims: WhisperDims, w: _DecoderWeights, *, with_past: bool
) -> None:
    """One branch of the merged decoder; its outputs are logits then the presents."""
    h, hd = dims.n_heads, dims.head_dim
    ids = "input_ids"
    seq = b.op("Gather", b.op("Shape", ids), b.ints([1]), axis=0)  # [1]
    if with_past:
        past_len = b.op("Gather", b.op("Shape", "past_key_values.0.decoder.key"),
                        b.ints([2]), axis=0)
    else:
        past_len = b.ints([0])
    total = b.op("Add", past_len, seq)
    scalar = b.ints([])  # reshape target for a scalar
    q_pos = b.op("Range", b.op("Reshape", past_len, scalar), b.op("Reshape", total, scalar),
                 b.const(np.int64(1)))
    k_pos = b.op("Range", b.const(np.int64(0)), b.op("Reshape", total, scalar),
                 b.const(np.int64(1)))
    future = b.op("Less", b.op("Unsqueeze", q_pos, b.ints([1])),
                  b.op("Unsqueeze", k_pos, b.ints([0])))  # [S, T]: key after query
    mask = b.op("Where", future, b.const(np.float32(_NEG)), b.const(np.float32(0.0)))
    x = b.op("Add", b.op("Gather", w.embed_tokens, ids, axis=0),
             b.op("Gather", w.embed_positions, q_pos, axis=0))
    presents: list[str] = []
    for i, lw in enumerate(w.layers):
        past = past_names(i)
        y = _ln(b, x, lw, "ln1")
        q = split_heads(b, _proj(b, y, lw, "self_q"), h, hd)
        k_new = split_heads(b, _proj(b, y, lw, "self_k"), h, hd)
        v_new = split_heads(b, _proj(b, y, lw, "self_v"), h, hd)
        if with_past:
            k = b.op("Concat", past[0], k_new, axis=2)
            v = b.op("Concat", past[1], v_new, axis=2)
        else:
            k, v = k_new, v_new
        a = merge_heads(b, attention(b, q, k, v, head_dim=hd, mask=mask), h, hd)
        x = b.op("Add", x, _proj(b, a, lw, "self_o"))
        y = _ln(b, x, lw, "ln2")
        q = split_heads(b, _proj(b, y, lw, "cross_q"), h, hd)
        if with_past:
            ck, cv = past[2], past[3]
            empty = _empty_cross_cache(b, dims)
            cross_presents = [empty, empty]
        else:
            ck = split_heads(b, _proj(b, "encoder_hidden_states", lw, "cross_k"), h, hd)
            cv = split_heads(b, _proj(b, "encoder_hidden_states", lw, "cross_v"), h, hd)
            cross_presents = [ck, cv]
        a = merge_heads(b, attention(b, q, ck, cv, head_dim=hd), h, hd)
        x = b.op("Add", x, _proj(b, a, lw, "cross_o"))
        y = _ln(b, x, lw, "ln3")
        y = _proj(b, b.gelu(_proj(b, y, lw, "fc1")), lw, "fc2")
        x = b.op("Add", x, y)
        presents += [k, v, *cross_presents]
    x = b.op("LayerNormalization", x, *w.ln_f, axis=-1, epsilon=1e-5)
    logits = b.op("MatMul", x, b.op("Transpose", w.embed_tokens, perm=[1, 0]))
    _branch_outputs(b, logits, presents, dims)


def _empty_cross_cache(b: GraphBuilder, dims: WhisperDims) -> str:
    """What optimum's merge puts in the with-past branch for the cross-attention
    presents: an empty constant, since the cache from the first step stays valid."""
    return b.const(np.zeros((0, dims.n_heads, 1, dims.head_dim), dtype=np.float32),
                   "empty_cross_cache")


def _branch_outputs(b: GraphBuilder, logits: str, presents: list[str], dims: WhisperDims) -> None:
    b.output(logits, b.fresh("logits_out"), "float32", None)
    for value in presents:
        b.output(value, b.fresh("present_out"), "float32", None)


def _merged_decoder(
    g: GraphBuilder, dims: WhisperDims, then_branch: GraphBuilder, else_branch: GraphBuilder
) -> onnx.GraphProto:
    """Declare the merged decoder's interface around an If on use_cache_branch."""
    d, h, hd = dims.d_model, dims.n_heads, dims.head_dim
    g.input("input_ids", "int64", ["batch_size", "decoder_sequence_length"])
    g.input("encoder_hidden_states", "float32",
            ["batch_size", "encoder_sequence_length / 2", d])
    for i in range(dims.decoder_layers):
        for name in past_names(i):
            length = ("past_decoder_sequence_length" if ".decoder." in name
                      else "encoder_sequence_length_out")
            g.input(name, "float32", ["batch_size", h, length, hd])
    g.input("use_cache_branch", "bool", [1])
    outputs = ["logits"] + [n for i in range(dims.decoder_layers) for n in present_names(i)]
    g.nodes.append(helper.make_node(
        "If", ["use_cache_branch"], outputs,
        then_branch=then_branch.graph(), else_branch=else_branch.graph(),
    ))
    g.outputs.append(helper.make_tensor_value_info(
        "logits", onnx.TensorProto.FLOAT, ["batch_size", "decoder_sequence_length", dims.vocab_size]
    ))
    for name in outputs[1:]:
        length = ("past_decoder_sequence_length + 1" if ".decoder." in name
                  else "encoder_sequence_length_out")
        g.outputs.append(helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, ["batch_size", h, length, hd]
        ))
    return g.graph()


def build_decoder(dims: WhisperDims, weights: Weights) -> onnx.GraphProto:
    """Whisper's decoder, merged as optimum merges it."""
    g = GraphBuilder("whisper_decoder_merged")
    decoder_weights = _decoder_weights(g, dims, weights)
    with_past = g.subgraph("with_past")
    _decoder_branch(with_past, dims, decoder_weights, with_past=True)
    no_past = g.subgraph("no_past")
    _decoder_branch(no_past, dims, decoder_weights, with_past=False)
    return _merged_decoder(g, dims, with_past, no_past)


def build_scripted_decoder(
    dims: WhisperDims,
    rng: np.random.Generator,
    *,
    script: list[int],
    eos: int,
    prompt_length: int,
    positions_per_token: int,
) -> onnx.GraphProto:
    """A merged decoder that spells ``script`` one token per step, then ``eos``.

    It is honest about its caches: the position it is at is counted from markers stored
    in the self-attention cache (channel 0 of every cached key and value is 1, channel 1
    the token id), so a cache that is dropped, truncated or not appended to shifts the
    text. How much of the script it may spell comes from the cross-attention cache: one
    token per ``positions_per_token`` encoder positions that hold audio (the scripted
    encoder marks them), so the transcript grows with the utterance as a real one does,
    and a session given another session's encoder cache gets another length.

    At a step with S input tokens after P cached ones, position s emits script[k] with
    k = P + s + 1 - prompt_length while k is below the allowance, else eos.
    """
    if dims.head_dim < 2:
        raise ValueError("a scripted decoder needs head_dim >= 2 for its cache markers")
    g = GraphBuilder("scripted_whisper_decoder", rng)
    table = g.const(np.asarray([*script, eos], dtype=np.int64), "script")
    n_script = len(script)

    def branch(b: GraphBuilder, with_past: bool) -> None:
        h, hd = dims.n_heads, dims.head_dim
        ids = "input_ids"
        shape = b.op("Shape", ids)  # [B, S]
        seq = b.op("Gather", shape, b.ints([1]), axis=0)
        # New cache rows: marker 1 in channel 0, token id in channel 1.
        rows_shape = b.op("Concat", b.op("Gather", shape, b.ints([0]), axis=0),
                          b.ints([h]), seq, b.ints([hd]), axis=0)
        marker = np.zeros(hd, dtype=np.float32)
        marker[0] = 1.0
        id_channel = np.zeros(hd, dtype=np.float32)
        id_channel[1] = 1.0
        ids_f = b.op("Cast", b.op("Unsqueeze", ids, b.ints([1, 3])), to=onnx.TensorProto.FLOAT)
        rows = b.op("Add", b.op("Expand", b.const(marker, "marker"), rows_shape),
                    b.op("Mul", ids_f, b.const(id_channel, "id_channel")))
        if with_past:
            last = dims.decoder_layers - 1
            counts = [
                b.op("ReduceSum", b.op("Slice", f"past_key_values.{layer}.decoder.{kv}",
                                       b.ints([0, 0]), b.ints([1, 1]), b.ints([1, 3])),
                     b.ints([1, 2, 3]), keepdims=0)
                for layer, kv in ((0, "key"), (last, "value"))
            ]
            past_count = b.op("Div", b.op("Add", *counts), b.const(np.float32(2.0)))
            past_count = b.op("Cast", past_count, to=onnx.TensorProto.INT64)  # [B]
            enc_value = f"past_key_values.{last}.encoder.value"
        else:
            past_count = b.op("Mul", b.op("Gather", shape, b.ints([0]), axis=0), b.ints([0]))
            enc_value = split_heads(b, "encoder_hidden_states", h, hd)
        live = b.op("Slice", enc_value, b.ints([0, 0]), b.ints([1, 1]), b.ints([1, 3]))
        n_live = b.op("Cast", b.op("ReduceSum", live, b.ints([1, 2, 3]), keepdims=0),
                      to=onnx.TensorProto.INT64)  # [B]
        allowed = b.op("Min", b.op("Div", n_live, b.const(np.int64(positions_per_token))),
                       b.const(np.int64(n_script)))
        steps = b.op("Range", b.const(np.int64(1)),
                     b.op("Add", b.op("Reshape", seq, b.ints([])), b.const(np.int64(1))),
                     b.const(np.int64(1)))  # [S]: 1..S
        k = b.op("Sub", b.op("Add", b.op("Unsqueeze", past_count, b.ints([1])),
                             b.op("Unsqueeze", steps, b.ints([0]))),
                 b.const(np.int64(prompt_length)))  # [B, S]
        in_script = b.op("And", b.op("Less", k, b.op("Unsqueeze", allowed, b.ints([1]))),
                         b.op("GreaterOrEqual", k, b.const(np.int64(0))))
        index = b.op("Where", in_script, k, b.const(np.int64(n_script)))
        token = b.op("Gather", table, index, axis=0)  # [B, S]
        logits = b.op("OneHot", token, b.const(np.int64(dims.vocab_size)),
                      b.const(np.asarray([0.0, 10.0], dtype=np.float32)), axis=-1)
        presents: list[str] = []
        for i in range(dims.decoder_layers):
            past = past_names(i)
            if with_past:
                self_k = b.op("Concat", past[0], rows, axis=2)
                self_v = b.op("Concat", past[1], rows, axis=2)
                empty = _empty_cross_cache(b, dims)
                presents += [self_k, self_v, empty, empty]
            else:
                presents += [rows, rows, enc_value, enc_value]
        _branch_outputs(b, logits, presents, dims)

    with_past = g.subgraph("with_past")
    branch(with_past, True)
    no_past = g.subgraph("no_past")
    branch(no_past, False)
    return _merged_decoder(g, dims, with_past, no_past)
