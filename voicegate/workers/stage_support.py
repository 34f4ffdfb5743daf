"""What the model-backed stages share: option checking, engine loading and the
SESSION_OPEN parameters.

Options come from ``[workers.<stage>.options]``; every error names the full key, as the
rest of the configuration does. Session parameters come from the SESSION_OPEN payload the
gateway writes (docs/pipeline.md); an error names the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicegate.core.codec import AudioFormat, Encoding
from voicegate.core.config import ConfigError
from voicegate.models.bundle import load_bundle
from voicegate.models.runtime import ExecutionConfig
from voicegate.workers.stage import StageContext


class StageOptions:
    """Typed access to one stage's options; unknown keys are errors."""

    def __init__(self, context: StageContext, known: tuple[str, ...]) -> None:
        self.prefix = f"workers.{context.name}.options"
        self.options = context.options
        for key in self.options:
            if key not in known:
                raise ConfigError(
                    f"{self.prefix}.{key}",
                    self.options[key],
                    f"unknown option; options are {known}",
                )

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self.prefix}.{key}", value, "must be a number")
        if value < minimum:
            raise ConfigError(f"{self.prefix}.{key}", value, f"must be >= {minimum:g}")
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.prefix}.{key}", value, "must be an integer")
        if value < minimum:
            raise ConfigError(f"{self.prefix}.{key}", value, f"must be >= {minimum}")
        return value

    def string(self, key: str, default: str | None) -> str | None:
        value = self.options.get(key, default)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{self.prefix}.{key}", value, "must be a string")
        return value


def execution_config(context: StageContext) -> ExecutionConfig:
    """How this worker runs its models: the node's provider, one thread per pinned CPU."""
    node = context.config.node
    return ExecutionConfig(
        provider=node.provider, device_id=node.device_id, intra_op_threads=max(1, len(context.cpus))
    )


def bundle_table(context: StageContext, stage: str) -> tuple[Mapping[str, Any], Path]:
    """The bundle's ``[stage]`` table and the directory its paths are relative to."""
    root = context.config.node.bundle
    if root is None:
        raise ConfigError(
            "node.bundle", None, f"the {stage} stage needs a model bundle directory"
        )
    bundle = load_bundle(root, require=(stage,))
    return bundle.table(stage), bundle.root


@dataclass(frozen=True)
class SessionParams:
    """The SESSION_OPEN payload: ``{"input": {"encoding", "sample_rate"}, "output":
    {"encoding", "sample_rate"}, "instructions": str | null}``."""

    input: AudioFormat
    output: AudioFormat
    instructions: str | None

    @classmethod
    def parse(cls, payload: memoryview | bytes) -> SessionParams:
        try:
            doc = json.loads(bytes(payload).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"SESSION_OPEN payload is not UTF-8 JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("SESSION_OPEN payload: must be a JSON object")
        instructions = doc.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise ValueError("SESSION_OPEN payload: instructions must be a string or null")
        return cls(
            parse_format(doc.get("input"), "SESSION_OPEN payload: input"),
            parse_format(doc.get("output"), "SESSION_OPEN payload: output"),
            instructions or None,
        )


    @classmethod
    def parse_or_default(cls, payload: memoryview | bytes) -> tuple[SessionParams, str | None]:
        """The parameters, or PCM16 16 kHz both ways and the reason when the payload is
        bad: a stage must not die of one session's input (the gateway checks it first;
        VAD reports the problem as that session's ERROR)."""
        try:
            return cls.parse(payload), None
        except ValueError as exc:
            fallback = AudioFormat(Encoding.PCM16, 16000)
            return cls(fallback, fallback, None), str(exc)


def parse_format(doc: object, where: str) -> AudioFormat:
    """An ``{"encoding", "sample_rate"}`` object as an AudioFormat."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: must be an object with encoding and sample_rate")
    try:
        encoding = Encoding(str(doc.get("encoding")))
    except ValueError:
        raise ValueError(
            f"{where}.encoding: {doc.get('encoding')!r} is not one of "
            f"{', '.join(e.value for e in Encoding)}"
        ) from None
    rate = doc.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ValueError(f"{where}.sample_rate: {rate!r} is not an integer")
    try:
        return AudioFormat(encoding, rate)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def parse_output_format(payload: memoryview | bytes) -> AudioFormat:
    """The OUTPUT_FORMAT payload."""
    try:
        doc = json.loads(bytes(payload).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"OUTPUT_FORMAT payload is not UTF-8 JSON: {exc}") from None
    return parse_format(doc, "OUTPUT_FORMAT payload")
