"""Small GGUF files written with ``gguf.GGUFWriter`` for the importer tests, and a numpy
forward pass of the same weights (Hugging Face layout, rotate-half rotary positions) to
check the imported ONNX graph against."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType as Q

FloatArray = npt.NDArray[np.float32]

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = 0
    symbols = {}
    for b in range(256):
        if b in keep:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


@dataclass
class TinyLlama:
    """Random weights of a small llama or qwen2 model, in Hugging Face layout."""

    arch: str = "llama"
    hidden: int = 256
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 256
    rope_base: float = 10000.0
    eps: float = 1e-5
    tied: bool = True
    seed: int = 0
    types: Mapping[str, Q] = field(default_factory=dict)  # tensor name suffix -> type
    weights: dict[str, FloatArray] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def tokens(self) -> tuple[list[str], list[str], list[int]]:
        symbols = byte_symbols()
        space = symbols[ord(" ")]
        merges = [f"{space} t", "h e", f"{space}t he", "i n", f"{space} a"]
        merged = [m.replace(" ", "") for m in merges]
        tokens = [*SPECIALS, *symbols, *merged]
        types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
        return tokens, merges, types

    def build(self) -> None:
        rng = np.random.default_rng(self.seed)
        vocab = len(self.tokens()[0])
        hd = self.head_dim

        def w(rows: int, cols: int) -> FloatArray:
            return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

        self.weights["token_embd.weight"] = w(vocab, self.hidden) * np.float32(4.0)
        self.weights["output_norm.weight"] = (1 + 0.1 * rng.standard_normal(self.hidden)
                                              ).astype(np.float32)
        if not self.tied:
            self.weights["output.weight"] = w(vocab, self.hidden)
        for i in range(self.layers):
            p = f"blk.{i}"
            self.weights[f"{p}.attn_norm.weight"] = (1 + 0.1 * rng.standard_normal(
                self.hidden)).astype(np.float32)
            self.weights[f"{p}.ffn_norm.weight"] = (1 + 0.1 * rng.standard_normal(
                self.hidden)).astype(np.float32)
            self.weights[f"{p}.attn_q.weight"] = w(self.heads * hd, self.hidden)
            self.weights[f"{p}.attn_k.weight"] = w(self.kv_heads * hd, self.hidden)
            self.weights[f"{p}.attn_v.weight"] = w(self.kv_heads * hd, self.hidden)
            self.weights[f"{p}.attn_output.weight"] = w(self.hidden, self.heads * hd)
            self.weights[f"{p}.ffn_gate.weight"] = w(self.ffn, self.hidden)
            self.weights[f"{p}.ffn_up.weight"] = w(self.ffn, self.hidden)
            self.weights[f"{p}.ffn_down.weight"] = w(self.hidden, self.ffn)
            if self.arch == "qwen2":
                for name, rows in (("attn_q", self.heads * hd), ("attn_k", self.kv_heads * hd),
                                   ("attn_v", self.kv_heads * hd)):
                    self.weights[f"{p}.{name}.bias"] = (0.1 * rng.standard_normal(rows)
                                                        ).astype(np.float32)

    def write(self, path: Path, *, skip_keys: tuple[str, ...] = (),
              arch_name: str | None = None) -> Path:
        """Write the GGUF file; quantized tensors are replaced in ``weights`` by what the
        file holds (dequantized), so that ``forward`` computes with the same values."""
        if not self.weights:
            self.build()
        arch = arch_name or self.arch
        writer = gguf.GGUFWriter(str(path), arch)
        keys = {
            "block_count": lambda: writer.add_block_count(self.layers),
            "context_length": lambda: writer.add_context_length(512),
            "embedding_length": lambda: writer.add_embedding_length(self.hidden),
            "feed_forward_length": lambda: writer.add_feed_forward_length(self.ffn),
            "head_count": lambda: writer.add_head_count(self.heads),
            "head_count_kv": lambda: writer.add_head_count_kv(self.kv_heads),
            "rope_freq_base": lambda: writer.add_rope_freq_base(self.rope_base),
            "rms_eps": lambda: writer.add_layer_norm_rms_eps(self.eps),
        }
        for name, add in keys.items():
            if name not in skip_keys:
                add()
        tokens, merges, types = self.tokens()
        tokenizer = {
            "tokenizer.ggml.model": lambda: writer.add_tokenizer_model("gpt2"),
            "tokenizer.ggml.pre": lambda: writer.add_tokenizer_pre("default"),
            "tokenizer.ggml.tokens": lambda: writer.add_token_list(tokens),
            "tokenizer.ggml.merges": lambda: writer.add_token_merges(merges),
            "tokenizer.ggml.token_type": lambda: writer.add_token_types(types),
            "tokenizer.ggml.eos_token_id": lambda: writer.add_eos_token_id(2),
            "tokenizer.ggml.bos_token_id": lambda: writer.add_bos_token_id(1),
            "tokenizer.chat_template": lambda: writer.add_chat_template(CHATML),
        }
        for name, add in tokenizer.items():
            if name not in skip_keys:
                add()
        rng = np.random.default_rng(self.seed + 1)
        for name, value in self.weights.items():
            stored = value
            if self.arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
                heads = self.heads if "attn_q" in name else self.kv_heads
                stored = _permute(value, heads)
            kind = next((t for suffix, t in self.types.items() if name.endswith(suffix)),
                        None)
            if kind is None or value.ndim == 1:
                writer.add_tensor(name, stored)
                continue
            raw = _quantize(stored, kind, rng)
            writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=kind)
            back = gguf.quants.dequantize(raw, kind).reshape(stored.shape).astype(np.float32)
            if self.arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
                heads = self.heads if "attn_q" in name else self.kv_heads
                back = _unpermute(back, heads)
            self.weights[name] = back
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path

    def forward(self, ids: list[int]) -> FloatArray:
        """Logits [S, V] for one sequence, in float64 numpy."""
        wt = {k: v.astype(np.float64) for k, v in self.weights.items()}
        hd, group = self.head_dim, self.heads // self.kv_heads
        x = wt["token_embd.weight"][ids]
        n = len(ids)
        inv = 1.0 / (self.rope_base ** (np.arange(0, hd, 2) / hd))
        ang = np.arange(n)[:, None] * inv[None]
        cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))

        def rope(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            half = np.concatenate([-t[..., hd // 2:], t[..., : hd // 2]], -1)
            return t * cos + half * sin

        def norm(t: npt.NDArray[np.float64], g: npt.NDArray[np.float64]
                 ) -> npt.NDArray[np.float64]:
            return t / np.sqrt((t * t).mean(-1, keepdims=True) + self.eps) * g

        causal = np.triu(np.full((n, n), -np.inf), 1)
        for i in range(self.layers):
            p = f"blk.{i}"
            h = norm(x, wt[f"{p}.attn_norm.weight"])

            def proj(name: str, heads: int, h: npt.NDArray[np.float64] = h,
                     p: str = p) -> npt.NDArray[np.float64]:
                y = h @ wt[f"{p}.{name}.weight"].T
                if f"{p}.{name}.bias" in wt:
                    y = y + wt[f"{p}.{name}.bias"]
                return y.reshape(n, heads, hd).transpose(1, 0, 2)

            q = rope(proj("attn_q", self.heads))
            k = np.repeat(rope(proj("attn_k", self.kv_heads)), group, axis=0)
            v = np.repeat(proj("attn_v", self.kv_heads), group, axis=0)
            s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + causal
            a = np.exp(s - s.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            o = (a @ v).transpose(1, 0, 2).reshape(n, -1)
            x = x + o @ wt[f"{p}.attn_output.weight"].T
            h = norm(x, wt[f"{p}.ffn_norm.weight"])
            gate = h @ wt[f"{p}.ffn_gate.weight"].T
            up = h @ wt[f"{p}.ffn_up.weight"].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ wt[f"{p}.ffn_down.weight"].T
        head = wt.get("output.weight", wt["token_embd.weight"])
        return (norm(x, wt["output_norm.weight"]) @ head.T).astype(np.float32)


def _permute(w: FloatArray, heads: int) -> FloatArray:
    """What llama.cpp's converter does to llama query/key rows."""
    return np.ascontiguousarray(
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2)
        .reshape(w.shape))


def _unpermute(w: FloatArray, heads: int) -> FloatArray:
    return np.ascontiguousarray(
        w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2)
        .reshape(w.shape))


def _quantize(values: FloatArray, kind: Q, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Quantized bytes; for the K-quants, which gguf cannot write, random blocks with
    sane scales (any bits are valid levels)."""
    if kind not in (Q.Q4_K, Q.Q6_K):
        return np.asarray(gguf.quants.quantize(values, kind))
    block, size = gguf.GGML_QUANT_SIZES[kind]
    rows, cols = values.shape
    raw = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    scale = np.full((rows, cols // block), 0.002, np.float16).view(np.uint8)
    scale = scale.reshape(rows, cols // block, 2)
    if kind == Q.Q4_K:  # d, dmin, then scales and levels
        raw[:, :, 0:2] = scale
        raw[:, :, 2:4] = scale
    else:  # levels, scales, then d last
        raw[:, :, size - 2 : size] = scale
    return raw.reshape(rows, -1)
