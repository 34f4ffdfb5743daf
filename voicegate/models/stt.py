"""STT engine: Whisper in Hugging Face optimum's ONNX layout, batched across sessions.

``WhisperModel`` is the batched model: log-mel features, one encoder call for all
utterances, then greedy decoding of all of them together through the merged decoder
(forced start tokens, then one token per step with the KV cache selected by
``use_cache_branch``), with the guards Whisper servers use: a transcript whose
no-speech probability is above ``no_speech_threshold`` while its average token
log-probability is below ``logprob_threshold`` is empty (silence, breath, noise), and
so is one whose average log-probability is below ``reject_logprob`` or that holds no
letter or digit.
With ``window = "utterance"`` the encoder sees the utterance's mel frames only (rounded
up to ``frame_step`` so that shapes repeat), not a 30 s pad: an encoder built for it
(``importers.whisper``) slices its position embedding to the frames it gets and attends
to the keys and values of the padding it leaves out, computed once at import.
``SttEngine`` streams: each session feeds the audio of its
current utterance; every ``partial_interval_ms`` of new audio the whole utterance is
decoded again and a partial transcript comes out, whose stable part is the prefix it
shares with the previous hypothesis; at the endpoint a final transcript comes out.

Bundle table ``[stt]``::

    encoder = "stt/encoder_model.onnx"
    decoder = "stt/decoder_model_merged.onnx"
    tokenizer = "stt/tokenizer.json"
    config = "stt/config.json"
    generation_config = "stt/generation_config.json"   # optional
    language = "en"              # English-only (".en") models ignore it
    task = "transcribe"
    partial_interval_ms = 500    # 0: finals only
    max_new_tokens = 96
    window = "30s"               # or "utterance" (the encoder must take any frame count)
    frame_step = 100             # utterance window: frames rounded up to this (1 s)
    frame_margin = 100           # ... after this much padding past the audio (1 s)
    mel_padding = "floor"        # after the audio: the log-mel floor (openai/whisper, HF)
                                 # or "zeros" (faster-whisper; what imported models use)
    no_speech_threshold = 0.6    # the guards of openai/whisper and faster-whisper
    logprob_threshold = -1.0
    reject_logprob = -1.2        # below it a transcript is dropped whatever no-speech
                                 # says (absent: no such guard; importers write -1.2)
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from voicegate.models import melspec, whisper_tokenizer
from voicegate.models.bundle import TableReader
from voicegate.models.errors import BundleError
from voicegate.models.graphs import stt as stt_graph
from voicegate.models.graphs.builder import save_model
from voicegate.models.json_fields import json_field, read_json
from voicegate.models.runtime import BoundRunner, ExecutionConfig, create_session
from voicegate.models.sessions import refuse_open, session_of
from voicegate.models.spec import StageReport, TensorSpec, describe_io, verify_io

STAGE: Final[str] = "stt"
SAMPLE_RATE: Final[int] = melspec.SAMPLE_RATE
_PAST = re.compile(r"past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)")

ENCODER_OUTPUTS: Final[tuple[TensorSpec, ...]] = (
    TensorSpec("last_hidden_state", "float32", (None, None, None)),
)
DECODER_INPUTS: Final[tuple[TensorSpec, ...]] = (
    TensorSpec("input_ids", "int64", (None, None)),
    TensorSpec("encoder_hidden_states", "float32", (None, None, None)),
    TensorSpec(r"past_key_values\.\d+\.(decoder|encoder)\.(key|value)", "float32",
               (None, None, None, None), pattern=True),
    TensorSpec("use_cache_branch", "bool", (1,)),
)
DECODER_OUTPUTS: Final[tuple[TensorSpec, ...]] = (
    TensorSpec("logits", "float32", (None, None, None)),
    TensorSpec(r"present\.\d+\.(decoder|encoder)\.(key|value)", "float32",
               (None, None, None, None), pattern=True),
)


WINDOWS: Final[tuple[str, ...]] = ("30s", "utterance")
MEL_PADDINGS: Final[tuple[str, ...]] = ("floor", "zeros")


def encoder_inputs(n_mels: int, frames: int | None = melspec.N_FRAMES) -> (
    tuple[TensorSpec, ...]
):
    return (TensorSpec("input_features", "float32", (None, n_mels, frames)),)


@dataclass(frozen=True)
class SttParams:
    language: str = "en"
    task: str = "transcribe"
    partial_interval_ms: int = 500
    max_new_tokens: int = 96
    window: str = "30s"
    frame_step: int = 100
    frame_margin: int = 100
    mel_padding: str = "floor"
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    reject_logprob: float | None = None  # imported bundles: -1.2


@dataclass(frozen=True)
class Decoded:
    """One utterance's greedy decoding with the figures its guards look at."""

    tokens: list[int]
    avg_logprob: float  # over the text tokens and the end token, as whisper averages
    no_speech_prob: float  # at the start-of-transcript position; nan without the token

    def silent(self, params: SttParams) -> bool:
        """Whisper's rule (likely no speech and an unsure transcript), or a transcript
        so unsure that greedy decoding, which has no temperature fallback to retry
        with, should not pass it on."""
        return ((self.no_speech_prob > params.no_speech_threshold
                 and self.avg_logprob < params.logprob_threshold)
                or (params.reject_logprob is not None
                    and self.avg_logprob < params.reject_logprob))


