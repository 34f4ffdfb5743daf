"""The configuration of one Realtime session: defaults, ``session.update``, the effective
configuration that ``session.created``/``session.updated`` report, and its mapping onto
voicegate's pipeline.

A session is either ``realtime`` (a spoken or written answer to each turn) or
``transcription`` (streaming STT only). ``parse_session`` reads the ``session`` object
of a ``session.update`` into a ``SessionPatch`` (only the fields the client sent);
``apply_patch`` merges it into the current ``SessionConfig``; ``SessionConfig.to_json``
is what the server reports; ``pipeline_options`` is what the pipeline is told.

Turn detection: ``server_vad`` maps its threshold, prefix padding and silence onto the
VAD stage's; ``semantic_vad`` is the node's own tuned end of turn (its defaults, whatever
the eagerness); null is manual: the client commits the input buffer and asks for the
response. The defaults of ``server_vad`` are the node's (``TurnDefaults``), so a client
that changes nothing gets the same turn taking as ``/v1/stream``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from voicegate.core.codec import AudioFormat, Encoding
from voicegate.server.protocols.realtime_fields import (
    UNSET,
    ErrorCode,
    Fields,
    RealtimeError,
    Unset,
    shown,
)

# The highest integer ``max_output_tokens``; "inf" is the bundle's own limit.
MAX_OUTPUT_TOKENS: Final[int] = 4096
MAX_INSTRUCTIONS_CHARS: Final[int] = 8000
# OpenAI's voice names, accepted so that existing clients keep working: each is mapped
# onto one of the bundle's voices (docs/realtime.md).
OPENAI_VOICES: Final[tuple[str, ...]] = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
_EAGERNESS: Final[tuple[str, ...]] = ("low", "medium", "high", "auto")
_FORMAT_TYPES: Final[tuple[str, ...]] = ("audio/pcm", "audio/pcmu", "audio/pcma")
_INCLUDE: Final[tuple[str, ...]] = ("item.input_audio_transcription.logprobs",)


class SessionType(enum.StrEnum):
    REALTIME = "realtime"
    TRANSCRIPTION = "transcription"


class Modality(enum.StrEnum):
    AUDIO = "audio"
    TEXT = "text"


class VadType(enum.StrEnum):
    SERVER = "server_vad"
    SEMANTIC = "semantic_vad"


PCM_24K: Final[AudioFormat] = AudioFormat(Encoding.PCM16, 24000)
PCMU_8K: Final[AudioFormat] = AudioFormat(Encoding.MULAW, 8000)
PCMA_8K: Final[AudioFormat] = AudioFormat(Encoding.ALAW, 8000)
_BY_TYPE: Final[Mapping[str, AudioFormat]] = {
    "audio/pcm": PCM_24K,
    "audio/pcmu": PCMU_8K,
    "audio/pcma": PCMA_8K,
}


def format_json(fmt: AudioFormat) -> dict[str, object]:
    """The Realtime format object of one of the three formats the protocol knows."""
    if fmt == PCM_24K:
        return {"type": "audio/pcm", "rate": 24000}
    if fmt == PCMU_8K:
        return {"type": "audio/pcmu"}
    if fmt == PCMA_8K:
        return {"type": "audio/pcma"}
    raise ValueError(f"{fmt} is not a Realtime audio format")


@dataclass(frozen=True)
class TurnDefaults:
    """The node's own turn taking (its VAD stage's settings)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 200
    silence_duration_ms: int = 300


@dataclass(frozen=True)
class TurnDetection:
    type: VadType
    threshold: float
    prefix_padding_ms: int
    silence_duration_ms: int
    create_response: bool = True
    interrupt_response: bool = True
    eagerness: str = "auto"

    def to_json(self) -> dict[str, object]:
        common: dict[str, object] = {
            "type": self.type.value,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }
        if self.type is VadType.SEMANTIC:
            return {**common, "eagerness": self.eagerness}
        return {
            **common,
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "idle_timeout_ms": None,
        }


@dataclass(frozen=True)
class Transcription:
    """Input transcription: on when set. ``model`` is echoed; the node's STT does the work."""

    model: str = "whisper-1"
    language: str | None = None
    prompt: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"model": self.model, "language": self.language, "prompt": self.prompt}


