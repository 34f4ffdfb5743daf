"""``voicegate models import whisper SRC OUT``: a CTranslate2 Whisper directory (what
faster-whisper, WhisperX and most Whisper servers use) into the bundle's ``[stt]`` stage.

SRC holds ``model.bin`` (spec ``WhisperSpec``), ``tokenizer.json`` and usually
``config.json`` (suppressed token lists). The weights go through ``stt_graph``'s builders
into the optimum ONNX layout the STT engine runs (encoder, merged KV-cached decoder) as
float32, int8 weights dequantized; the tokenizer is copied; ``config.json`` and
``generation_config.json`` are written in the Hugging Face schema. Every size converts:
the dimensions come from the variables' shapes (80 or 128 mel bins, any width, heads
and depth).

The encoder is built for the utterance-length window by default (``--window 30s``
keeps Whisper's fixed 30 s input).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from voicegate.models.errors import BundleError

if TYPE_CHECKING:
    import onnx
    from tokenizers import Tokenizer

    from voicegate.models.graphs.stt import Weights, WhisperDims
    from voicegate.models.importers.ct2 import Ct2Model

SPEC: Final[str] = "WhisperSpec"
STAGE_DIR: Final[str] = "stt"
WINDOWS: Final[tuple[str, ...]] = ("utterance", "30s")
# Below it greedy decoding's transcript is dropped (measured on ../shared/speech: speech
# averages -0.1 to -0.9, noise and breath -1.2 to -1.7 with tiny.en).
REJECT_LOGPROB: Final[float] = -1.2
_GELU: Final[int] = 3  # CTranslate2's ActivationType::GELU
# Above this the ONNX protobuf limit (2 GiB) is near: weights go to an external file.
_EXTERNAL_BYTES: Final[int] = 1_500_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window", choices=WINDOWS, default="utterance",
                        help="encoder input: the utterance's length (default) or Whisper's "
                             "fixed 30 s window")
    parser.add_argument("--frame-step", type=int, default=None, metavar="FRAMES",
                        help="utterance window: mel frames are rounded up to a multiple of "
                             "this (default 100, 1 s)")


def run(args: argparse.Namespace) -> int:
    from voicegate.models.bundle import merge_stage_table  # noqa: PLC0415

    try:
        table = import_whisper(args.source, args.output, window=args.window,
                               frame_step=args.frame_step)
        path = merge_stage_table(args.output, "stt", table)
    except (BundleError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.filename or args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote [stt] of {path}")
    return 0


def import_whisper(
    src: Path, root: Path, *, window: str = "utterance", frame_step: int | None = None
) -> dict[str, Any]:
    """Write ``root/stt/*`` from the CTranslate2 Whisper directory ``src`` and return
    the ``[stt]`` table (paths relative to ``root``)."""
    from voicegate.models import melspec, stt  # noqa: PLC0415
    from voicegate.models.graphs import stt as stt_graph  # noqa: PLC0415
    from voicegate.models.importers.ct2 import read_model  # noqa: PLC0415

    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, found {window!r}")
    if not src.is_dir():
        raise BundleError(src, "not a directory (expected a CTranslate2 Whisper model "
                          "directory with model.bin and tokenizer.json)")
    tokenizer_file = src / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise BundleError(tokenizer_file, "missing tokenizer (a CTranslate2 Whisper "
                          "directory ships tokenizer.json beside model.bin)")
    tokenizer = stt.load_tokenizer(tokenizer_file)
    model = read_model(src, spec=SPEC)
    dims, weights = _weights(model)
    ct2_config = _ct2_config(src / "config.json")

    out = root / STAGE_DIR
    out.mkdir(parents=True, exist_ok=True)
    if window == "utterance":
        encoder = stt_graph.build_encoder(dims, weights, frames=None,
                                          silence=_silence_tail(dims, weights))
    else:
        encoder = stt_graph.build_encoder(dims, weights, frames=melspec.N_FRAMES)
    _save(encoder, out / "encoder_model.onnx")
    _save(stt_graph.build_decoder(dims, weights), out / "decoder_model_merged.onnx")
    del weights
    if tokenizer_file.resolve() != (out / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer_file, out / "tokenizer.json")
    config, generation = _hf_configs(tokenizer, dims, ct2_config, tokenizer_file)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    defaults = stt.SttParams()
    table: dict[str, Any] = {
        "encoder": f"{STAGE_DIR}/encoder_model.onnx",
        "decoder": f"{STAGE_DIR}/decoder_model_merged.onnx",
        "tokenizer": f"{STAGE_DIR}/tokenizer.json",
        "config": f"{STAGE_DIR}/config.json",
        "generation_config": f"{STAGE_DIR}/generation_config.json",
        "language": defaults.language,
        "task": defaults.task,
        "partial_interval_ms": defaults.partial_interval_ms,
        "max_new_tokens": defaults.max_new_tokens,
        "window": window,
        "mel_padding": "zeros",
        "no_speech_threshold": defaults.no_speech_threshold,
        "logprob_threshold": defaults.logprob_threshold,
        "reject_logprob": REJECT_LOGPROB,
    }
    if window == "utterance":
        table["frame_step"] = frame_step if frame_step is not None else defaults.frame_step
        table["frame_margin"] = defaults.frame_margin
    return table


def _silence_tail(dims: WhisperDims, weights: Weights) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per encoder layer, the keys and values [1500, d] of a 30 s window of padding
    (log-mel zeros): what the cut window's queries attend to in place of the padding
    it leaves out (``stt_graph._Tail``). One run of the full encoder, single-threaded
    so that the file written is the same on every run."""
    import tempfile  # noqa: PLC0415

    import onnxruntime as ort  # noqa: PLC0415

    from voicegate.models import melspec  # noqa: PLC0415
    from voicegate.models.graphs import stt as stt_graph  # noqa: PLC0415

    graph = stt_graph.build_encoder(dims, weights, frames=melspec.N_FRAMES, export_kv=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory(prefix="voicegate-whisper-") as tmp:
        path = Path(tmp) / "encoder_kv.onnx"
        _save(graph, path)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = {"input_features": np.zeros((1, dims.n_mels, melspec.N_FRAMES), np.float32)}
        outputs = dict(zip([o.name for o in session.get_outputs()],
                           session.run(None, feeds), strict=True))
    return [(outputs[f"key.{i}"][0], outputs[f"value.{i}"][0])
            for i in range(dims.encoder_layers)]


# ------------------------------------------------------------------------------ weights

_LAYER = re.compile(r"(encoder|decoder)/layer_(\d+)/")


def _weights(model: Ct2Model) -> tuple[WhisperDims, Weights]:
    """The dimensions and ``stt_graph.Weights`` of a CTranslate2 WhisperSpec model."""
    from voicegate.models.graphs.stt import WhisperDims  # noqa: PLC0415
    from voicegate.models.whisper_tokenizer import (  # noqa: PLC0415
        MAX_SOURCE_POSITIONS,
        MAX_TARGET_POSITIONS,
    )

    for side in ("encoder", "decoder"):
        for flag, wanted in (("pre_norm", 1), ("activation", _GELU), ("scale_embeddings", 0),
                             ("alibi", 0)):
            name = f"{side}/{flag}"
            if model.has(name) and model.scalar(name) != wanted:
                raise BundleError(model.path, "not Whisper's architecture", tensor=name,
                                  expected=wanted, found=model.scalar(name))
    conv1 = model.raw("encoder/conv1/weight")
    if conv1.ndim != 3 or conv1.shape[2] != 3:
        raise BundleError(model.path, "variable of the wrong shape",
                          tensor="encoder/conv1/weight", expected="[d_model, n_mels, 3]",
                          found=list(conv1.shape))
    d, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
    heads = model.scalar("encoder/num_heads")
    if heads <= 0 or d % heads:
        raise BundleError(model.path, f"d_model {d} is not a multiple of the heads",
                          tensor="encoder/num_heads", found=heads)
    if model.has("decoder/num_heads") and model.scalar("decoder/num_heads") != heads:
        raise BundleError(model.path, "decoder heads differ from the encoder's",
                          tensor="decoder/num_heads", expected=heads,
                          found=model.scalar("decoder/num_heads"))
    layers: dict[str, set[int]] = {"encoder": set(), "decoder": set()}
    for name in model.variables:
        match = _LAYER.match(name)
        if match:
            layers[match.group(1)].add(int(match.group(2)))
    for side, found in layers.items():
        if not found or sorted(found) != list(range(len(found))):
            raise BundleError(model.path, f"{side} layers are not numbered 0..N-1",
                              tensor=f"{side}/layer_*", found=sorted(found))
    ffn = int(model.raw("encoder/layer_0/ffn/linear_0/weight").shape[0])
    vocab = int(model.raw("decoder/embeddings/weight").shape[0])
    dims = WhisperDims(n_mels=n_mels, d_model=d, n_heads=heads,
                       encoder_layers=len(layers["encoder"]),
                       decoder_layers=len(layers["decoder"]), ffn_dim=ffn, vocab_size=vocab)

    w: dict[str, np.ndarray] = {}
    get = model.float32

    def linear(dst: str, src: str, d_in: int, d_out: int) -> None:
        w[f"{dst}_w"] = np.ascontiguousarray(get(f"{src}/weight", (d_out, d_in)).T)
        w[f"{dst}_b"] = get(f"{src}/bias", (d_out,))

    def fused(dsts: tuple[str, ...], src: str) -> None:
        # CTranslate2 fuses projections that read the same input (q, k, v or k, v).
        n = len(dsts)
        weight = get(f"{src}/weight", (n * d, d))
        bias = get(f"{src}/bias", (n * d,))
        for j, dst in enumerate(dsts):
            w[f"{dst}_w"] = np.ascontiguousarray(weight[j * d : (j + 1) * d].T)
            part = bias[j * d : (j + 1) * d]
            if not dst.endswith("_k") or np.any(part):
                w[f"{dst}_b"] = part

    def norm(dst: str, src: str) -> None:
        w[f"{dst}_g"] = get(f"{src}/gamma", (d,))
        w[f"{dst}_b"] = get(f"{src}/beta", (d,))

    for conv, c_in in (("conv1", n_mels), ("conv2", d)):
        w[f"{conv}_w"] = get(f"encoder/{conv}/weight", (d, c_in, 3))
        w[f"{conv}_b"] = get(f"encoder/{conv}/bias", (d,))
    w["enc_positions"] = get("encoder/position_encodings/encodings", (MAX_SOURCE_POSITIONS, d))
    for i in range(dims.encoder_layers):
        src, dst = f"encoder/layer_{i}", f"enc{i}"
        norm(f"{dst}_ln1", f"{src}/self_attention/layer_norm")
        fused((f"{dst}_q", f"{dst}_k", f"{dst}_v"), f"{src}/self_attention/linear_0")
        linear(f"{dst}_o", f"{src}/self_attention/linear_1", d, d)
        norm(f"{dst}_ln2", f"{src}/ffn/layer_norm")
        linear(f"{dst}_fc1", f"{src}/ffn/linear_0", d, ffn)
        linear(f"{dst}_fc2", f"{src}/ffn/linear_1", ffn, d)
    norm("enc_ln_post", "encoder/layer_norm")
    w["embed_tokens"] = get("decoder/embeddings/weight", (vocab, d))
    w["embed_positions"] = get("decoder/position_encodings/encodings",
                               (MAX_TARGET_POSITIONS, d))
    if model.has("decoder/projection/weight"):
        projection = get("decoder/projection/weight", (vocab, d))
        if not np.array_equal(projection, w["embed_tokens"]):
            raise BundleError(model.path, "output projection differs from the token "
                              "embedding (Whisper ties them)", tensor="decoder/projection/weight")
    for i in range(dims.decoder_layers):
        src, dst = f"decoder/layer_{i}", f"dec{i}"
        norm(f"{dst}_ln1", f"{src}/self_attention/layer_norm")
        fused((f"{dst}_self_q", f"{dst}_self_k", f"{dst}_self_v"),
              f"{src}/self_attention/linear_0")
        linear(f"{dst}_self_o", f"{src}/self_attention/linear_1", d, d)
        norm(f"{dst}_ln2", f"{src}/attention/layer_norm")
        linear(f"{dst}_cross_q", f"{src}/attention/linear_0", d, d)
        fused((f"{dst}_cross_k", f"{dst}_cross_v"), f"{src}/attention/linear_1")
        linear(f"{dst}_cross_o", f"{src}/attention/linear_2", d, d)
        norm(f"{dst}_ln3", f"{src}/ffn/layer_norm")
        linear(f"{dst}_fc1", f"{src}/ffn/linear_0", d, ffn)
        linear(f"{dst}_fc2", f"{src}/ffn/linear_1", ffn, d)
    norm("dec_ln", "decoder/layer_norm")
    return dims, w


def _save(graph: onnx.GraphProto, path: Path) -> None:
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    from voicegate.models.graphs.builder import IR_VERSION, OPSET, save_model  # noqa: PLC0415

    producer = "voicegate.models.importers.whisper"
    size = sum(len(t.raw_data) for t in graph.initializer)
    data = path.with_name(path.name + ".data")
    if size < _EXTERNAL_BYTES:
        data.unlink(missing_ok=True)
        save_model(graph, path, producer=producer)
        return
    # Whisper large: past protobuf's 2 GiB, so the weights live beside the graph.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=producer, ir_version=IR_VERSION)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    onnx.checker.check_model(str(path))


# ------------------------------------------------------------------------------ configs


def _ct2_config(path: Path) -> dict[str, Any]:
    from voicegate.models.json_fields import read_json  # noqa: PLC0415

    if not path.is_file():
        return {}
    config = read_json(path)
    for key in ("suppress_ids", "suppress_ids_begin"):
        value = config.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise BundleError(path, f"field {key!r} is not a list of token ids",
                              expected="list of int", found=repr(value)[:80])
    return config


def _hf_configs(
    tokenizer: Tokenizer, dims: WhisperDims, ct2_config: dict[str, Any], tokenizer_file: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    from voicegate.models import whisper_tokenizer as wt  # noqa: PLC0415

    def token(name: str) -> int:
        return wt.token_id(tokenizer, name, tokenizer_file)

    eot, sot = token(wt.EOT), token(wt.SOT)
    if tokenizer.get_vocab_size(with_added_tokens=True) > dims.vocab_size:
        raise BundleError(tokenizer_file, "tokenizer larger than the model's vocabulary",
                          tensor="decoder/embeddings/weight", expected=f"<= {dims.vocab_size}",
                          found=tokenizer.get_vocab_size(with_added_tokens=True))
    # Whisper's multilingual vocabularies have 51865 ids or more, the English-only 51864.
    multilingual = dims.vocab_size >= 51865
    config = wt.hf_model_config(dims, eot=eot, sot=sot)
    generation: dict[str, Any] = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": wt.MAX_TARGET_POSITIONS,
        "is_multilingual": multilingual,
        "no_timestamps_token_id": token(wt.NO_TIMESTAMPS),
        "suppress_tokens": list(ct2_config.get("suppress_ids", [])),
        "begin_suppress_tokens": list(ct2_config.get("suppress_ids_begin", [])),
    }
    for name in ("<|nospeech|>", "<|nocaptions|>"):
        found = tokenizer.token_to_id(name)
        if found is not None:
            generation["no_speech_token_id"] = int(found)
            break
    if multilingual:
        generation["lang_to_id"] = {f"<|{c}|>": token(f"<|{c}|>") for c in wt.LANGUAGES
                                    if tokenizer.token_to_id(f"<|{c}|>") is not None}
        generation["task_to_id"] = {"transcribe": token(wt.TRANSCRIBE),
                                    "translate": token(wt.TRANSLATE)}
    return config, generation
