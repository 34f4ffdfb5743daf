"""``voicegate models import gguf FILE OUT``: a Llama-family GGUF file (llama.cpp, Ollama,
LM Studio) into the LLM stage of a bundle.

Written under ``OUT/llm/``: ``model.onnx`` (the decoder with KV cache, ``llama_graph``),
``tokenizer.json`` (byte-level BPE from the file's vocabulary, merges and special
tokens) and ``chat_template.jinja`` (the file's ``tokenizer.chat_template``). The file is
read with ``gguf``, the llama.cpp project's own reader; quantized tensors are dequantized
through it and, with ``--weights int4``, requantized into MatMulNBits blocks of 32.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from voicegate.models.errors import BundleError

ARCHITECTURES: Final[tuple[str, ...]] = ("llama", "qwen2")
TENSOR_TYPES: Final[tuple[str, ...]] = (
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K",
)
FOUR_BIT: Final[frozenset[str]] = frozenset({"Q4_0", "Q4_1", "Q4_K"})
MAX_CONTEXT: Final[int] = 2048  # per-session KV cache bound, whatever the model allows
MODEL_FILE: Final[str] = "model.onnx"
TOKENIZER_FILE: Final[str] = "tokenizer.json"
TEMPLATE_FILE: Final[str] = "chat_template.jinja"

# llama.cpp's pre-tokenizer names (tokenizer.ggml.pre) -> the split before byte-level BPE.
_LLAMA3_SPLIT: Final[str] = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
    r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT: Final[str] = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
PRE_TOKENIZERS: Final[tuple[str, ...]] = ("default", "gpt2", "smollm", "llama-bpe", "qwen2")

FloatArray = npt.NDArray[np.float32]


class GgufFile:
    """Metadata and tensors of one GGUF file; every error names the file and the key."""

    def __init__(self, path: Path) -> None:
        from gguf import GGUFReader  # noqa: PLC0415

        self.path = path
        try:
            with path.open("rb") as f:
                magic = f.read(4)
        except OSError as exc:
            raise BundleError(path, f"cannot read: {exc.strerror or exc}") from None
        if magic != b"GGUF":
            raise BundleError(path, "not a GGUF file", tensor=None,
                              expected="magic b'GGUF'", found=magic)
        try:
            self._reader = GGUFReader(str(path), "r")
        except Exception as exc:
            raise BundleError(path, f"unreadable GGUF (truncated or corrupt): {exc}") from None
        self._tensors = {t.name: t for t in self._reader.tensors}

    def has(self, key: str) -> bool:
        return key in self._reader.fields

    def value(self, key: str, default: Any = ...) -> Any:
        from gguf import GGUFValueType  # noqa: PLC0415

        field = self._reader.fields.get(key)
        if field is None:
            if default is ...:
                raise BundleError(self.path, f"metadata key {key!r} is missing")
            return default
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            if field.types[-1] == GGUFValueType.STRING:
                return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
            return [field.parts[i][0].item() for i in field.data]
        if kind == GGUFValueType.STRING:
            return bytes(field.parts[field.data[0]]).decode("utf-8")
        return field.parts[field.data[0]][0].item()

    def integer(self, key: str, default: Any = ...) -> int:
        value = self.value(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BundleError(self.path, f"metadata key {key!r} must be a positive integer",
                              expected="integer >= 1", found=value)
        return value

    def number(self, key: str, default: Any = ...) -> float:
        value = self.value(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise BundleError(self.path, f"metadata key {key!r} must be a positive number",
                              expected="number > 0", found=value)
        return float(value)

    def has_tensor(self, name: str) -> bool:
        return name in self._tensors

    def tensor_type(self, name: str) -> str:
        tensor = self._tensors.get(name)
        if tensor is None:
            raise BundleError(self.path, "tensor is missing", tensor=name)
        kind: str = tensor.tensor_type.name
        return kind

    def check_types(self) -> None:
        for tensor in self._tensors.values():
            kind = tensor.tensor_type.name
            if kind not in TENSOR_TYPES:
                raise BundleError(self.path, f"tensor type {kind} is not supported",
                                  tensor=tensor.name, expected=list(TENSOR_TYPES), found=kind)

    def tensor(self, name: str) -> FloatArray:
        """A tensor as float32 in numpy order (matrices [out, in])."""
        from gguf.quants import dequantize  # noqa: PLC0415

        tensor = self._tensors.get(name)
        if tensor is None:
            raise BundleError(self.path, "tensor is missing", tensor=name)
        try:
            values = dequantize(tensor.data, tensor.tensor_type)
        except Exception as exc:
            raise BundleError(self.path, f"cannot dequantize: {exc}", tensor=name) from None
        shape = tuple(int(d) for d in reversed(tensor.shape))
        return np.ascontiguousarray(values, dtype=np.float32).reshape(shape)


def _dims(gguf: GgufFile) -> tuple[str, Any]:
    from voicegate.models.graphs.llama import LlamaDims  # noqa: PLC0415

    arch = gguf.value("general.architecture")
    if arch not in ARCHITECTURES:
        raise BundleError(gguf.path, f"architecture {arch!r} is not supported",
                          tensor=None, expected=list(ARCHITECTURES), found=arch)
    hidden = gguf.integer(f"{arch}.embedding_length")
    heads = gguf.integer(f"{arch}.attention.head_count")
    head_dim = gguf.integer(f"{arch}.attention.key_length", hidden // heads)
    rope_dim = gguf.integer(f"{arch}.rope.dimension_count", head_dim)
    if rope_dim != head_dim:
        raise BundleError(gguf.path, "partial rotary positions are not supported",
                          expected=f"{arch}.rope.dimension_count = {head_dim}", found=rope_dim)
    scaling = gguf.value(f"{arch}.rope.scaling.type", "none")
    if scaling != "none":
        raise BundleError(gguf.path, f"rope scaling {scaling!r} is not supported",
                          expected="none", found=f"{arch}.rope.scaling.type = {scaling}")
    tokens = gguf.value("tokenizer.ggml.tokens")
    try:
        dims = LlamaDims(
            vocab=len(tokens),
            hidden=hidden,
            layers=gguf.integer(f"{arch}.block_count"),
            heads=heads,
            kv_heads=gguf.integer(f"{arch}.attention.head_count_kv", heads),
            head_dim=head_dim,
            ffn=gguf.integer(f"{arch}.feed_forward_length"),
            rope_base=gguf.number(f"{arch}.rope.freq_base", 10000.0),
            rms_eps=gguf.number(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5),
            qkv_bias=gguf.has_tensor("blk.0.attn_q.bias"),
            tied_head=not gguf.has_tensor("output.weight"),
        )
    except ValueError as exc:
        raise BundleError(gguf.path, f"{arch}.attention: {exc}") from None
    return arch, dims


def tokenizer_json(gguf: GgufFile) -> dict[str, Any]:
    """A ``tokenizers`` JSON document for the file's byte-level BPE vocabulary."""
    model = gguf.value("tokenizer.ggml.model")
    if model != "gpt2":
        raise BundleError(gguf.path, f"tokenizer {model!r} is not supported",
                          expected="tokenizer.ggml.model = gpt2 (byte-level BPE)", found=model)
    tokens: list[str] = gguf.value("tokenizer.ggml.tokens")
    merges: list[str] = gguf.value("tokenizer.ggml.merges")
    types: list[int] = gguf.value("tokenizer.ggml.token_type", [1] * len(tokens))
    pre = gguf.value("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise BundleError(gguf.path, f"pre-tokenizer {pre!r} is not supported",
                          expected=f"tokenizer.ggml.pre in {list(PRE_TOKENIZERS)}", found=pre)
    if len(types) != len(tokens):
        raise BundleError(gguf.path, "tokenizer.ggml.token_type does not match the tokens",
                          expected=len(tokens), found=len(types))
    byte_level: dict[str, Any] = {"type": "ByteLevel", "add_prefix_space": False,
                                  "trim_offsets": False, "use_regex": True}
    pre_tokenizer: dict[str, Any]
    if pre in ("default", "gpt2"):
        pre_tokenizer = byte_level
    elif pre == "smollm":
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]}
    else:
        split = _LLAMA3_SPLIT if pre == "llama-bpe" else _QWEN2_SPLIT
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated",
             "invert": False},
            {**byte_level, "use_regex": False}]}
    added = [
        {"id": i, "content": tokens[i], "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": types[i] == 3}
        for i in range(len(tokens)) if types[i] in (3, 4)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None,
            "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": False, "byte_fallback": False, "ignore_merges": pre == "llama-bpe",
            "vocab": {token: i for i, token in enumerate(tokens)},
            "merges": [m.split(" ", 1) for m in merges],
        },
    }


