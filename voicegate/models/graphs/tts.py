"""ONNX graphs with Piper's (VITS) interface.

Inputs ``input`` int64 [B, n] phoneme ids, ``input_lengths`` int64 [B], ``scales``
float32 [3] (noise_scale, length_scale, noise_w), and ``sid`` int64 [B] for
multi-speaker voices; output ``output`` float32 [B, 1, T] (or [B, 1, 1, T], as some
exports have it).

The random voice follows VITS's inference path in small: a text encoder over the ids,
per-phoneme durations (exp of a predicted log-duration, times length_scale, rounded up),
the monotonic path that repeats each phoneme's state for its frames, and a decoder that
upsamples frames to samples. As in VITS, everything past an item's own length is masked,
so in a padded batch each item's audio ends in exact zeros and a batch gives the same
audio as single calls. Noise is deterministic (a fixed pattern scaled by noise_scale and
noise_w) so that tests can compare runs.

The scripted voice renders each input id as ``hop * ceil(length_scale)`` samples of the
value (id + 1 + (num_symbols + 1) * speaker) / 2**k, so the audio can be decoded back to
the ids exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import onnx

from voicegate.models.graphs.builder import GraphBuilder

FLOAT: Final[int] = onnx.TensorProto.FLOAT
INT64: Final[int] = onnx.TensorProto.INT64


@dataclass(frozen=True)
class VoiceDims:
    channels: int = 48
    encoder_layers: int = 2
    upsample_rates: tuple[int, ...] = (16, 16)
    upsample_channels: tuple[int, ...] = (32, 16)
    mean_frames_per_phoneme: float = 4.0

    @property
    def hop(self) -> int:
        return int(np.prod(self.upsample_rates))


SIZES: Final[dict[str, VoiceDims]] = {
    "tiny": VoiceDims(),
    # A Piper "medium" voice's shape: 192 channels, HiFi-GAN upsampling 8*8*2*2.
    "base": VoiceDims(channels=192, encoder_layers=6, upsample_rates=(8, 8, 2, 2),
                      upsample_channels=(256, 128, 64, 32)),
}


def dims_for(size: str) -> VoiceDims:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")
    return SIZES[size]


def _interface(g: GraphBuilder, num_speakers: int) -> None:
    g.input("input", "int64", ["batch_size", "phonemes"])
    g.input("input_lengths", "int64", ["batch_size"])
    g.input("scales", "float32", [3])
    if num_speakers > 1:
        g.input("sid", "int64", ["batch_size"])


def _scale(g: GraphBuilder, index: int) -> str:
    return g.op("Gather", "scales", g.const(np.int64(index)), axis=0)


def _token_mask(g: GraphBuilder) -> str:
    """x_mask [B, 1, n]: 1 where the phoneme index is inside the item's length."""
    n = g.op("Gather", g.op("Shape", "input"), g.ints([1]), axis=0)
    positions = g.op("Range", g.const(np.int64(0)), g.op("Reshape", n, g.ints([])),
                     g.const(np.int64(1)))
    inside = g.op("Less", g.op("Unsqueeze", positions, g.ints([0])),
                  g.op("Unsqueeze", "input_lengths", g.ints([1])))
    return g.op("Unsqueeze", g.op("Cast", inside, to=FLOAT), g.ints([1]))