@dataclass(frozen=True)
class VoiceCatalog:
    """The bundle's voices (the first is the default) and OpenAI's names for them."""

    voices: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.voices:
            raise ValueError("a voice catalog needs at least one voice")

    @property
    def default(self) -> str:
        return self.voices[0]

    def resolve(self, name: str) -> str | None:
        """The bundle voice that speaks for ``name``, None when there is none."""
        if name in self.voices:
            return name
        if name in OPENAI_VOICES:
            # Spread OpenAI's names over the bundle's voices in a fixed order, so that
            # two names a client tells apart stay apart where the bundle can.
            return self.voices[OPENAI_VOICES.index(name) % len(self.voices)]
        return None

    def names(self) -> tuple[str, ...]:
        return self.voices + tuple(v for v in OPENAI_VOICES if v not in self.voices)


@dataclass(frozen=True)
class SessionConfig:
    """The effective configuration of a session."""

    type: SessionType
    model: str
    input_format: AudioFormat = PCM_24K
    output_format: AudioFormat = PCM_24K
    turn_detection: TurnDetection | None = None
    transcription: Transcription | None = None
    instructions: str | None = None  # None: the bundle's default prompt
    modality: Modality = Modality.AUDIO
    max_output_tokens: int | None = None  # None: "inf"
    voice: str = ""
    include: tuple[str, ...] = ()

    @property
    def responds(self) -> bool:
        return self.type is SessionType.REALTIME

    def to_json(self, session_id: str) -> dict[str, object]:
        """The ``session`` object of ``session.created`` and ``session.updated``."""
        audio_input: dict[str, object] = {
            "format": format_json(self.input_format),
            "transcription": None if self.transcription is None else self.transcription.to_json(),
            "noise_reduction": None,
            "turn_detection": None
            if self.turn_detection is None
            else self.turn_detection.to_json(),
        }
        include = list(self.include) or None
        if self.type is SessionType.TRANSCRIPTION:
            return {
                "type": "transcription",
                "object": "realtime.transcription_session",
                "id": session_id,
                "audio": {"input": audio_input},
                "include": include,
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": self.model,
            "output_modalities": [self.modality.value],
            "instructions": self.instructions,
            "max_output_tokens": "inf"
            if self.max_output_tokens is None
            else self.max_output_tokens,
            "audio": {
                "input": audio_input,
                "output": {
                    "format": format_json(self.output_format),
                    "voice": self.voice,
                    "speed": 1.0,
                },
            },
            "tools": [],
            "tool_choice": "auto",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": include,
        }


def default_config(
    session_type: SessionType, model: str, turns: TurnDefaults, catalog: VoiceCatalog
) -> SessionConfig:
    """A new session: 24 kHz PCM both ways, server VAD with the node's settings, answers
    spoken in the bundle's default voice, input transcription off (as OpenAI's)."""
    return SessionConfig(
        type=session_type,
        model=model,
        turn_detection=TurnDetection(
            VadType.SERVER, turns.threshold, turns.prefix_padding_ms, turns.silence_duration_ms
        ),
        voice=catalog.default,
    )


# -- session.update ------------------------------------------------------------------


@dataclass(frozen=True)
class TurnDetectionPatch:
    type: VadType
    threshold: float | Unset = UNSET
    prefix_padding_ms: int | Unset = UNSET
    silence_duration_ms: int | Unset = UNSET
    create_response: bool | Unset = UNSET
    interrupt_response: bool | Unset = UNSET
    eagerness: str | Unset = UNSET


@dataclass(frozen=True)
class SessionPatch:
    """The fields of a ``session.update`` that the client sent (UNSET: keep)."""

    type: SessionType
    model: str | Unset = UNSET
    instructions: str | Unset = UNSET  # "" clears
    modality: Modality | Unset = UNSET
    max_output_tokens: int | Unset | None = UNSET  # None: "inf"
    input_format: AudioFormat | Unset = UNSET
    output_format: AudioFormat | Unset = UNSET
    voice: str | Unset = UNSET
    turn_detection: TurnDetectionPatch | Unset | None = UNSET
    transcription: Transcription | Unset | None = UNSET
    include: tuple[str, ...] | Unset = UNSET


