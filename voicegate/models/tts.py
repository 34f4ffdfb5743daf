"""TTS engine: Piper (VITS) ONNX voices, clause by clause, batched across sessions.

Reply text streams in per session and is cut into clauses (``voicegate.core.text``) so
the first audio comes from the first clause. Each ``step`` takes the next clause of up
to ``max_batch`` sessions, writes its numbers, amounts, times and abbreviations out as
words (``voicegate.core.speech_text``), turns them into phoneme ids (espeak-ng phonemes through
piper-phonemize for espeak voices, the character map for ``phoneme_type: text``), runs
one model call with ``input_lengths``, trims each item's padding and resamples it to
its session's rate with a per-session soxr stream.

Bundle table ``[tts]``::

    model = "tts/voice.onnx"
    config = "tts/voice.onnx.json"     # the voice's Piper config
    speaker = 0                         # id or name in speaker_id_map (multi-speaker)
    max_words = 12                      # clause word limit (first clause: first_max_words)
    first_max_words = 6
    sentence_silence_ms = 100           # pause after a clause that ends a sentence
    tail_trim_level = 1e-4              # padding of a batch item trimmed below this level
    # noise_scale / length_scale / noise_w override the voice's inference settings
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import piper_phonemize

from voicegate.core.audio import StreamResampler
from voicegate.core.speech_text import speech_text
from voicegate.core.text import Clause, ClauseChunker
from voicegate.models import tts_graph
from voicegate.models.bundle import TableReader
from voicegate.models.errors import BundleError
from voicegate.models.json_fields import json_field, read_json
from voicegate.models.onnx_builder import save_model
from voicegate.models.runtime import BoundRunner, ExecutionConfig, create_session
from voicegate.models.sessions import refuse_open, session_of
from voicegate.models.spec import StageReport, TensorSpec, describe_io, verify_io

STAGE: Final[str] = "tts"
PAD: Final[str] = "_"
BOS: Final[str] = "^"
EOS: Final[str] = "$"
PHONEME_TYPES: Final[tuple[str, ...]] = ("espeak", "text")

MODEL_INPUTS: Final[tuple[TensorSpec, ...]] = (
    TensorSpec("input", "int64", (None, None)),
    TensorSpec("input_lengths", "int64", (None,)),
    TensorSpec("scales", "float32", (3,)),
    TensorSpec("sid", "int64", (None,), optional=True),
)
MODEL_OUTPUTS: Final[tuple[TensorSpec, ...]] = (TensorSpec("output", "float32"),)

FloatAudio = npt.NDArray[np.float32]


@dataclass(frozen=True)
class VoiceConfig:
    """The fields of a Piper ``.onnx.json`` that synthesis uses."""

    sample_rate: int
    phoneme_type: str
    espeak_voice: str
    noise_scale: float
    length_scale: float
    noise_w: float
    phoneme_id_map: Mapping[str, Sequence[int]]
    phoneme_map: Mapping[str, Sequence[str]]
    num_speakers: int
    speaker_id_map: Mapping[str, int]

    @classmethod
    def load(cls, path: Path) -> VoiceConfig:
        data = read_json(path)
        phoneme_type = data.get("phoneme_type", "espeak")
        if phoneme_type not in PHONEME_TYPES:
            raise BundleError(path, "unsupported phoneme_type", expected=" or ".join(PHONEME_TYPES),
                              found=repr(phoneme_type))
        id_map = json_field(data, path, "phoneme_id_map", dict)
        for symbol in (PAD, BOS, EOS):
            ids = id_map.get(symbol)
            if not isinstance(ids, list) or not ids:
                raise BundleError(path, f"phoneme_id_map lacks {symbol!r}",
                                  expected="a list of ids", found=repr(ids))
        for symbol, ids in id_map.items():
            if not isinstance(ids, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids
            ):
                raise BundleError(path, f"phoneme_id_map[{symbol!r}] is not a list of ids",
                                  expected="list of ints >= 0", found=repr(ids))
        phoneme_map = data.get("phoneme_map") or {}
        if not isinstance(phoneme_map, dict):
            raise BundleError(path, "phoneme_map is not an object", expected="object",
                              found=repr(phoneme_map))
        speakers = data.get("speaker_id_map") or {}
        num_speakers = json_field(data, path, "num_speakers", int)
        sample_rate = json_field(data, path, "audio.sample_rate", int)
        if sample_rate <= 0:
            raise BundleError(path, "audio.sample_rate must be positive", expected="> 0",
                              found=sample_rate)
        return cls(
            sample_rate=sample_rate,
            phoneme_type=phoneme_type,
            espeak_voice=(json_field(data, path, "espeak.voice", str)
                          if phoneme_type == "espeak" else ""),
            noise_scale=json_field(data, path, "inference.noise_scale", float),
            length_scale=json_field(data, path, "inference.length_scale", float),
            noise_w=json_field(data, path, "inference.noise_w", float),
            phoneme_id_map=id_map,
            phoneme_map=phoneme_map,
            num_speakers=num_speakers,
            speaker_id_map=speakers,
        )


@dataclass(frozen=True)
class TtsParams:
    speaker: int | str = 0
    max_words: int = 12
    first_max_words: int = 6
    sentence_silence_ms: int = 100
    tail_trim_level: float = 1e-4
    noise_scale: float | None = None
    length_scale: float | None = None
    noise_w: float | None = None


class PiperVoice:
    """A loaded Piper voice: text -> phoneme ids -> batched audio at the voice's rate."""

    def __init__(
        self,
        session: ort.InferenceSession,
        config: VoiceConfig,
        *,
        model_path: Path,
        config_path: Path,
        execution: ExecutionConfig,
        params: TtsParams,
    ) -> None:
        verify_io(session, model_path, MODEL_INPUTS, MODEL_OUTPUTS)
        rank = len(session.get_outputs()[0].shape)
        if rank not in (3, 4):
            raise BundleError(model_path, "wrong rank of output", tensor="output",
                              expected="[batch, 1, time] or [batch, 1, 1, time]",
                              found=session.get_outputs()[0].shape)
        self.has_sid = any(i.name == "sid" for i in session.get_inputs())
        if config.num_speakers > 1 and not self.has_sid:
            raise BundleError(model_path, "missing input", tensor="sid",
                              expected=f"int64[batch] for {config.num_speakers} speakers",
                              found="no sid input")
        self.model_path = model_path
        self.config_path = config_path
        self.config = config
        self.params = params
        self.runner = BoundRunner(session, execution)
        self.scales = np.asarray([
            config.noise_scale if params.noise_scale is None else params.noise_scale,
            config.length_scale if params.length_scale is None else params.length_scale,
            config.noise_w if params.noise_w is None else params.noise_w,
        ], dtype=np.float32)
        self.missing_phonemes: Counter[str] = Counter()

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def voice_names(self) -> tuple[str, ...]:
        """The names a session may pick its voice by (``voice_names``)."""
        return speaker_names(self.config, self.config_path)

    def speaker_id(self, speaker: int | str) -> int:
        if isinstance(speaker, str):
            if not self.config.speaker_id_map and speaker == self.voice_names[0]:
                return 0
            if speaker not in self.config.speaker_id_map:
                raise KeyError(f"voice {self.config_path} has no speaker {speaker!r}")
            return int(self.config.speaker_id_map[speaker])
        if not 0 <= speaker < max(self.config.num_speakers, 1):
            raise KeyError(f"speaker id {speaker} is outside the voice's "
                           f"{self.config.num_speakers} speakers")
        return speaker

    def phonemes(self, text: str) -> list[str]:
        """Phonemes of a piece of text, sentences run together."""
        if self.config.phoneme_type == "espeak":
            sentences = piper_phonemize.phonemize_espeak(text, self.config.espeak_voice)
        else:
            sentences = piper_phonemize.phonemize_codepoints(text)
        phonemes: list[str] = []
        for sentence in sentences:
            if phonemes and sentence:
                phonemes.append(" ")
            phonemes.extend(sentence)
        return phonemes

    def phoneme_ids(self, phonemes: Sequence[str]) -> list[int]:
        """Piper's id convention: BOS, then each phoneme followed by PAD, then EOS.
        Phonemes the voice does not know are skipped and counted."""
        id_map = self.config.phoneme_id_map
        pad = list(id_map[PAD])
        ids = [*id_map[BOS], *pad]
        for phoneme in phonemes:
            for mapped in self.config.phoneme_map.get(phoneme, [phoneme]):
                if mapped not in id_map:
                    self.missing_phonemes[mapped] += 1
                    continue
                ids.extend(id_map[mapped])
                ids.extend(pad)
        ids.extend(id_map[EOS])
        return ids

    def text_ids(self, text: str) -> list[int]:
        return self.phoneme_ids(self.phonemes(text))

    def synthesize(
        self, batch: Sequence[Sequence[int]], speakers: Sequence[int] | None = None
    ) -> list[FloatAudio]:
        """One model call for several id sequences; each result is trimmed of the
        padding its shorter length left at the end, at the voice's sample rate."""
        if not batch:
            return []
        lengths = np.asarray([len(ids) for ids in batch], dtype=np.int64)
        if lengths.min() == 0:
            raise ValueError("an empty phoneme id sequence cannot be synthesized")
        pad_id = self.config.phoneme_id_map[PAD][0]
        ids = np.full((len(batch), int(lengths.max())), pad_id, dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
        feeds: dict[str, np.ndarray] = {"input": ids, "input_lengths": lengths,
                                        "scales": self.scales}
        if self.has_sid:
            sid = [0] * len(batch) if speakers is None else list(speakers)
            feeds["sid"] = np.asarray(sid, dtype=np.int64)
        audio = self.runner.run(feeds)[0]
        flat = audio.reshape(audio.shape[0], -1)
        return [self._trim(row) for row in flat]

    def _trim(self, row: npt.NDArray[np.float32]) -> FloatAudio:
        loud = np.flatnonzero(np.abs(row) > self.params.tail_trim_level)
        end = int(loud[-1]) + 1 if loud.size else 0
        return np.ascontiguousarray(row[:end], dtype=np.float32)


@dataclass(frozen=True)
class SpeechChunk:
    """Audio for one clause of a session's reply, at the session's sample rate."""

    session: int
    audio: FloatAudio
    sample_rate: int
    clause: int  # index of the clause in the reply; -1 for a closing flush
    last: bool  # no more audio for this reply


@dataclass
class _Item:
    """A queued piece of a reply: a clause, or (clause None) the close of a reply whose
    last clause has already been spoken."""

    order: int  # when it became ready, across all sessions
    reply: int
    clause: Clause | None
    last: bool = False


@dataclass
class _Session:
    sample_rate: int
    speaker: int
    chunker: ClauseChunker
    resampler: StreamResampler
    queue: deque[_Item] = field(default_factory=deque)
    reply: int = 0  # the reply that text is pushed into
    spoken: int = 0  # clauses of the reply now playing already synthesized


class TtsEngine:
    """Streaming synthesis for many sessions, one batched model call per ``step``.

    A session's replies queue one after another: text pushed after ``end_reply`` begins
    the next reply, whose clauses follow the previous reply's."""

    def __init__(self, voice: PiperVoice, params: TtsParams) -> None:
        self.voice = voice
        self.params = params
        self._default_speaker = voice.speaker_id(params.speaker)
        self._sessions: dict[int, _Session] = {}
        self._order = 0

    @classmethod
    def from_table(
        cls, table: Mapping[str, Any], base: Path, config: ExecutionConfig | None = None
    ) -> TtsEngine:
        params = read_params(table, base)
        return cls(load_voice(table, base, config or ExecutionConfig(), params), params)

    @property
    def sample_rate(self) -> int:
        return self.voice.sample_rate

    def open_session(self, sid: int, sample_rate: int,
                     speaker: int | str | None = None) -> None:
        refuse_open(self._sessions, sid, "TTS")
        self._sessions[sid] = _Session(
            sample_rate=sample_rate,
            speaker=self._default_speaker if speaker is None else self.voice.speaker_id(speaker),
            chunker=ClauseChunker(self.params.max_words, self.params.first_max_words),
            resampler=StreamResampler(self.voice.sample_rate, sample_rate),
        )

    def close_session(self, sid: int) -> None:
        self._sessions.pop(sid, None)

    def _get(self, sid: int) -> _Session:
        return session_of(self._sessions, sid, "TTS")

    def _enqueue(self, session: _Session, clause: Clause | None, *, last: bool = False) -> None:
        self._order += 1
        session.queue.append(_Item(self._order, session.reply, clause, last))

    def push_text(self, sid: int, text: str) -> int:
        """More reply text; complete clauses become ready for the next step. Returns
        how many did."""
        session = self._get(sid)
        clauses = session.chunker.push(text)
        for clause in clauses:
            self._enqueue(session, clause)
        return len(clauses)

    def unclaused_chars(self, sid: int) -> int:
        """Characters of the pushed text that no clause has taken yet."""
        return len(self._get(sid).chunker.pending_text)

    def set_speaker(self, sid: int, speaker: int | str | None) -> None:
        """The session's voice from its next clause (None: the bundle's)."""
        session = self._get(sid)
        session.speaker = self._default_speaker if speaker is None else self.voice.speaker_id(
            speaker
        )

    def end_reply(self, sid: int) -> int:
        """The reply is complete: what is buffered becomes its last clause. Returns how
        many clauses that made."""
        session = self._get(sid)
        clauses = session.chunker.flush()
        for clause in clauses:
            self._enqueue(session, clause)
        tail = session.queue[-1] if session.queue else None
        if tail is not None and tail.reply == session.reply and tail.clause is not None:
            tail.last = True
        else:
            self._enqueue(session, None, last=True)
        session.reply += 1
        return len(clauses)

    def cancel(self, sid: int) -> None:
        """Barge-in: drop queued text and the audio held in the resampler."""
        session = self._get(sid)
        session.queue.clear()
        session.chunker.reset()
        session.resampler.reset()
        session.spoken = 0
        session.reply += 1

    def pending(self) -> bool:
        return any(s.queue for s in self._sessions.values())

    def step(self, max_batch: int = 8) -> list[SpeechChunk]:
        """Synthesize the next clause of up to ``max_batch`` sessions, oldest first."""
        ready = sorted(
            (session.queue[0].order, sid)
            for sid, session in self._sessions.items() if session.queue
        )[:max_batch]
        jobs: list[tuple[int, _Item, list[int]]] = []
        chunks: list[SpeechChunk] = []
        for _, sid in ready:
            session = self._sessions[sid]
            item = session.queue.popleft()
            if item.clause is None:
                tail = session.resampler.process(np.zeros(0, dtype=np.float32), last=True)
                chunks.append(SpeechChunk(sid, tail, session.sample_rate, -1, True))
                session.spoken = 0
                continue
            # Written out for speech per clause: the first audio still waits only for
            # the first clause.
            jobs.append((sid, item, self.voice.text_ids(speech_text(item.clause.text))))
        audios = self.voice.synthesize(
            [ids for _, _, ids in jobs], [self._sessions[sid].speaker for sid, _, _ in jobs]
        )
        silence = self.params.sentence_silence_ms * self.voice.sample_rate // 1000
        for (sid, item, _), voiced in zip(jobs, audios, strict=True):
            session = self._sessions[sid]
            assert item.clause is not None
            pause = silence if item.clause.ends_sentence else 0
            audio = np.concatenate([voiced, np.zeros(pause, dtype=np.float32)])
            out = session.resampler.process(audio, last=item.last)
            chunks.append(SpeechChunk(sid, out, session.sample_rate, session.spoken, item.last))
            session.spoken = 0 if item.last else session.spoken + 1
        return chunks


# ------------------------------------------------------------------------- bundle table


def read_params(table: Mapping[str, Any], base: Path) -> TtsParams:
    reader = TableReader(table, base, STAGE)
    defaults = TtsParams()
    speaker: int | str = defaults.speaker
    if "speaker" in table:
        raw = table["speaker"]
        if not isinstance(raw, int | str) or isinstance(raw, bool):
            raise reader.invalid("speaker", "an integer or a string", raw)
        speaker = raw
    overrides = {key: reader.number(key, None)
                 for key in ("noise_scale", "length_scale", "noise_w")}
    return TtsParams(
        speaker=speaker,
        max_words=reader.integer("max_words", defaults.max_words, minimum=1),
        first_max_words=reader.integer("first_max_words", defaults.first_max_words, minimum=1),
        sentence_silence_ms=reader.integer("sentence_silence_ms", defaults.sentence_silence_ms,
                                           minimum=0),
        tail_trim_level=reader.number("tail_trim_level", defaults.tail_trim_level, minimum=0),
        **overrides,
    )


def load_voice(table: Mapping[str, Any], base: Path, config: ExecutionConfig,
               params: TtsParams | None = None) -> PiperVoice:
    reader = TableReader(table, base, STAGE)
    model_path = reader.path("model")
    config_path = reader.path("config")
    voice_config = VoiceConfig.load(config_path)
    return PiperVoice(
        create_session(model_path, config), voice_config,
        model_path=model_path, config_path=config_path, execution=config,
        params=params or read_params(table, base),
    )


def speaker_names(config: VoiceConfig, config_path: Path) -> tuple[str, ...]:
    """A voice's speaker names in id order; a single-speaker voice has one name, its
    file's (``en_US-joe-medium`` for ``en_US-joe-medium.onnx.json``)."""
    if config.speaker_id_map:
        return tuple(sorted(config.speaker_id_map, key=lambda name: config.speaker_id_map[name]))
    name = config_path.name
    for suffix in (".json", ".onnx"):
        name = name.removesuffix(suffix)
    return (name,)


def voice_names(table: Mapping[str, Any], base: Path) -> tuple[str, ...]:
    """The voice names of a bundle's ``[tts]`` table, read from the voice's config
    alone (no model loaded): what a gateway checks a session's ``voice`` against."""
    config_path = TableReader(table, base, STAGE).path("config")
    return speaker_names(VoiceConfig.load(config_path), config_path)


def check(
    table: Mapping[str, Any], base: Path, config: ExecutionConfig | None = None
) -> list[StageReport]:
    """Validate the voice's files and tensors and time one clause."""
    voice = load_voice(table, base, config or ExecutionConfig())
    ids = voice.text_ids("Hello, this is a test.")
    started = time.perf_counter()
    audio = voice.synthesize([ids])[0]
    call_ms = (time.perf_counter() - started) * 1000
    inputs, outputs = describe_io(voice.runner.session)
    cfg = voice.config
    return [StageReport(STAGE, voice.model_path, inputs, outputs, {
        "config": str(voice.config_path), "sample_rate": cfg.sample_rate,
        "phoneme_type": cfg.phoneme_type, "espeak_voice": cfg.espeak_voice,
        "scales": [float(s) for s in voice.scales], "num_speakers": cfg.num_speakers,
        "symbols": len(cfg.phoneme_id_map), "test_clause_ids": len(ids),
        "test_clause_ms": round(1000 * audio.size / cfg.sample_rate, 1),
    }, call_ms)]


# ------------------------------------------------------------------------- generation

NUM_SYMBOLS: Final[int] = 256
SAMPLE_RATE: Final[int] = 22050


def text_phoneme_id_map() -> dict[str, list[int]]:
    """A character map for ``phoneme_type: text`` voices (casefolded letters)."""
    symbols = [PAD, BOS, EOS, " ", "!", "'", ",", "-", ".", ":", ";", "?"]
    symbols += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    symbols += [str(d) for d in range(10)]
    return {symbol: [i] for i, symbol in enumerate(symbols)}


def voice_config(*, phoneme_type: str, num_speakers: int, size: str, scripted: bool) -> (
    dict[str, Any]
):
    """A voice config in Piper's .onnx.json schema."""
    if phoneme_type == "espeak":
        id_map = {k: list(v) for k, v in piper_phonemize.get_espeak_map().items()}
    else:
        id_map = text_phoneme_id_map()
    return {
        "dataset": "voicegate-scripted" if scripted else "voicegate-random",
        "audio": {"sample_rate": SAMPLE_RATE, "quality": "x_low" if size == "tiny" else "medium"},
        "espeak": {"voice": "en-us"},
        "language": {"code": "en_US", "family": "en", "region": "US",
                     "name_native": "English", "name_english": "English",
                     "country_english": "United States"},
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_type": phoneme_type,
        "phoneme_map": {},
        "phoneme_id_map": id_map,
        "num_symbols": NUM_SYMBOLS,
        "num_speakers": num_speakers,
        "speaker_id_map": ({f"speaker_{i}": i for i in range(num_speakers)}
                           if num_speakers > 1 else {}),
        "piper_version": "1.0.0",
    }


def synth(
    out_dir: Path,
    *,
    seed: int,
    scripted: bool | None = None,
    size: str = "tiny",
    phoneme_type: str = "espeak",
    num_speakers: int = 1,
    output_rank: int = 3,
) -> dict[str, Any]:
    """Write a Piper voice under ``out_dir/tts``: random weights, or with ``scripted``
    a voice whose audio spells its input ids (see ``tts_graph``)."""
    if phoneme_type not in PHONEME_TYPES:
        raise ValueError(f"phoneme_type must be one of {PHONEME_TYPES}, found {phoneme_type!r}")
    stage = out_dir / STAGE
    stage.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    dims = tts_graph.dims_for(size)
    build = tts_graph.build_scripted_voice if scripted else tts_graph.build_voice
    graph = build(dims, rng, num_symbols=NUM_SYMBOLS, num_speakers=num_speakers,
                  output_rank=output_rank)
    save_model(graph, stage / "voice.onnx", producer="voicegate.models.tts")
    cfg = voice_config(phoneme_type=phoneme_type, num_speakers=num_speakers, size=size,
                       scripted=bool(scripted))
    (stage / "voice.onnx.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    defaults = TtsParams()
    table: dict[str, Any] = {
        "model": f"{STAGE}/voice.onnx",
        "config": f"{STAGE}/voice.onnx.json",
        "max_words": defaults.max_words,
        "first_max_words": defaults.first_max_words,
        "sentence_silence_ms": defaults.sentence_silence_ms,
        "tail_trim_level": defaults.tail_trim_level,
    }
    if scripted:
        table["scripted_samples_per_id"] = dims.hop
        table["scripted_denominator"] = tts_graph.scripted_denominator(NUM_SYMBOLS, num_speakers)
    return table