def _expand_by_durations(
    g: GraphBuilder, states: str, durations: str
) -> tuple[str, str, str]:
    """VITS's monotonic path: frame t takes the state of the phoneme whose span covers
    it. ``states`` [B, C, n], ``durations`` [B, 1, n] whole frames (0 past the length).
    Returns frames [B, C, T], the frame mask [B, 1, T] and the lengths [B]."""
    lengths = g.op("Max", g.op("ReduceSum", durations, g.ints([1, 2]), keepdims=0),
                   g.const(np.float32(1.0)))  # [B]
    frames = g.op("Cast", g.op("ReduceMax", lengths, axes=[0], keepdims=0), to=INT64)
    t = g.op("Cast", g.op("Range", g.const(np.int64(0)), frames, g.const(np.int64(1))),
             to=FLOAT)  # [T]
    t_col = g.op("Unsqueeze", t, g.ints([0, 2]))  # [1, T, 1]
    ends = g.op("CumSum", durations, g.const(np.int64(2)))  # [B, 1, n]
    starts = g.op("Sub", ends, durations)
    path = g.op("And", g.op("GreaterOrEqual", t_col, starts), g.op("Less", t_col, ends))
    path = g.op("Cast", path, to=FLOAT)  # [B, T, n]
    expanded = g.op("MatMul", path, g.op("Transpose", states, perm=[0, 2, 1]))  # [B, T, C]
    frame_mask = g.op("Cast", g.op("Less", g.op("Unsqueeze", t, g.ints([0])),
                                   g.op("Unsqueeze", lengths, g.ints([1]))), to=FLOAT)
    frame_mask = g.op("Unsqueeze", frame_mask, g.ints([1]))  # [B, 1, T]
    return g.op("Transpose", expanded, perm=[0, 2, 1]), frame_mask, lengths


def _upsample_mask(g: GraphBuilder, mask: str, rate: int) -> str:
    """[B, 1, T] -> [B, 1, T * rate]."""
    tiled = g.op("Expand", g.op("Unsqueeze", mask, g.ints([3])), g.ints([1, 1, 1, rate]))
    return g.op("Reshape", tiled, g.ints([0, 1, -1]))


def _speaker(g: GraphBuilder, num_speakers: int, channels: int) -> str | None:
    if num_speakers <= 1:
        return None
    table = g.weight([num_speakers, channels], "speaker_embedding", scale=0.5)
    return g.op("Unsqueeze", g.op("Gather", table, "sid", axis=0), g.ints([2]))  # [B, C, 1]


def _emit(g: GraphBuilder, audio: str, output_rank: int) -> None:
    if output_rank == 4:
        audio = g.op("Unsqueeze", audio, g.ints([1]))
        g.output(audio, "output", "float32", ["batch_size", 1, 1, "time"])
    else:
        g.output(audio, "output", "float32", ["batch_size", 1, "time"])