def parse_session(fields: Fields) -> SessionPatch:
    """The ``session`` object of a ``session.update`` (``fields.path`` is ``session``)."""
    session_type = SessionType(fields.required_choice("type", tuple(t.value for t in SessionType)))
    values: dict[str, object] = {"type": session_type}
    values["include"] = _include(fields)
    audio = fields.obj("audio")
    if session_type is SessionType.TRANSCRIPTION:
        if isinstance(audio, Fields):
            audio_input = audio.obj("input")
            if isinstance(audio_input, Fields):
                values.update(_audio_input(audio_input))
            audio.done()
        fields.done()
        return SessionPatch(**values)  # type: ignore[arg-type]
    values["model"] = fields.string("model")
    values["instructions"] = instructions(fields)
    values["modality"] = modalities(fields)
    values["max_output_tokens"] = max_output_tokens(fields, "max_output_tokens")
    if isinstance(audio, Fields):
        audio_input = audio.obj("input")
        if isinstance(audio_input, Fields):
            values.update(_audio_input(audio_input))
        audio_output = audio.obj("output")
        if isinstance(audio_output, Fields):
            values.update(_audio_output(audio_output))
        audio.done()
    refuse_tools(fields)
    fields.refuse("prompt", "stored prompts live on OpenAI's platform")
    # Accepted and without effect (docs/realtime.md): tracing and truncation are
    # OpenAI's dashboard and context policies, reasoning needs a reasoning model.
    fields.ignore("tracing", "truncation", "reasoning", "parallel_tool_calls")
    fields.done()
    return SessionPatch(**values)  # type: ignore[arg-type]


def _include(fields: Fields) -> tuple[str, ...] | Unset:
    values = fields.array("include")
    if isinstance(values, Unset):
        return UNSET
    if any(value not in _INCLUDE for value in values):
        raise fields.error(
            ErrorCode.INVALID_VALUE,
            "include",
            f"'{fields.param('include')}' may only hold {', '.join(_INCLUDE)}",
        )
    if values:
        raise fields.error(
            ErrorCode.UNSUPPORTED,
            "include",
            "transcription logprobs are not supported: the node's STT does not report them",
        )
    return ()


def instructions(fields: Fields, key: str = "instructions") -> str | Unset:
    value = fields.string(key)
    if isinstance(value, str) and len(value) > MAX_INSTRUCTIONS_CHARS:
        raise fields.error(
            ErrorCode.INVALID_VALUE,
            key,
            f"'{fields.param(key)}' is {len(value)} characters long, over the limit of "
            f"{MAX_INSTRUCTIONS_CHARS}",
        )
    return value


def modalities(fields: Fields, key: str = "output_modalities") -> Modality | Unset:
    values = fields.array(key)
    if isinstance(values, Unset):
        return UNSET
    if len(values) != 1 or values[0] not in ("audio", "text"):
        raise fields.error(
            ErrorCode.INVALID_VALUE,
            key,
            f'\'{fields.param(key)}\' must be ["audio"] or ["text"] (one of the two)',
        )
    return Modality(str(values[0]))


def max_output_tokens(fields: Fields, key: str) -> int | Unset | None:
    value = fields.raw(key)
    if value is None:
        return UNSET
    if value == "inf":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OUTPUT_TOKENS:
        raise fields.error(
            ErrorCode.INVALID_VALUE,
            key,
            f"'{fields.param(key)}' must be \"inf\" or an integer from 1 to {MAX_OUTPUT_TOKENS}",
        )
    return value


def audio_format(fields: Fields, key: str) -> AudioFormat | Unset:
    fmt = fields.obj(key)
    if isinstance(fmt, Unset):
        return UNSET
    kind = fmt.required_choice("type", _FORMAT_TYPES)
    if kind == "audio/pcm":
        fmt.integer("rate", minimum=24000, maximum=24000)
    fmt.done()
    return _BY_TYPE[kind]


