"""Writes CTranslate2 ``model.bin`` files (binary version 6) for the importer tests:
Whisper models of any dimensions from ``stt_graph``'s weights, and damaged ones."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from voicegate.models import whisper_tokenizer
from voicegate.models.graphs import stt as stt_graph
from voicegate.models.importers.ct2 import DTYPE_IDS

Variables = dict[str, np.ndarray]


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def model_bytes(
    variables: Mapping[str, np.ndarray],
    *,
    aliases: Mapping[str, str] | None = None,
    spec: str = "WhisperSpec",
    revision: int = 3,
    version: int = 6,
    dtype_of: Mapping[str, str] | None = None,
) -> bytes:
    """The file as CTranslate2 writes it; ``dtype_of`` overrides a variable's dtype name
    (its bytes stay those of the array)."""
    out = [struct.pack("<I", version), _string(spec), struct.pack("<I", revision),
           struct.pack("<I", len(variables))]
    for name, value in variables.items():
        dtype = (dtype_of or {}).get(name, "bfloat16" if value.dtype == np.uint16
                                     else str(value.dtype))
        raw = np.ascontiguousarray(value).tobytes()
        out += [_string(name), struct.pack("<B", value.ndim),
                *(struct.pack("<I", dim) for dim in value.shape),
                struct.pack("<B", DTYPE_IDS.get(dtype, 99)), struct.pack("<I", len(raw)), raw]
    out.append(struct.pack("<I", len(aliases or {})))
    for alias, target in (aliases or {}).items():
        out += [_string(alias), _string(target)]
    return b"".join(out)


def whisper_variables(dims: stt_graph.WhisperDims, weights: stt_graph.Weights) -> Variables:
    """CTranslate2's WhisperSpec variables (float32) holding ``weights``: linear
    weights as [out, in], q/k/v and the cross-attention k/v fused."""
    d = dims.d_model
    v: Variables = {}

    def linear(dst: str, src: str) -> None:
        v[f"{dst}/weight"] = weights[f"{src}_w"].T.copy()
        v[f"{dst}/bias"] = weights[f"{src}_b"]

    def fused(dst: str, srcs: tuple[str, ...]) -> None:
        v[f"{dst}/weight"] = np.concatenate([weights[f"{s}_w"].T for s in srcs])
        v[f"{dst}/bias"] = np.concatenate([weights.get(f"{s}_b", np.zeros(d, np.float32))
                                           for s in srcs])

    def norm(dst: str, src: str) -> None:
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = weights[f"{src}_g"], weights[f"{src}_b"]

    for side in ("encoder", "decoder"):
        v[f"{side}/num_heads"] = np.array(dims.n_heads, dtype=np.int16)
        v[f"{side}/pre_norm"] = np.array(1, dtype=np.int8)
        v[f"{side}/activation"] = np.array(3, dtype=np.int8)
    for conv in ("conv1", "conv2"):
        v[f"encoder/{conv}/weight"] = weights[f"{conv}_w"]
        v[f"encoder/{conv}/bias"] = weights[f"{conv}_b"]
    v["encoder/position_encodings/encodings"] = weights["enc_positions"]
    for i in range(dims.encoder_layers):
        s, e = f"encoder/layer_{i}", f"enc{i}"
        norm(f"{s}/self_attention/layer_norm", f"{e}_ln1")
        fused(f"{s}/self_attention/linear_0", (f"{e}_q", f"{e}_k", f"{e}_v"))
        linear(f"{s}/self_attention/linear_1", f"{e}_o")
        norm(f"{s}/ffn/layer_norm", f"{e}_ln2")
        linear(f"{s}/ffn/linear_0", f"{e}_fc1")
        linear(f"{s}/ffn/linear_1", f"{e}_fc2")
    norm("encoder/layer_norm", "enc_ln_post")
    v["decoder/embeddings/weight"] = weights["embed_tokens"]
    v["decoder/position_encodings/encodings"] = weights["embed_positions"]
    for i in range(dims.decoder_layers):
        s, e = f"decoder/layer_{i}", f"dec{i}"
        norm(f"{s}/self_attention/layer_norm", f"{e}_ln1")
        fused(f"{s}/self_attention/linear_0", (f"{e}_self_q", f"{e}_self_k", f"{e}_self_v"))
        linear(f"{s}/self_attention/linear_1", f"{e}_self_o")
        norm(f"{s}/attention/layer_norm", f"{e}_ln2")
        linear(f"{s}/attention/linear_0", f"{e}_cross_q")
        fused(f"{s}/attention/linear_1", (f"{e}_cross_k", f"{e}_cross_v"))
        linear(f"{s}/attention/linear_2", f"{e}_cross_o")
        norm(f"{s}/ffn/layer_norm", f"{e}_ln3")
        linear(f"{s}/ffn/linear_0", f"{e}_fc1")
        linear(f"{s}/ffn/linear_1", f"{e}_fc2")
    norm("decoder/layer_norm", "dec_ln")
    return v


def quantize_int8(variables: Variables) -> Variables:
    """CTranslate2's int8 weights: each 2-D linear weight scaled per output row to
    [-127, 127], its scale stored as ``<name>_scale``."""
    out: Variables = {}
    for name, value in variables.items():
        if name.endswith("/weight") and value.ndim == 2 and "embeddings" not in name:
            scale = 127.0 / np.maximum(np.abs(value).max(axis=1), 1e-8)
            out[name] = np.round(value * scale[:, None]).astype(np.int8)
            out[f"{name}_scale"] = scale.astype(np.float32)
        else:
            out[name] = value
    return out


def write_whisper_dir(
    directory: Path,
    dims: stt_graph.WhisperDims,
    *,
    seed: int = 3,
    dtype: str = "float32",
) -> stt_graph.Weights:
    """A CTranslate2 Whisper directory with seeded random weights of ``dims`` (the
    vocabulary widened to the generated tokenizer's); returns the weights as float32,
    rounded through ``dtype`` as stored."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = whisper_tokenizer.build_tokenizer(whisper_tokenizer.shipped_corpus(), 1024)
    tokenizer.save(str(directory / "tokenizer.json"))
    weights = stt_graph.random_weights(dims, np.random.default_rng(seed))
    if dtype == "float16":
        weights = {k: w.astype(np.float16).astype(np.float32) for k, w in weights.items()}
    variables = whisper_variables(dims, weights)
    if dtype == "float16":
        variables = {k: (w.astype(np.float16) if w.dtype == np.float32 else w)
                     for k, w in variables.items()}
    elif dtype == "int8":
        variables = quantize_int8(variables)
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    (directory / "model.bin").write_bytes(model_bytes(variables, aliases=aliases))
    eot = tokenizer.token_to_id(whisper_tokenizer.EOT)
    space = tokenizer.token_to_id("\u0120")
    specials = [tokenizer.token_to_id(t) for t in whisper_tokenizer.special_tokens()]
    (directory / "config.json").write_text(json.dumps({
        "suppress_ids": [t for t in specials if t != eot],
        "suppress_ids_begin": [space, eot],
        "lang_ids": [],
    }))
    return weights