def _token(gguf: GgufFile, key: str, tokens: Sequence[str]) -> str | None:
    index = gguf.value(key, None)
    if index is None:
        return None
    if not isinstance(index, int) or not 0 <= index < len(tokens):
        raise BundleError(gguf.path, f"metadata key {key!r} is not a token id",
                          expected=f"0 <= id < {len(tokens)}", found=index)
    return tokens[index]


def import_gguf(file: Path, root: Path, *, weights: str = "int4") -> dict[str, Any]:
    """Write ``root/llm/`` from a GGUF file and return the [llm] table (paths relative
    to ``root``; no ``system_prompt``: the engine's spoken-support default applies).
    Raises BundleError naming the file and the key for a file it cannot use."""
    import json  # noqa: PLC0415

    import onnx  # noqa: PLC0415

    from voicegate.models.bpe_tokenizer import JinjaChat, TemplateError  # noqa: PLC0415
    from voicegate.models.graphs.llama import (  # noqa: PLC0415
        WEIGHT_FORMATS,
        build_llama,
        unpermute_llama,
    )

    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
    gguf = GgufFile(file)
    arch, dims = _dims(gguf)
    gguf.check_types()
    tokens: list[str] = gguf.value("tokenizer.ggml.tokens")
    spec = tokenizer_json(gguf)
    eos = _token(gguf, "tokenizer.ggml.eos_token_id", tokens)
    if eos is None:
        raise BundleError(file, "metadata key 'tokenizer.ggml.eos_token_id' is missing")
    bos = _token(gguf, "tokenizer.ggml.bos_token_id", tokens)
    eot = _token(gguf, "tokenizer.ggml.eot_token_id", tokens)
    template = gguf.value("tokenizer.chat_template")
    try:
        chat = JinjaChat(template, bos_token=bos or "", eos_token=eos)
        rendered = "".join(t for t, _ in chat.segments([]))
    except TemplateError as exc:
        raise BundleError(file, f"tokenizer.chat_template: {exc}") from None
    # The end of an assistant turn: EOS, the file's end-of-turn token, and a special
    # token the template writes after a message (ChatML's <|im_end|>, Llama 3's <|eot_id|>).
    end_tokens = [eos] + [t for t in (eot,) if t and t != eos]
    for candidate in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"):
        known = candidate in template or candidate == "<|endoftext|>"
        if known and candidate in tokens and candidate not in end_tokens:
            end_tokens.append(candidate)
    del rendered

    def tensor(name: str) -> FloatArray:
        values = gguf.tensor(name)
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = dims.heads if "attn_q" in name else dims.kv_heads
            values = unpermute_llama(values, heads)
        return values

    rope_factors = gguf.tensor("rope_freqs.weight") if gguf.has_tensor("rope_freqs.weight") \
        else None
    # The output projection decides every next token: a file that keeps it above 4 bits
    # (SmolLM2: Q8_0) loses top-1 agreement when it is requantized to 4 bits, so it stays
    # float32 (SmolLM2-135M against llama.cpp: 88.5% top-1 agreement with a 4-bit head,
    # 97.8% with this one, as the float32 graph).
    head = "output.weight" if gguf.has_tensor("output.weight") else "token_embd.weight"
    float_head = gguf.tensor_type(head) not in FOUR_BIT
    model = build_llama(dims, tensor, weights=weights, rope_factors=rope_factors,
                        float_head=float_head)
    target = root / "llm"
    target.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(target / MODEL_FILE))
    (target / TOKENIZER_FILE).write_text(json.dumps(spec, ensure_ascii=False), "utf-8")
    (target / TEMPLATE_FILE).write_text(template, "utf-8")
    context = gguf.integer(f"{arch}.context_length", MAX_CONTEXT)
    table: dict[str, Any] = {
        "model": f"llm/{MODEL_FILE}",
        "tokenizer": f"llm/{TOKENIZER_FILE}",
        "chat_template": f"llm/{TEMPLATE_FILE}",
        "kind": "gguf",
        "source": file.name,
        "architecture": arch,
        "weights": weights,
        "eos_token": eos,
        "add_bos": bool(gguf.value("tokenizer.ggml.add_bos_token", False)) and bos is not None,
        "end_tokens": end_tokens,
        "max_context": min(context, MAX_CONTEXT),
        "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 128, "stop": []},
    }
    if bos is not None:
        table["bos_token"] = bos
    return table