def _audio_input(fields: Fields) -> dict[str, object]:
    values: dict[str, object] = {"input_format": audio_format(fields, "format")}
    noise = fields.nullable_obj("noise_reduction")
    if isinstance(noise, Fields):
        # Accepted, reported as null: the node applies no noise reduction.
        noise.choice("type", ("near_field", "far_field"))
        noise.number("strength", minimum=0.0)
        noise.done()
    values["transcription"] = _transcription(fields)
    values["turn_detection"] = _turn_detection(fields)
    fields.done()
    return values


def _transcription(fields: Fields) -> Transcription | Unset | None:
    spec = fields.nullable_obj("transcription")
    if not isinstance(spec, Fields):
        return spec
    model = spec.string("model")
    language = spec.string("language")
    prompt = spec.string("prompt")
    # Hints to OpenAI's transcription models that the node's STT has no use for.
    spec.ignore("languages", "keywords", "delay")
    spec.done()
    return Transcription(
        model=model if isinstance(model, str) else "whisper-1",
        language=language if isinstance(language, str) else None,
        prompt=prompt if isinstance(prompt, str) else None,
    )


def _turn_detection(fields: Fields) -> TurnDetectionPatch | Unset | None:
    spec = fields.nullable_obj("turn_detection")
    if not isinstance(spec, Fields):
        return spec
    vad = VadType(spec.required_choice("type", tuple(t.value for t in VadType)))
    values: dict[str, object] = {
        "create_response": spec.boolean("create_response"),
        "interrupt_response": spec.boolean("interrupt_response"),
    }
    if values["interrupt_response"] is False:
        raise spec.error(
            ErrorCode.UNSUPPORTED,
            "interrupt_response",
            "interrupt_response false is not supported: the node always stops an answer the "
            "caller speaks over",
        )
    if vad is VadType.SERVER:
        values["threshold"] = spec.number("threshold", minimum=0.0, maximum=1.0)
        values["prefix_padding_ms"] = spec.integer("prefix_padding_ms", minimum=0, maximum=10000)
        values["silence_duration_ms"] = spec.integer(
            "silence_duration_ms", minimum=0, maximum=10000
        )
        spec.refuse("idle_timeout_ms", "the node does not prompt a caller who stays silent")
    else:
        values["eagerness"] = spec.choice("eagerness", _EAGERNESS)
    spec.done()
    return TurnDetectionPatch(vad, **values)  # type: ignore[arg-type]


def _audio_output(fields: Fields) -> dict[str, object]:
    values: dict[str, object] = {"output_format": audio_format(fields, "format")}
    values["voice"] = fields.string("voice")
    speed = fields.number("speed", minimum=0.25, maximum=1.5)
    if isinstance(speed, float) and speed != 1.0:
        raise fields.error(
            ErrorCode.UNSUPPORTED,
            "speed",
            f"'{fields.param('speed')}' other than 1.0 is not supported: the voice speaks at "
            "its own rate",
        )
    fields.done()
    return values


def refuse_tools(fields: Fields) -> None:
    """``tools`` and ``tool_choice`` of a session or a response: none may be asked for."""
    tools = fields.array("tools")
    if isinstance(tools, list) and tools:
        raise fields.error(
            ErrorCode.UNSUPPORTED,
            "tools",
            "tools and function calling are not supported: send an empty list or leave it out",
        )
    choice = fields.raw("tool_choice")
    if choice is not None and choice not in ("auto", "none"):
        raise fields.error(
            ErrorCode.UNSUPPORTED,
            "tool_choice",
            'tool_choice other than "auto" or "none" is not supported: there are no tools',
        )


