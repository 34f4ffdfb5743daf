"""What the model-backed stages share: option checking, engine loading and the
SESSION_OPEN parameters.

Options come from ``[workers.<stage>.options]``; every error names the full key, as the
rest of the configuration does. Session parameters come from the SESSION_OPEN payload the
gateway writes (docs/pipeline.md); an error names the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from voicegate.core.config import ConfigError, option_number
from voicegate.core.kinds import Kind
from voicegate.core.payloads import TurnTiming
from voicegate.models.bundle import load_bundle
from voicegate.models.runtime import ExecutionConfig
from voicegate.workers.stages.stage import Output, Record, StageContext


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
        return option_number(self.options, self.prefix, key, default, minimum=minimum)

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


def emit_timing(out: Output, session: int, turn: int, origin_ns: int, timing: TurnTiming) -> None:
    """Send the turn's TURN_TIMING on (LLM starts it, TTS completes it for the gateway)."""
    out.emit(
        Record(
            kind=Kind.TURN_TIMING,
            session=session,
            turn=turn,
            origin_ns=origin_ns,
            payload=timing.pack(),
        )
    )