@dataclass(frozen=True)
class Transcript:
    """One hypothesis for a session's current utterance."""

    session: int
    text: str
    stable_text: str  # the part two successive hypotheses agree on (all of it when final)
    final: bool  # no later hypothesis will cover this audio
    endpoint: bool  # final because the utterance ended (not because 30 s filled up)
    tokens: tuple[int, ...]
    stable_tokens: int
    audio_samples: int  # utterance audio (16 kHz samples) this hypothesis covers


class WhisperModel:
    """Batched Whisper encoder + greedy merged-decoder decoding."""

    def __init__(
        self,
        encoder: ort.InferenceSession,
        decoder: ort.InferenceSession,
        tokenizer: Tokenizer,
        *,
        files: Mapping[str, Path],
        config: Mapping[str, Any],
        generation: Mapping[str, Any],
        params: SttParams,
        execution: ExecutionConfig,
    ) -> None:
        self.files = dict(files)
        self.tokenizer = tokenizer
        self.params = params
        self.n_mels = int(config.get("num_mel_bins", 80))
        utterance = params.window == "utterance"
        verify_io(encoder, self.files["encoder"],
                  encoder_inputs(self.n_mels, None if utterance else melspec.N_FRAMES),
                  ENCODER_OUTPUTS)
        frames = encoder.get_inputs()[0].shape[2]
        if utterance and isinstance(frames, int):
            raise BundleError(self.files["encoder"], "window = \"utterance\" needs an encoder "
                              "that takes any number of mel frames (importers.whisper builds "
                              "one); this one takes a fixed count: use window = \"30s\"",
                              tensor="input_features", expected="[batch, n_mels, frames]",
                              found=list(encoder.get_inputs()[0].shape))
        verify_io(decoder, self.files["decoder"], DECODER_INPUTS, DECODER_OUTPUTS)
        self.encoder = BoundRunner(encoder, execution)
        self.decoder = BoundRunner(decoder, execution)
        self.layers, self.n_heads, self.head_dim = self._cache_layout(decoder, config)
        self.eos = int(generation.get("eos_token_id", config.get("eos_token_id", -1)))
        if self.eos < 0:
            raise BundleError(self.files["config"], "missing eos_token_id")
        self.prompt = self._prompt(generation, config)
        self.max_target = int(config.get("max_target_positions",
                                          whisper_tokenizer.MAX_TARGET_POSITIONS))
        self.vocab_limit = tokenizer.get_vocab_size(with_added_tokens=True)
        self.suppress = np.asarray(generation.get("suppress_tokens") or [], dtype=np.int64)
        self.begin_suppress = np.asarray(generation.get("begin_suppress_tokens") or [],
                                         dtype=np.int64)
        self._present_index = {name: i for i, name in enumerate(self.decoder.output_names)}
        no_speech = generation.get("no_speech_token_id")
        self.no_speech = int(no_speech) if isinstance(no_speech, int) else None

    def _cache_layout(self, decoder: ort.InferenceSession, config: Mapping[str, Any]) -> (
        tuple[int, int, int]
    ):
        layers: set[int] = set()
        shape: list[Any] = []
        for arg in decoder.get_inputs():
            match = _PAST.fullmatch(arg.name)
            if match:
                layers.add(int(match.group(1)))
                shape = list(arg.shape)
        if not layers or sorted(layers) != list(range(len(layers))):
            raise BundleError(self.files["decoder"], "past_key_values inputs are not numbered "
                              "0..N-1", expected="layers 0..N-1", found=sorted(layers))
        for i in sorted(layers):
            for part in ("decoder", "encoder"):
                for kv in ("key", "value"):
                    name = f"past_key_values.{i}.{part}.{kv}"
                    if name not in {a.name for a in decoder.get_inputs()}:
                        raise BundleError(self.files["decoder"], "missing input", tensor=name,
                                          expected="float32[batch, heads, length, head_dim]",
                                          found="nothing")
        heads = shape[1] if isinstance(shape[1], int) else int(
            config.get("decoder_attention_heads", 0))
        head_dim = shape[3] if isinstance(shape[3], int) else (
            int(config.get("d_model", 0)) // max(heads, 1))
        if heads <= 0 or head_dim <= 0:
            raise BundleError(self.files["config"], "cannot tell the decoder's heads and head "
                              "size (config.json decoder_attention_heads, d_model)")
        return len(layers), heads, head_dim

    def _special(self, token: str) -> int:
        return whisper_tokenizer.token_id(self.tokenizer, token, self.files["tokenizer"])

    def _prompt(self, generation: Mapping[str, Any], config: Mapping[str, Any]) -> list[int]:
        start = generation.get("decoder_start_token_id", config.get("decoder_start_token_id"))
        if not isinstance(start, int):
            raise BundleError(self.files["config"], "missing decoder_start_token_id",
                              expected="int", found=repr(start))
        prompt = [start]
        multilingual = bool(generation.get("is_multilingual", "lang_to_id" in generation))
        if multilingual:
            lang = f"<|{self.params.language}|>"
            if lang not in whisper_tokenizer.special_tokens():
                raise BundleError(self.files["tokenizer"], f"unknown language {lang}")
            task = {"transcribe": whisper_tokenizer.TRANSCRIBE,
                    "translate": whisper_tokenizer.TRANSLATE}.get(self.params.task)
            if task is None:
                raise ValueError(f"task must be transcribe or translate, "
                                 f"found {self.params.task!r}")
            prompt += [self._special(lang), self._special(task)]
        prompt.append(int(generation.get("no_timestamps_token_id",
                                         self._special(whisper_tokenizer.NO_TIMESTAMPS))))
        return prompt

    # -------------------------------------------------------------------- model calls

    def frames_for(self, samples: int) -> int:
        """Mel frames the encoder gets for an utterance of ``samples`` (the longest of a
        batch): 3000 for the 30 s window, else the frames that hold audio and
        ``frame_margin`` frames of padding after them, rounded up to ``frame_step``.
        Without the margin Whisper sees no end of speech and repeats itself."""
        if self.params.window != "utterance":
            return melspec.N_FRAMES
        step = self.params.frame_step
        needed = melspec.content_frames(samples) + self.params.frame_margin
        return min(melspec.N_FRAMES, -(-needed // step) * step)

    def features(self, audios: Sequence[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
        """log-mel [B, n_mels, frames], padded after the audio as ``mel_padding`` says
        (``melspec.input_features`` or ``melspec.padded_features``), cut to the window."""
        frames = self.frames_for(max((a.size for a in audios), default=0))
        compute = (melspec.padded_features if self.params.mel_padding == "zeros"
                   else melspec.input_features)
        out = np.empty((len(audios), self.n_mels, frames), dtype=np.float32)
        for i, audio in enumerate(audios):
            out[i] = compute(audio, self.n_mels)[:, :frames]
        return out

    def encode(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        hidden: npt.NDArray[np.float32] = self.encoder.run({"input_features": features})[0]
        return hidden

    def _empty_past(self, batch: int) -> dict[str, npt.NDArray[np.float32]]:
        # The first-step branch ignores the past inputs, but they must be fed: optimum
        # feeds length-1 zeros.
        zeros = np.zeros((batch, self.n_heads, 1, self.head_dim), dtype=np.float32)
        return {f"past_key_values.{i}.{part}.{kv}": zeros
                for i in range(self.layers) for part in ("decoder", "encoder")
                for kv in ("key", "value")}

    def decode_start(
        self, hidden: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], dict[str, npt.NDArray[np.float32]]]:
        """First decoder call on the forced prompt: logits of the last prompt position
        [B, V] and the caches (self-attention and cross-attention)."""
        logits, cache = self._decode_prompt(hidden)
        return logits[:, -1, :], cache

    def _decode_prompt(
        self, hidden: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], dict[str, npt.NDArray[np.float32]]]:
        """The prompt's logits at every position [B, P, V] and the caches."""
        batch = hidden.shape[0]
        feeds: dict[str, np.ndarray] = {
            "input_ids": np.tile(np.asarray(self.prompt, dtype=np.int64), (batch, 1)),
            "encoder_hidden_states": hidden,
            "use_cache_branch": np.zeros(1, dtype=bool),
            **self._empty_past(batch),
        }
        return self._run_decoder(feeds, None, last_only=False)

    def decode_step(
        self,
        tokens: npt.NDArray[np.int64],
        hidden: npt.NDArray[np.float32],
        cache: Mapping[str, npt.NDArray[np.float32]],
    ) -> tuple[npt.NDArray[np.float32], dict[str, npt.NDArray[np.float32]]]:
        """One token per row through the with-past branch. The cross-attention cache
        is the one from the first step: optimum's with-past branch returns empty
        tensors for it."""
        feeds: dict[str, np.ndarray] = {
            "input_ids": tokens.reshape(-1, 1).astype(np.int64),
            "encoder_hidden_states": hidden,
            "use_cache_branch": np.ones(1, dtype=bool),
            **cache,
        }
        return self._run_decoder(feeds, cache)

    def _run_decoder(
        self,
        feeds: Mapping[str, np.ndarray],
        cross: Mapping[str, npt.NDArray[np.float32]] | None,
        *,
        last_only: bool = True,
    ) -> tuple[npt.NDArray[np.float32], dict[str, npt.NDArray[np.float32]]]:
        outputs = self.decoder.run(feeds)
        logits = outputs[self._present_index["logits"]]
        if last_only:
            logits = logits[:, -1, :]
        cache = {}
        for i in range(self.layers):
            for part in ("decoder", "encoder"):
                for kv in ("key", "value"):
                    name = f"past_key_values.{i}.{part}.{kv}"
                    if part == "encoder" and cross is not None:
                        cache[name] = cross[name]
                    else:
                        cache[name] = outputs[self._present_index[f"present.{i}.{part}.{kv}"]]
        return logits, cache

    def _pick(self, logits: npt.NDArray[np.float32], first: bool) -> tuple[
        npt.NDArray[np.int64], npt.NDArray[np.float64]
    ]:
        """Greedy choice per row and its log-probability under the filtered scores."""
        scores = np.array(logits, dtype=np.float32)
        if scores.shape[1] > self.vocab_limit:
            scores[:, self.vocab_limit:] = -np.inf  # ids the tokenizer cannot decode
        if self.suppress.size:
            scores[:, self.suppress] = -np.inf
        if first and self.begin_suppress.size:
            scores[:, self.begin_suppress] = -np.inf
        picked: npt.NDArray[np.int64] = scores.argmax(axis=1).astype(np.int64)
        rows = np.arange(scores.shape[0])
        top = scores[rows, picked].astype(np.float64)
        # log-softmax of the chosen score; the chosen one is the maximum
        logprob = -np.log(np.exp(scores.astype(np.float64) - top[:, None]).sum(axis=1))
        return picked, logprob

    def _no_speech(self, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Probability of the no-speech token at the start-of-transcript position [B]."""
        if self.no_speech is None or self.no_speech >= logits.shape[-1]:
            return np.full(logits.shape[0], np.nan)
        at_sot = logits[:, 0, :].astype(np.float64)
        at_sot = at_sot - at_sot.max(axis=1, keepdims=True)
        probs: npt.NDArray[np.float64] = (np.exp(at_sot[:, self.no_speech])
                                          / np.exp(at_sot).sum(axis=1))
        return probs

    def generate(self, hidden: npt.NDArray[np.float32]) -> list[list[int]]:
        """Greedy token ids of a batch (without the guards)."""
        return [d.tokens for d in self.generate_scored(hidden)]

    def generate_scored(self, hidden: npt.NDArray[np.float32]) -> list[Decoded]:
        """Greedy decoding of a batch. Finished rows leave the batch once at least half
        of it has finished: slicing them away copies every cache (the cross-attention
        ones hold all 1500 encoder positions), so doing it for each row that ends would
        cost more than the steps it saves; until then they run on, their output unused."""
        batch = hidden.shape[0]
        results: list[list[int]] = [[] for _ in range(batch)]
        budget = min(self.params.max_new_tokens, self.max_target - len(self.prompt))
        if batch == 0 or budget <= 0:
            return [Decoded(r, 0.0, float("nan")) for r in results]
        prompt_logits, cache = self._decode_prompt(hidden)
        no_speech = self._no_speech(prompt_logits)
        logits = prompt_logits[:, -1, :]
        sum_logprob = np.zeros(batch)
        rows = np.arange(batch)
        alive = np.ones(batch, dtype=bool)
        for step in range(budget):
            picked, logprob = self._pick(logits, first=step == 0)
            sum_logprob[rows[alive]] += logprob[alive]  # the end token's own included
            alive &= picked != self.eos
            for row, token in zip(rows[alive], picked[alive], strict=True):
                results[row].append(int(token))
            if not alive.any() or step == budget - 1:
                break
            if 2 * int(alive.sum()) <= alive.size:
                rows, picked, hidden = rows[alive], picked[alive], hidden[alive]
                cache = {name: value[alive] for name, value in cache.items()}
                alive = alive[alive]
            logits, cache = self.decode_step(picked, hidden, cache)
        return [Decoded(tokens, float(sum_logprob[i] / (len(tokens) + 1)),
                        float(no_speech[i])) for i, tokens in enumerate(results)]

    def decode(self, audios: Sequence[npt.NDArray[np.float32]]) -> list[Decoded]:
        """Greedy decoding of each 16 kHz utterance with its guard figures."""
        if not audios:
            return []
        return self.generate_scored(self.encode(self.features(audios)))

    def transcribe(self, audios: Sequence[npt.NDArray[np.float32]]) -> list[list[int]]:
        """Token ids (without prompt and end token) for each 16 kHz utterance; none for
        one the guards judge silent, nor for one without a letter or digit (Whisper
        spells silence ".")."""
        return [d.tokens if self.heard(d) else [] for d in self.decode(audios)]

    def heard(self, decoded: Decoded) -> bool:
        if decoded.silent(self.params):
            return False
        return any(ch.isalnum() for ch in self.text(decoded.tokens))

    def text(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True).strip()


@dataclass
class _Utterance:
    chunks: list[npt.NDArray[np.float32]] = field(default_factory=list)
    samples: int = 0
    decoded_at: int = 0  # samples covered by the last partial
    previous: tuple[int, ...] | None = None
    endpoint: bool = False

    def audio(self) -> npt.NDArray[np.float32]:
        if len(self.chunks) != 1:
            joined = (np.concatenate(self.chunks) if self.chunks
                      else np.zeros(0, dtype=np.float32))
            self.chunks = [joined]
        return self.chunks[0]


class SttEngine:
    """Streaming transcription for many sessions, one batched decode per ``step``."""

    def __init__(self, model: WhisperModel, params: SttParams) -> None:
        if params.partial_interval_ms < 0:
            raise ValueError("partial_interval_ms must be >= 0")
        self.model = model
        self.params = params
        self._interval = params.partial_interval_ms * SAMPLE_RATE // 1000
        # Per session: the utterance being decoded, then any that began after its
        # endpoint and before its final transcript.
        self._sessions: dict[int, deque[_Utterance]] = {}

    @classmethod
    def from_table(
        cls, table: Mapping[str, Any], base: Path, config: ExecutionConfig | None = None
    ) -> SttEngine:
        return cls(load_model(table, base, config or ExecutionConfig()), read_params(table, base))

    @property
    def sessions(self) -> list[int]:
        return list(self._sessions)

    def open_session(self, sid: int) -> None:
        refuse_open(self._sessions, sid, "STT")
        self._sessions[sid] = deque([_Utterance()])

    def close_session(self, sid: int) -> None:
        self._sessions.pop(sid, None)

    def _get(self, sid: int) -> deque[_Utterance]:
        return session_of(self._sessions, sid, "STT")

    def _open_utterance(self, sid: int) -> _Utterance:
        """The utterance new audio belongs to: after an endpoint, a new one."""
        queue = self._get(sid)
        if queue[-1].endpoint:
            queue.append(_Utterance())
        return queue[-1]

    def feed(self, sid: int, audio: npt.NDArray[np.float32]) -> None:
        """Append 16 kHz float32 samples to the session's current utterance (or, after
        an endpoint whose final is still to come, to the next one)."""
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono 1-D samples, found shape {audio.shape}")
        utt = self._open_utterance(sid)
        if audio.size:
            utt.chunks.append(np.asarray(audio, dtype=np.float32))
            utt.samples += audio.size

    def end_utterance(self, sid: int) -> None:
        """The endpoint: a step emits this utterance's final transcript."""
        self._open_utterance(sid).endpoint = True

    def cancel_utterance(self, sid: int) -> None:
        """Forget all buffered audio of the session, without transcripts."""
        self._get(sid)
        self._sessions[sid] = deque([_Utterance()])

    def buffered_samples(self, sid: int) -> int:
        return sum(utt.samples for utt in self._get(sid))

    def _due(self) -> list[tuple[int, bool]]:
        finals: list[tuple[int, bool]] = []
        partials: list[tuple[int, int]] = []
        for sid, queue in self._sessions.items():
            utt = queue[0]
            if utt.endpoint or utt.samples >= melspec.N_SAMPLES:
                finals.append((sid, True))
            elif self._interval and utt.samples - utt.decoded_at >= self._interval:
                partials.append((utt.decoded_at - utt.samples, sid))
        # Finals first (someone is waiting on them), then partials most behind first.
        return finals + [(sid, False) for _, sid in sorted(partials)]

    def pending(self) -> bool:
        return bool(self._due())

    def step(self, max_batch: int = 16) -> list[Transcript]:
        """Decode every due utterance (up to ``max_batch``) in one batch."""
        due = self._due()[:max_batch]
        if not due:
            return []
        audios = []
        for sid, _final in due:
            audio = self._sessions[sid][0].audio()
            audios.append(audio[: melspec.N_SAMPLES])
        decode = [i for i, audio in enumerate(audios) if audio.size]
        tokens: list[list[int]] = [[] for _ in due]
        for i, result in zip(decode, self.model.transcribe([audios[i] for i in decode]),
                             strict=True):
            tokens[i] = result
        events = []
        for (sid, final), audio, hyp in zip(due, audios, tokens, strict=True):
            events.append(self._emit(sid, final, audio.size, tuple(hyp)))
        return events

    def _emit(self, sid: int, final: bool, covered: int, hyp: tuple[int, ...]) -> Transcript:
        queue = self._sessions[sid]
        utt = queue[0]
        text = self.model.text(hyp)
        if final:
            queue.popleft()
            rest = utt.audio()[covered:]
            if rest.size:
                # A window that overflowed 30 s continues as a new utterance.
                queue.appendleft(_Utterance([rest], rest.size, endpoint=utt.endpoint))
            if not queue:
                queue.append(_Utterance())
            return Transcript(sid, text, text, True, utt.endpoint and not rest.size, hyp,
                              len(hyp), covered)
        stable = 0
        if utt.previous is not None:
            for a, b in zip(utt.previous, hyp, strict=False):
                if a != b:
                    break
                stable += 1
        utt.previous = hyp
        utt.decoded_at = covered
        return Transcript(sid, text, self.model.text(hyp[:stable]), False, False, hyp, stable,
                          covered)


# ------------------------------------------------------------------------- bundle table


def read_params(table: Mapping[str, Any], base: Path) -> SttParams:
    reader = TableReader(table, base, STAGE)
    defaults = SttParams()
    window = reader.string("window", defaults.window)
    if window not in WINDOWS:
        raise reader.invalid("window", " or ".join(repr(w) for w in WINDOWS), window)
    mel_padding = reader.string("mel_padding", defaults.mel_padding)
    if mel_padding not in MEL_PADDINGS:
        raise reader.invalid("mel_padding", " or ".join(repr(w) for w in MEL_PADDINGS),
                             mel_padding)
    frame_step = reader.integer("frame_step", defaults.frame_step, minimum=2)
    if frame_step % 2 or frame_step > melspec.N_FRAMES:
        raise reader.invalid("frame_step", f"an even number of mel frames up to "
                             f"{melspec.N_FRAMES}", frame_step)
    return SttParams(
        language=reader.string("language", defaults.language),
        task=reader.string("task", defaults.task),
        partial_interval_ms=reader.integer("partial_interval_ms", defaults.partial_interval_ms,
                                           minimum=0),
        max_new_tokens=reader.integer("max_new_tokens", defaults.max_new_tokens, minimum=1),
        window=window,
        frame_step=frame_step,
        frame_margin=reader.integer("frame_margin", defaults.frame_margin, minimum=0),
        mel_padding=mel_padding,
        no_speech_threshold=reader.number("no_speech_threshold", defaults.no_speech_threshold,
                                          minimum=0.0, maximum=1.0),
        logprob_threshold=reader.number("logprob_threshold", defaults.logprob_threshold),
        reject_logprob=reader.number("reject_logprob", defaults.reject_logprob),
    )


def _files(table: Mapping[str, Any], base: Path) -> dict[str, Path]:
    reader = TableReader(table, base, STAGE)
    files: dict[str, Path] = {}
    for key in ("encoder", "decoder", "tokenizer", "config"):
        files[key] = reader.path(key)
    generation = reader.path("generation_config", None)
    if generation is not None:
        files["generation_config"] = generation
    return files


def load_tokenizer(path: Path) -> Tokenizer:
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises plain Exception
        raise BundleError(path, f"cannot load tokenizer: {exc}") from exc
    for token in (whisper_tokenizer.EOT, whisper_tokenizer.SOT, whisper_tokenizer.NO_TIMESTAMPS):
        whisper_tokenizer.token_id(tokenizer, token, path)
    return tokenizer


def load_model(table: Mapping[str, Any], base: Path, config: ExecutionConfig) -> WhisperModel:
    files = _files(table, base)
    hf_config = read_json(files["config"])
    generation = read_json(files["generation_config"]) if "generation_config" in files else {}
    json_field(hf_config, files["config"], "decoder_start_token_id", int)
    return WhisperModel(
        create_session(files["encoder"], config),
        create_session(files["decoder"], config),
        load_tokenizer(files["tokenizer"]),
        files=files,
        config=hf_config,
        generation=generation,
        params=read_params(table, base),
        execution=config,
    )


def check(
    table: Mapping[str, Any], base: Path, config: ExecutionConfig | None = None
) -> list[StageReport]:
    """Validate the STT files and tensors and time one encoder and one decoder call."""
    model = load_model(table, base, config or ExecutionConfig())
    features = model.features([np.zeros(SAMPLE_RATE, dtype=np.float32)])
    started = time.perf_counter()
    hidden = model.encode(features)
    encoder_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    logits, _ = model.decode_start(hidden)
    decoder_ms = (time.perf_counter() - started) * 1000
    if logits.shape[1] < model.vocab_limit:
        raise BundleError(model.files["decoder"], "logits narrower than the tokenizer",
                          tensor="logits", expected=f"width >= {model.vocab_limit}",
                          found=logits.shape[1])
    enc_in, enc_out = describe_io(model.encoder.session)
    dec_in, dec_out = describe_io(model.decoder.session)
    return [
        StageReport(STAGE, model.files["encoder"], enc_in, enc_out,
                    {"n_mels": model.n_mels, "hidden": list(hidden.shape)}, encoder_ms),
        StageReport(STAGE, model.files["decoder"], dec_in, dec_out, {
            "layers": model.layers, "heads": model.n_heads, "head_dim": model.head_dim,
            "vocab": int(logits.shape[1]), "tokenizer_vocab": model.vocab_limit,
            "prompt": model.prompt, "eos": model.eos, "language": model.params.language,
            "task": model.params.task, "partial_interval_ms": model.params.partial_interval_ms,
            "max_new_tokens": model.params.max_new_tokens, "window": model.params.window,
            "no_speech_token": model.no_speech,
        }, decoder_ms),
    ]


# ------------------------------------------------------------------------- generation

SCRIPTED_POSITIONS_PER_TOKEN: Final[int] = 8  # 160 ms of audio per scripted token


def synth(
    out_dir: Path, *, seed: int, scripted: str | None = None, size: str = "tiny"
) -> dict[str, Any]:
    """Write a Whisper bundle stage under ``out_dir/stt``: random weights, or with
    ``scripted`` a model that transcribes any audio as that text (as much of it as the
    audio's length allows, one token per 160 ms)."""
    stage = out_dir / STAGE
    stage.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = whisper_tokenizer.shipped_corpus()
    if scripted is not None:
        lines.append(scripted)
    tokenizer = whisper_tokenizer.build_tokenizer(lines, vocab_size=1024)
    dims = stt_graph.dims_for(size, tokenizer.get_vocab_size(with_added_tokens=True))
    config, generation = whisper_tokenizer.hf_configs(
        tokenizer, dims, scripted=scripted is not None
    )
    if scripted is None:
        weights = stt_graph.random_weights(dims, rng)
        encoder = stt_graph.build_encoder(dims, weights)
        decoder = stt_graph.build_decoder(dims, weights)
    else:
        script = tokenizer.encode(" " + scripted.strip(), add_special_tokens=False).ids
        encoder = stt_graph.build_scripted_encoder(dims, rng)
        decoder = stt_graph.build_scripted_decoder(
            dims, rng, script=script, eos=int(generation["eos_token_id"]),
            prompt_length=len(generation["forced_decoder_ids"]) + 1,
            positions_per_token=SCRIPTED_POSITIONS_PER_TOKEN,
        )
    producer = "voicegate.models.stt"
    save_model(encoder, stage / "encoder_model.onnx", producer=producer)
    save_model(decoder, stage / "decoder_model_merged.onnx", producer=producer)
    tokenizer.save(str(stage / "tokenizer.json"))
    (stage / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (stage / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    defaults = SttParams()
    table: dict[str, Any] = {
        "encoder": f"{STAGE}/encoder_model.onnx",
        "decoder": f"{STAGE}/decoder_model_merged.onnx",
        "tokenizer": f"{STAGE}/tokenizer.json",
        "config": f"{STAGE}/config.json",
        "generation_config": f"{STAGE}/generation_config.json",
        "language": defaults.language,
        "task": defaults.task,
        "partial_interval_ms": defaults.partial_interval_ms,
        # A random model rarely stops by itself: a short budget keeps it cheap.
        "max_new_tokens": defaults.max_new_tokens if scripted is not None else 24,
    }
    if scripted is not None:
        table["scripted_transcript"] = scripted.strip()
        table["scripted_ms_per_token"] = SCRIPTED_POSITIONS_PER_TOKEN * 20
    return table