def apply_patch(
    config: SessionConfig,
    patch: SessionPatch,
    *,
    turns: TurnDefaults,
    catalog: VoiceCatalog,
    voice_locked: bool = False,
) -> SessionConfig:
    """``config`` with ``patch`` merged in. A patch of the other session type starts from
    that type's defaults; the caller decides whether a change of type is still allowed.
    ``voice_locked``: an answer was spoken already, so the voice may no longer change."""
    if patch.type is not config.type:
        config = dataclasses.replace(
            default_config(patch.type, config.model, turns, catalog),
            input_format=config.input_format,
            output_format=config.output_format,
            voice=config.voice,
        )
    changes: dict[str, object] = {}
    for name in ("model", "modality", "input_format", "output_format", "transcription"):
        value = getattr(patch, name)
        if not isinstance(value, Unset):
            changes[name] = value
    if not isinstance(patch.instructions, Unset):
        changes["instructions"] = patch.instructions or None
    if not isinstance(patch.max_output_tokens, Unset):
        changes["max_output_tokens"] = patch.max_output_tokens
    if not isinstance(patch.include, Unset):
        changes["include"] = patch.include
    if not isinstance(patch.voice, Unset) and patch.voice != config.voice:
        changes["voice"] = _voice(patch.voice, catalog, voice_locked)
    if not isinstance(patch.turn_detection, Unset):
        changes["turn_detection"] = _merge_turns(config.turn_detection, patch.turn_detection, turns)
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


def _voice(name: str, catalog: VoiceCatalog, locked: bool) -> str:
    param = "session.audio.output.voice"
    if locked:
        raise RealtimeError(
            ErrorCode.VOICE_LOCKED,
            "the voice cannot change once the session has answered with audio",
            param,
        )
    if catalog.resolve(name) is None:
        raise RealtimeError(
            ErrorCode.INVALID_VALUE,
            f"unknown voice {shown(name)!r}: one of {', '.join(catalog.names())}",
            param,
        )
    return name


def _merge_turns(
    current: TurnDetection | None, patch: TurnDetectionPatch | None, turns: TurnDefaults
) -> TurnDetection | None:
    if patch is None:
        return None
    # Fields the patch leaves out keep their value while the type stays; a new type
    # starts from the node's defaults.
    base = (
        current
        if current is not None and current.type is patch.type
        else TurnDetection(
            patch.type, turns.threshold, turns.prefix_padding_ms, turns.silence_duration_ms
        )
    )
    changes = {
        f.name: getattr(patch, f.name)
        for f in dataclasses.fields(patch)
        if f.name != "type" and not isinstance(getattr(patch, f.name), Unset)
    }
    return dataclasses.replace(base, **changes)


# -- the pipeline's side -------------------------------------------------------------


@dataclass(frozen=True)
class PipelineOptions:
    """What the pipeline is told of a session: the SESSION_UPDATE control's payload (the
    session's full effective options, docs/pipeline.md "Session options")."""

    respond: str  # "audio", "text" or "none"
    max_output_tokens: int | None
    voice: str  # one of the bundle's voices
    instructions: str  # "": the bundle's prompt
    turn_detection: str  # "server" or "manual"
    vad_threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    auto_respond: bool = True
    audio_marks: bool = False

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


# The pipeline takes a VAD threshold strictly between 0 and 1.
_THRESHOLD_RANGE: Final[tuple[float, float]] = (0.01, 0.99)


def pipeline_options(
    config: SessionConfig, turns: TurnDefaults, catalog: VoiceCatalog
) -> PipelineOptions:
    """The one mapping of a session's configuration onto voicegate's pipeline."""
    voice = catalog.resolve(config.voice) or catalog.default
    respond = config.modality.value if config.responds else "none"
    common = {
        "respond": respond,
        "max_output_tokens": config.max_output_tokens,
        "voice": voice,
        "instructions": config.instructions or "",
        # Marks map answer audio to its text, which truncation needs.
        "audio_marks": respond == "audio",
    }
    detection = config.turn_detection
    if detection is None:
        return PipelineOptions(turn_detection="manual", auto_respond=False, **common)  # type: ignore[arg-type]
    if detection.type is VadType.SEMANTIC:
        # The node's own end of turn is the best it has; eagerness is not mapped.
        threshold, prefix, silence = (
            turns.threshold,
            turns.prefix_padding_ms,
            turns.silence_duration_ms,
        )
    else:
        threshold, prefix, silence = (
            detection.threshold,
            detection.prefix_padding_ms,
            detection.silence_duration_ms,
        )
    low, high = _THRESHOLD_RANGE
    return PipelineOptions(
        turn_detection="server",
        vad_threshold=min(max(threshold, low), high),
        prefix_padding_ms=prefix,
        silence_duration_ms=silence,
        auto_respond=detection.create_response and config.responds,
        **common,  # type: ignore[arg-type]
    )