def build_voice(
    dims: VoiceDims,
    rng: np.random.Generator,
    *,
    num_symbols: int,
    num_speakers: int = 1,
    output_rank: int = 3,
) -> onnx.GraphProto:
    g = GraphBuilder("piper_vits", rng)
    _interface(g, num_speakers)
    c = dims.channels
    x_mask = _token_mask(g)
    emb = g.op("Gather", g.weight([num_symbols, c], "embedding", scale=1.0), "input", axis=0)
    h = g.op("Mul", g.op("Transpose", emb, perm=[0, 2, 1]), x_mask)  # [B, C, n]
    for i in range(dims.encoder_layers):
        y = g.op("Conv", h, g.weight([c, c, 5], f"text_conv{i}_w", scale=1.0 / np.sqrt(5 * c)),
                 g.const(np.zeros(c), f"text_conv{i}_b"), pads=[2, 2], kernel_shape=[5])
        h = g.op("Mul", g.op("Add", h, g.op("Relu", y)), x_mask)
    speaker = _speaker(g, num_speakers, c)
    if speaker is not None:
        h = g.op("Mul", g.op("Add", h, speaker), x_mask)
    # Log-durations around the mean, nudged by noise_w times a fixed pattern.
    logw = g.op("Conv", h, g.weight([1, c, 1], "dur_w", scale=0.3 / np.sqrt(c)),
                g.const(np.asarray([np.log(dims.mean_frames_per_phoneme)]), "dur_b"),
                kernel_shape=[1])
    pattern = g.op("Sin", g.op("Mul", g.op("Cast", "input", to=FLOAT), g.const(np.float32(0.37))))
    logw = g.op("Add", logw, g.op("Mul", g.op("Unsqueeze", pattern, g.ints([1])),
                                  g.op("Mul", _scale(g, 2), g.const(np.float32(0.1)))))
    # Bounded so a random voice speaks at a plausible rate: 1 to 4x the mean frames.
    logw = g.op("Clip", logw, g.const(np.float32(0.0)),
                g.const(np.float32(np.log(4 * dims.mean_frames_per_phoneme))))
    w = g.op("Mul", g.op("Mul", g.op("Exp", logw), x_mask), _scale(g, 1))
    durations = g.op("Ceil", w)
    z, y_mask, _ = _expand_by_durations(g, h, durations)
    # Prior sample: the mean plus noise_scale times a fixed pattern.
    stats = g.op("Conv", z, g.weight([c, c, 1], "proj_w"), g.const(np.zeros(c), "proj_b"),
                 kernel_shape=[1])
    wobble = g.op("Sin", g.op("Mul", z, g.const(np.float32(3.1))))
    z = g.op("Add", stats, g.op("Mul", wobble, g.op("Mul", _scale(g, 0),
                                                    g.const(np.float32(0.2)))))
    if speaker is not None:
        z = g.op("Add", z, speaker)
    z = g.op("Mul", z, y_mask)
    # Decoder: transposed convolutions up to the sample rate, re-masked after each so
    # that padding never leaks into an item's own samples.
    mask, channels_in = y_mask, c
    for i, (rate, channels_out) in enumerate(zip(dims.upsample_rates, dims.upsample_channels,
                                                 strict=True)):
        w_up = g.weight([channels_in, channels_out, 2 * rate], f"up{i}_w",
                        scale=1.0 / np.sqrt(channels_in * 2))
        z = g.op("ConvTranspose", z, w_up, g.const(np.zeros(channels_out), f"up{i}_b"),
                 strides=[rate], pads=[rate // 2, rate - rate // 2], kernel_shape=[2 * rate])
        mask = _upsample_mask(g, mask, rate)
        z = g.op("Mul", g.op("LeakyRelu", z, alpha=0.1), mask)
        channels_in = channels_out
    post = g.op("Conv", z, g.weight([1, channels_in, 7], "post_w",
                                    scale=1.0 / np.sqrt(channels_in * 7)),
                g.const(np.zeros(1), "post_b"), pads=[3, 3], kernel_shape=[7])
    audio = g.op("Mul", g.op("Mul", g.op("Tanh", post), g.const(np.float32(0.5))), mask)
    _emit(g, audio, output_rank)
    return g.graph()


def scripted_denominator(num_symbols: int, num_speakers: int) -> int:
    """The power of two the scripted voice divides its codes by (codes stay below 1)."""
    top = (num_symbols + 1) * max(num_speakers, 1)
    return 1 << int(np.ceil(np.log2(top + 1)))


def build_scripted_voice(
    dims: VoiceDims,
    rng: np.random.Generator,
    *,
    num_symbols: int,
    num_speakers: int = 1,
    output_rank: int = 3,
) -> onnx.GraphProto:
    g = GraphBuilder("scripted_piper", rng)
    _interface(g, num_speakers)
    x_mask = _token_mask(g)
    code = g.op("Add", g.op("Cast", "input", to=FLOAT), g.const(np.float32(1.0)))  # [B, n]
    if num_speakers > 1:
        shift = g.op("Mul", g.op("Cast", "sid", to=FLOAT), g.const(np.float32(num_symbols + 1)))
        code = g.op("Add", code, g.op("Unsqueeze", shift, g.ints([1])))
    states = g.op("Mul", g.op("Unsqueeze", code, g.ints([1])), x_mask)  # [B, 1, n]
    durations = g.op("Ceil", g.op("Mul", x_mask, _scale(g, 1)))
    frames, y_mask, _ = _expand_by_durations(g, states, durations)  # [B, 1, T]
    denominator = scripted_denominator(num_symbols, num_speakers)
    values = g.op("Mul", frames, g.const(np.float32(1.0 / denominator)))
    audio = g.op("Reshape", g.op("Expand", g.op("Unsqueeze", values, g.ints([3])),
                                 g.ints([1, 1, 1, dims.hop])), g.ints([0, 1, -1]))
    audio = g.op("Mul", audio, _upsample_mask(g, y_mask, dims.hop))
    _emit(g, audio, output_rank)
    return g.graph()