def import_cached(file: Path, cache: Path, *, weights: str = "int4") -> Path:
    """A bundle directory (only [llm]) imported from ``file`` under ``cache``, reused
    while the file and this importer's code are unchanged (tests and benches import the
    same file many times; it takes tens of seconds on a small machine)."""
    import hashlib  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    import time  # noqa: PLC0415

    from voicegate.models.bundle import merge_stage_table  # noqa: PLC0415
    from voicegate.models.graphs import llama as llama_graph  # noqa: PLC0415

    stat = file.stat()
    digest = hashlib.sha256(f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for source in (__file__, llama_graph.__file__):
        digest.update(Path(source).read_bytes())
    target = cache / f"{file.stem}-{weights}-{digest.hexdigest()[:16]}"
    if (target / "bundle.toml").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
    try:
        merge_stage_table(work, "llm", import_gguf(file, work, weights=weights))
        work.rename(target)
    except OSError:
        if not (target / "bundle.toml").is_file():  # another process's copy won the race
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Imports by another version of the importer pile up (hundreds of MB each for
    # float32); one a day old is no longer in use by a run of another checkout.
    for stale in cache.glob(f"{file.stem}-{weights}-*"):
        if stale != target and time.time() - stale.stat().st_mtime > 86400:
            shutil.rmtree(stale, ignore_errors=True)
    return target


# CLI --------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", choices=("int4", "fp32"), default="int4",
                        help="matrices as 4-bit blocks (MatMulNBits, default) or float32")


def run(args: argparse.Namespace) -> int:
    from voicegate.models.bundle import merge_stage_table  # noqa: PLC0415

    source: Path = args.source
    output: Path = args.output
    try:
        table = import_gguf(source, output, weights=args.weights)
        bundle = merge_stage_table(output, "llm", table)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {output / 'llm'} ({table['architecture']}, {table['weights']}) "
          f"and [llm] in {bundle}")
    return 0
